"""A stop stops every lane at once: signals as orchestrators send them, and lanes that fail.

Each test runs the real target against the sandbox and reads the sandbox's request log: after a
stop signal no upload, deletion request or event starts (status polls of the job in flight
go on), no retry either (a 429's or a 5xx's backoff ends at the signal), the job in flight is
awaited, and the run ends soon after it. A lane that fails ends the run by itself, with its
summary and no spool file left behind.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox
from target_userpilot.stop import DUPLICATE_SIGNAL_SECONDS

from support.messages import (
    API_KEY,
    TAP_USER_SCHEMA,
    USER_SCHEMA,
    deleted_user,
    event,
    events_schema,
    record,
    schema,
    state,
    user,
)
from support.runner import TargetProcess
from support.waiting import eventually

#: Requests that start new work; after a stop signal only status polls may follow.
NEW_WORK = {"bulk", "delete", "track"}


def _config(sandbox: Sandbox, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "api_url": sandbox.url,
        "api_key": API_KEY,
        "state_db": str(tmp_path / "ledger.db"),
        # Batches go up when full (or at the end of input), whatever the machine's speed.
        "batch_wait_seconds": 60,
        **extra,
    }


def _spool(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A TMPDIR of the run's own, to see every spool file it leaves."""
    spool = tmp_path / "spool"
    spool.mkdir()
    return spool, {"TMPDIR": str(spool)}


def _after(sandbox: Sandbox, seen: int) -> list[dict[str, Any]]:
    """The requests logged after the first ``seen`` ones."""
    return sandbox.request_log()[seen:]


def _new_work(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["endpoint"] in NEW_WORK]


def _summary(stderr: str) -> dict[str, Any]:
    line = next(x for x in stderr.splitlines() if x.startswith("TARGET_USERPILOT_SUMMARY "))
    summary: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return summary


def _completed_at(sandbox_started: float, job: dict[str, Any]) -> float:
    """A job's completion on this process's monotonic clock."""
    completed_at: float = job["completed_at"]
    return sandbox_started + completed_at


@dataclass
class StopTiming:
    code: int
    #: Seconds from the signal to the exit.
    took: float
    #: Requests the sandbox had logged when the signal went.
    seen: int


def _signal_during(run: TargetProcess, sandbox: Sandbox, waiting: Any, what: str) -> StopTiming:
    """Wait for ``waiting`` (the phase the stop is tested in), SIGTERM, and wait for the exit."""
    eventually(waiting, 30, what)
    seen = len(sandbox.request_log())
    run.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = run.drain(timeout=30)
    return StopTiming(code, time.monotonic() - signalled, seen)


def _input_read(run: TargetProcess) -> bool:
    """The end of input was read and the run is finishing (the SDK's drain logs its metric)."""
    return "completed processing" in run.stderr and "METRIC" in run.stderr


def test_sigterm_after_the_end_of_input_erases_nothing_more_and_waits_for_no_job(
    tmp_path: Path,
) -> None:
    """The issue's case: 222 ids were erased after the signal, and the log spoke of a job."""
    spool, env = _spool(tmp_path)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, delete_interval=2.0) as sandbox:
        config = _config(sandbox, tmp_path, hard_delete=True)
        messages = [schema("users", TAP_USER_SCHEMA, ["id"])]
        messages += [record("users", deleted_user(i)) for i in range(8000)]
        messages.append(state({"last": 7999}))
        run = TargetProcess(config, tmp_path, messages=messages, env=env)
        try:
            eventually(lambda: _input_read(run) and sandbox.deletions("users"), 30, "a request")
            seen = len(sandbox.request_log())
            erased_before = len(sandbox.deletions("users"))
            run.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = run.drain(timeout=15)
            took = time.monotonic() - signalled
        finally:
            run.kill()
        after = _after(sandbox, seen)
        erased = len(sandbox.deletions("users"))

    assert code == 10, run.stderr[-3000:]
    assert _new_work(after) == []
    assert erased == erased_before < 8000
    assert took < 5
    assert run.states == []  # no STATE past deletions never sent
    assert "waiting for the last job" not in run.stderr
    assert "Received SIGTERM after the end of input: nothing new is sent" in run.stderr
    assert "TARGET_USERPILOT_SUMMARY" in run.stderr
    assert list(spool.iterdir()) == []


def test_sigterm_with_a_job_in_flight_and_deletions_and_events_queued_starts_nothing(
    tmp_path: Path,
) -> None:
    spool, env = _spool(tmp_path)
    with Sandbox(
        port=0, api_key=API_KEY, rows_per_minute=12_000, delete_interval=2.0, events_per_minute=0
    ) as sandbox:
        sandbox_started = time.monotonic()  # close enough to its clock's origin, and earlier
        config = _config(sandbox, tmp_path, hard_delete=True, batch_size_rows=500)
        run = TargetProcess(config, tmp_path, env=env)
        try:
            # 500 users: one job of about 2.5 s. Events of those users wait for it.
            run.send([schema("users", TAP_USER_SCHEMA, ["id"]), events_schema()])
            run.send([record("users", user(i)) for i in range(500)])
            run.send([state({"users": 499})])
            run.send([record("events", event(i, i)) for i in range(20)])
            run.send([state({"events": 19})])
            # Deletions: the first request goes at once, the next waits for the pace.
            run.send([record("users", deleted_user(10_000 + i)) for i in range(5)])
            run.send([state({"deleted": 5})])
            eventually(lambda: sandbox.deletions("users"), 30, "the first deletion request")
            run.send([record("users", deleted_user(20_000 + i)) for i in range(5)])
            eventually(lambda: sandbox.stats()["status_polls"] >= 1, 30, "the job in flight")
            assert sandbox.events() == []  # they wait for their users' job
            seen = len(sandbox.request_log())
            run.proc.send_signal(signal.SIGTERM)
            code = run.drain(timeout=20)
            exited = time.monotonic()
        finally:
            run.kill()
        after = _after(sandbox, seen)
        (job,) = sandbox.stats()["job_timings"]
        ended = sandbox.stats()

    assert code == 10, run.stderr[-3000:]
    assert _new_work(after) == [], after
    assert ended["events_received"] == 0
    # The job in flight was awaited: it completed, and its STATE went out; none after it, as
    # the events were never sent.
    assert job["completed_at"] is not None
    assert run.states == [{"users": 499}]
    assert exited - _completed_at(sandbox_started, job) < 5
    assert "Waiting for the job in flight" in run.stderr
    assert "TARGET_USERPILOT_SUMMARY" in run.stderr
    assert list(spool.iterdir()) == []


def test_sigterm_during_a_wait_for_another_clients_job_ends_the_wait(tmp_path: Path) -> None:
    """The issue's case: the run waited 41 s for a job not its own, then uploaded anyway."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.hold_foreign_job(60, at_upload=1)
        config = _config(sandbox, tmp_path, batch_size_rows=10)
        run = TargetProcess(config, tmp_path)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"])])
            run.send([record("users", user(i)) for i in range(10)] + [state({"last": 9})])
            stop = _signal_during(
                run, sandbox, lambda: sandbox.stats()["conflicts_foreign"] >= 1, "a 409"
            )
        finally:
            run.kill()
        after = _after(sandbox, stop.seen)
        uploads = sandbox.stats()["uploads"]

    assert stop.code == 10, run.stderr[-3000:]
    assert stop.took < 5, f"the stop took {stop.took:.1f} s"
    assert _new_work(after) == []
    assert uploads == 0
    assert run.states == []
    assert "TARGET_USERPILOT_SUMMARY" in run.stderr


def test_sigterm_at_a_slow_event_pace_sends_no_further_event(tmp_path: Path) -> None:
    """The issue's case: at 2 a minute, exit came 26 s after the signal, one event after it."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        config = _config(sandbox, tmp_path, events_per_minute=2, batch_wait_seconds=0.2)
        messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages += [record("users", user(i)) for i in range(3)]
        messages += [record("events", event(i, i)) for i in range(3)]
        messages.append(state({"events": 2}))
        run = TargetProcess(config, tmp_path, messages=messages)
        try:
            stop = _signal_during(run, sandbox, sandbox.events, "the first event")
        finally:
            run.kill()
        after = _after(sandbox, stop.seen)
        sent = len(sandbox.events())

    assert stop.code == 10, run.stderr[-3000:]
    assert _new_work(after) == []
    assert sent == 1
    assert stop.took < 5, f"the stop took {stop.took:.1f} s"


def test_sigint_then_sigterm_5_ms_apart_count_once_and_the_job_in_flight_is_awaited(
    tmp_path: Path,
) -> None:
    """Ctrl-C under Meltano: the OS sends SIGINT to the group, Meltano forwards SIGTERM."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=12_000) as sandbox:
        config = _config(sandbox, tmp_path, batch_size_rows=500)
        messages = [schema("users", USER_SCHEMA, ["id"])]
        messages += [record("users", user(i)) for i in range(500)]
        messages.append(state({"last": 499}))
        run = TargetProcess(config, tmp_path)
        try:
            run.send(messages)  # the input stays open: the tap is still running
            eventually(lambda: sandbox.stats()["status_polls"] >= 1, 30, "the job in flight")
            run.proc.send_signal(signal.SIGINT)
            time.sleep(0.005)  # what is tested: the forwarded signal 5 ms later
            run.proc.send_signal(signal.SIGTERM)
            code = run.drain(timeout=20)
        finally:
            run.kill()
        (job,) = sandbox.stats()["job_timings"]

    assert code == 10, run.stderr[-3000:]
    assert job["completed_at"] is not None
    assert run.states == [{"last": 499}]  # the job's STATE went out
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1 and "Received SIGINT" in stopped[0]
    assert "counted once" in run.stderr
    assert _summary(run.stderr)["total"]["rows_sent"] == 500


def test_a_second_signal_after_the_window_stops_at_once(tmp_path: Path) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=3000) as sandbox:
        config = _config(sandbox, tmp_path, batch_size_rows=500)
        run = TargetProcess(config, tmp_path)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"])])
            run.send([record("users", user(i)) for i in range(500)])
            eventually(lambda: sandbox.stats()["status_polls"] >= 1, 30, "the job in flight")
            run.proc.send_signal(signal.SIGTERM)
            time.sleep(DUPLICATE_SIGNAL_SECONDS + 0.1)  # what is tested: a second, real stop
            started = time.monotonic()
            run.proc.send_signal(signal.SIGTERM)
            code = run.drain(timeout=15)
            took = time.monotonic() - started
        finally:
            run.kill()

    assert code == 10, run.stderr[-3000:]
    assert took < 5, f"the second signal took {took:.1f} s to stop the run"
    assert run.states == []
    assert "stopping at once" in run.stderr


def test_a_failing_events_lane_ends_a_silent_run_with_its_summary_and_no_file_left(
    tmp_path: Path,
) -> None:
    """The issue's case: the SIGINT wake-up raised inside close(): no summary, spool left."""
    spool, env = _spool(tmp_path)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        sandbox.set_faults(forbidden=True, endpoints={"track"})
        config = _config(sandbox, tmp_path, events_per_minute=6000, batch_wait_seconds=0.2)
        run = TargetProcess(config, tmp_path, env=env)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"]), events_schema()])
            run.send([record("users", user(i)) for i in range(3)])
            run.send([record("events", event(i, i)) for i in range(30)])
            # The tap goes silent, its output still open: the run must end by itself.
            code = run.proc.wait(timeout=30)
        finally:
            run.kill()

    assert code == 3, run.stderr[-3000:]
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert "TARGET_USERPILOT_SUMMARY" in run.stderr
    assert "Traceback" not in run.stderr
    assert list(spool.iterdir()) == []


# A retry is a new request: a stop ends every wait before one, and none goes out after it.


def _answered(sandbox: Sandbox, endpoint: str, status: int, times: int = 1) -> bool:
    calls = [r for r in sandbox.request_log() if r["endpoint"] == endpoint]
    return sum(1 for r in calls if r["status"] == status) >= times


def _assert_nothing_after_the_signal(
    sandbox: Sandbox, run: TargetProcess, stop: StopTiming
) -> None:
    assert stop.code == 10, run.stderr[-3000:]
    assert _after(sandbox, stop.seen) == [], "a request reached the sandbox after the signal"
    assert stop.took < 5, f"the run took {stop.took:.1f} s to end after SIGTERM"
    assert "was not tried again: the run stopped before try" in run.stderr
    assert "TARGET_USERPILOT_SUMMARY" in run.stderr


def test_sigterm_during_a_429_backoff_of_a_deletion_erases_nothing_after_it(tmp_path: Path) -> None:
    """The issue's case: a deletion answered 429, Retry-After 8, was sent 7.1 s after SIGTERM."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.answer_next("delete", 429, retry_after=8)
        run = TargetProcess(_config(sandbox, tmp_path, hard_delete=True), tmp_path)
        try:
            run.send([schema("users", TAP_USER_SCHEMA, ["id"])])
            run.send([record("users", deleted_user(i)) for i in range(3)] + [state({"d": 3})])
            stop = _signal_during(
                run, sandbox, lambda: _answered(sandbox, "delete", 429), "the 429"
            )
        finally:
            run.kill()
        erased = sandbox.deletions("users")

    _assert_nothing_after_the_signal(sandbox, run, stop)
    assert erased == []
    assert run.states == []
    assert _summary(run.stderr)["unsent"]["deletions"] == 3
    assert "Left unsent when the run stopped: 3 deletions" in run.stderr


def test_sigterm_during_a_429_backoff_of_a_track_event_sends_it_no_more(tmp_path: Path) -> None:
    """The issue's case: a track event answered 429 was sent again after SIGTERM."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        sandbox.answer_next("track", 429, retry_after=8)
        config = _config(sandbox, tmp_path, batch_wait_seconds=0.1)
        run = TargetProcess(config, tmp_path)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"]), events_schema()])
            run.send([record("users", user(1)), state({"users": 1})])
            run.send([record("events", event(1, 1)), state({"events": 1})])
            stop = _signal_during(run, sandbox, lambda: _answered(sandbox, "track", 429), "the 429")
        finally:
            run.kill()
        received = sandbox.events()

    _assert_nothing_after_the_signal(sandbox, run, stop)
    assert received == []
    assert run.states == [{"users": 1}]  # the user's job completed; the event's STATE waits
    assert _summary(run.stderr)["unsent"]["events"] == 1


def test_sigterm_during_a_429_backoff_of_an_upload_posts_nothing_again(tmp_path: Path) -> None:
    """The issue's case: a bulk upload answered 429 was re-posted 0.6 s after SIGTERM."""
    spool, env = _spool(tmp_path)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.answer_next("bulk", 429, retry_after=8)
        run = TargetProcess(_config(sandbox, tmp_path, batch_size_rows=10), tmp_path, env=env)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"])])
            run.send([record("users", user(i)) for i in range(10)] + [state({"last": 9})])
            stop = _signal_during(run, sandbox, lambda: _answered(sandbox, "bulk", 429), "a 429")
        finally:
            run.kill()
        uploads = sandbox.stats()["uploads"]

    _assert_nothing_after_the_signal(sandbox, run, stop)
    assert uploads == 0
    assert run.states == []
    assert _summary(run.stderr)["unsent"]["users"] == 10
    assert "10 users rows" in run.stderr
    assert list(spool.iterdir()) == []


def test_sigterm_during_500s_on_the_job_lookup_after_a_lost_upload_answer(tmp_path: Path) -> None:
    """The issue's case: after a lost answer the job lookup kept retrying 38.7 s past SIGTERM."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        # Userpilot takes the upload but answers after the client gave up: an answer lost.
        sandbox.set_faults(slow_rate=1.0, slow_seconds=3.0, endpoints={"bulk"})
        sandbox.answer_next("list", 500, times=100)
        config = _config(sandbox, tmp_path, batch_size_rows=10, request_timeout_seconds=0.5)
        run = TargetProcess(config, tmp_path)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"])])
            run.send([record("users", user(i)) for i in range(10)] + [state({"last": 9})])
            stop = _signal_during(
                run, sandbox, lambda: _answered(sandbox, "list", 500, times=2), "two lookups"
            )
        finally:
            run.kill()

    _assert_nothing_after_the_signal(sandbox, run, stop)
    assert run.states == []
    assert _summary(run.stderr)["unsent"]["users"] == 10


def test_a_poll_of_the_job_in_flight_that_fails_after_sigterm_is_not_retried(
    tmp_path: Path,
) -> None:
    """The job in flight is ours, so its polls go on after the signal; a failed one is a retry
    away, and a retry is new: the job is left to Userpilot, and the summary names it."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=3000) as sandbox:
        config = _config(sandbox, tmp_path, batch_size_rows=500)
        run = TargetProcess(config, tmp_path)
        try:
            run.send([schema("users", USER_SCHEMA, ["id"])])
            run.send([record("users", user(i)) for i in range(500)] + [state({"last": 499})])
            eventually(lambda: sandbox.stats()["status_polls"] >= 1, 30, "the job in flight")
            sandbox.answer_next("status", 500, times=1000)
            seen = len(sandbox.request_log())
            run.proc.send_signal(signal.SIGTERM)
            code = run.drain(timeout=60)
        finally:
            run.kill()
        after = _after(sandbox, seen)
        (job,) = sandbox.jobs()

    assert code == 10, run.stderr[-3000:]
    # At most the one poll that was due (its first try), none after it failed.
    assert [r["endpoint"] for r in after] in ([], ["status"]), after
    assert all(r["status"] == 500 for r in after)
    assert run.states == []
    assert _summary(run.stderr)["unsent"]["jobs_left_to_userpilot"] == [job["job_id"]]
    assert f"Job {job['job_id']} (500 users rows of stream 'users') is left to Userpilot" in (
        run.stderr
    )
