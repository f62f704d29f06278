"""Crashes and stops: a killed run leaves no STATE ahead of the data; a stopped one says so.

The target runs as a subprocess against a sandbox whose jobs take about half a second, on input
with a STATE after every 100 records. Its stdout is read line by line while it runs, so the tests
see each checkpoint when the target emits it, and can kill or stop it in the middle of a run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox
from target_userpilot.stop import DUPLICATE_SIGNAL_SECONDS

from support.messages import API_KEY, USER_SCHEMA, encode_messages, record, schema, state, user
from support.runner import RunTarget, TargetProcess
from support.waiting import eventually

N_USERS = 4000
BATCH_ROWS = 500
#: 500 rows take half a second: long enough to act while a job runs, short enough for a test.
ROWS_PER_MINUTE = 20_000


def _messages(start: int, stop: int) -> list[dict[str, Any]]:
    """SCHEMA, users ``start`` to ``stop - 1``, a STATE naming the last record every 100."""
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in range(start, stop):
        messages.append(record("users", user(i)))
        if (i + 1) % 100 == 0 or i == stop - 1:
            messages.append(state({"last": i}))
    return messages


@pytest.fixture
def slow_sandbox() -> Iterator[Sandbox]:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=ROWS_PER_MINUTE) as sandbox:
        yield sandbox


def _config(sandbox: Sandbox) -> dict[str, Any]:
    return {
        "api_url": sandbox.url,
        "api_key": API_KEY,
        "batch_size_rows": BATCH_ROWS,
        "rows_per_minute": ROWS_PER_MINUTE,
    }


def _followed_job(sandbox: Sandbox) -> dict[str, Any] | None:
    """A job of ours that runs and that the target has polled, so it surely follows it."""
    return next(
        (j for j in sandbox.stats()["job_timings"] if j["completed_at"] is None and j["polls"]),
        None,
    )


def _missing(landed: dict[str, Any], up_to: int) -> list[int]:
    return [i for i in range(up_to + 1) if str(i) not in landed]


def test_sigkill_mid_run_loses_nothing_covered_by_a_state_and_a_rerun_completes(
    slow_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    run = TargetProcess(_config(slow_sandbox), tmp_path, messages=_messages(0, N_USERS))
    try:
        jobs_at_state = []
        for _ in range(3):
            value = run.next_state()
            assert value is not None, run.stderr[-3000:]
            jobs_at_state.append(len(slow_sandbox.jobs()))
    finally:
        run.kill()
    assert run.proc.returncode == -signal.SIGKILL

    last = run.states[-1]["last"]
    assert last < N_USERS - 1, "the run ended before the kill: the test proved nothing"
    # Checkpoints come as jobs complete, not at the end: one per job, each naming the last
    # record of a job, long before the last job.
    lasts = [s["last"] for s in run.states]
    assert lasts == sorted(set(lasts))
    assert all((value + 1) % BATCH_ROWS == 0 for value in lasts), lasts
    assert jobs_at_state[0] < N_USERS // BATCH_ROWS
    # Every record the last STATE covers is in Userpilot: no STATE ahead of the data.
    assert _missing(slow_sandbox.profiles("users"), last) == []

    # Resume from that STATE, as an orchestrator would: only the records after it.
    slow_sandbox.set_rows_per_minute(0)
    config = _config(slow_sandbox) | {"rows_per_minute": 600_000}
    rerun = run_target(config, _messages(last + 1, N_USERS), tmp_path=tmp_path)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.states[-1] == {"last": N_USERS - 1}
    assert _missing(slow_sandbox.profiles("users"), N_USERS - 1) == []
    assert slow_sandbox.stats()["conflicts_own"] == 0


def test_sigterm_waits_for_the_job_in_flight_then_stops_with_exit_10(
    slow_sandbox: Sandbox, tmp_path: Path
) -> None:
    run = TargetProcess(_config(slow_sandbox), tmp_path, messages=_messages(0, N_USERS))
    try:
        assert run.next_state() is not None, run.stderr[-3000:]
        job = eventually(lambda: _followed_job(slow_sandbox), 10, "a job in flight")
        uploads = slow_sandbox.stats()["uploads"]
        run.proc.send_signal(signal.SIGTERM)
        code = run.drain(timeout=15)
    finally:
        run.kill()

    assert code == 10, run.stderr[-3000:]
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert "Received SIGTERM" in stopped[0]
    assert "rerun" in stopped[0]
    # Nothing was uploaded after the signal, the job in flight was awaited, and its STATE went
    # out: the last STATE covers exactly the records of the jobs uploaded.
    stats = slow_sandbox.stats()
    assert stats["uploads"] == uploads
    assert next(j for j in slow_sandbox.jobs() if j["job_id"] == job["job_id"])["status"] == (
        "completed"
    )
    last = run.states[-1]["last"]
    assert last == uploads * BATCH_ROWS - 1
    assert _missing(slow_sandbox.profiles("users"), last) == []
    assert "TARGET_USERPILOT_SUMMARY" in run.stderr


def test_sigterm_after_the_end_of_input_lets_the_run_finish(
    slow_sandbox: Sandbox, tmp_path: Path
) -> None:
    """All input read and uploaded: the stop only waits for the last job, the run ends as
    usual with its final STATE and exit 0."""
    run = TargetProcess(_config(slow_sandbox), tmp_path, messages=_messages(0, 2 * BATCH_ROWS))
    try:

        def last_job_followed() -> bool:
            job = _followed_job(slow_sandbox)
            return job is not None and len(slow_sandbox.jobs()) == 2

        eventually(last_job_followed, 15, "the last job to be in flight")
        run.proc.send_signal(signal.SIGTERM)
        code = run.drain(timeout=15)
    finally:
        run.kill()

    assert code == 0, run.stderr[-3000:]
    assert run.states[-1] == {"last": 2 * BATCH_ROWS - 1}
    assert "after the end of input" in run.stderr
    assert len(slow_sandbox.profiles("users")) == 2 * BATCH_ROWS


def test_a_second_sigterm_stops_at_once(slow_sandbox: Sandbox, tmp_path: Path) -> None:
    slow_sandbox.set_rows_per_minute(1200)  # a 500-row job takes 25 s
    run = TargetProcess(_config(slow_sandbox), tmp_path, messages=_messages(0, N_USERS))
    try:
        eventually(lambda: _followed_job(slow_sandbox), 15, "the first job in flight")
        run.proc.send_signal(signal.SIGTERM)
        eventually(lambda: "Waiting for the job in flight" in run.stderr, 10, "the warning")
        # Past the window in which a second signal is the same stop forwarded (stop.py).
        time.sleep(DUPLICATE_SIGNAL_SECONDS)
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        code = run.drain(timeout=15)
        took = time.monotonic() - started
    finally:
        run.kill()

    assert code == 10, run.stderr[-3000:]
    # Well under the job's 25 s, with room for a loaded machine: the run did not wait it out.
    assert took < 10, f"the second signal took {took:.1f} s to stop the run"
    assert run.states == []  # the first job never completed: nothing to checkpoint
    assert slow_sandbox.stats()["uploads"] == 1


def test_sigterm_before_any_record_stops_with_exit_10(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(encode_messages([schema("users", USER_SCHEMA, ["id"])]))
        proc.stdin.flush()
        # The sink announces its stream once the SCHEMA is read: the target is up and waiting.
        while b"Stream 'users' loads users" not in proc.stderr.readline():
            assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 10, err.decode()[-2000:]
    assert out == b""
    assert b"target-userpilot stopped: Received SIGTERM" in err
    assert sandbox.stats()["requests"] == 0
