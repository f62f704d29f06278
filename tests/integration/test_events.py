"""Events: streams routed to events reach /v1/track after their users, paced, each once in effect.

Every test runs the real target against the sandbox over loopback HTTP and checks the events
Userpilot (the sandbox) received: which, how many times, when, and with what metadata.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.lanes.pace import connections_for
from target_userpilot.sandbox import Sandbox

from support.events import track_config, tracked_ids
from support.messages import (
    API_KEY,
    EVENT_SCHEMA,
    USER_SCHEMA,
    event,
    events_schema,
    record,
    schema,
    state,
    user,
)
from support.pg import BOTH_LEDGERS, PASSWORD, PostgresServer
from support.readme import readme_recipe
from support.runner import RunTarget


def test_mixed_run_sends_every_event_once_after_its_users_job(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    # Users, then events about them, twice: the second events wait for the second users.
    for part in range(2):
        users = range(part * 100, part * 100 + 100)
        messages += [record("users", user(i)) for i in users]
        messages += [record("events", event(i, i)) for i in users]
        messages.append(state({"part": part}))

    run = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert tracked_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(200)})
    received = sandbox.events()
    first = next(e for e in received if e["metadata"]["event_id"] == "e-7")
    assert first["user_id"] == "7"
    assert first["event_name"] == "invoice_paid"
    assert first["metadata"] == {
        "event_id": "e-7",
        "invoice__amount": 7.5,
        "invoice__currency": "EUR",
        "seats": "[1,7]",
        "paid_at": "2026-01-02T03:04:05+01:00",
    }
    # None before its user's job completed: users go up in input order, so the users rows of
    # jobs completed before an event arrived must reach past that event's user.
    jobs = sorted(sandbox.stats()["job_timings"], key=lambda j: j["completed_at"])
    for e in received:
        done = sum(j["rows"] for j in jobs if j["completed_at"] <= e["at"])
        assert done > int(e["user_id"]), f"event {e['metadata']['event_id']} came too early"
    total = run.summary["total"]
    assert (total["events_sent"], total["events_skipped"], total["rejected"]) == (200, 0, 0)
    assert run.states[-1] == {"part": 1}
    assert "take about" in run.stderr  # the first progress line says how long
    assert sandbox.stats()["by_endpoint"]["track"]["rate_limited"] == 0


def test_events_do_not_wait_for_users_received_after_them(
    tmp_path: Path, run_target: RunTarget
) -> None:
    # Users 0-49 exist already; the users that follow the events take a slow job (2 s).
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        first = [schema("users", USER_SCHEMA, ["id"])]
        first += [record("users", user(i)) for i in range(50)]
        assert run_target(track_config(sandbox, tmp_path), first, tmp_path=tmp_path).returncode == 0
        sandbox.set_rows_per_minute(3000)
        messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages += [record("events", event(i, i)) for i in range(50)]
        messages += [record("users", user(i)) for i in range(50, 150)]

        run = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        second_job = max(sandbox.stats()["job_timings"], key=lambda j: j["accepted_at"])
        assert all(e["at"] < second_job["completed_at"] for e in sandbox.events())
        assert len(tracked_ids(sandbox)) == 50


def test_pace_stays_under_a_low_limit(tmp_path: Path, run_target: RunTarget) -> None:
    # Userpilot's own 600 a minute: 30 events must spread over about three seconds.
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=600) as sandbox:
        messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages += [record("users", user(i)) for i in range(30)]
        messages += [record("events", event(i, i)) for i in range(30)]

        run = run_target(
            track_config(sandbox, tmp_path, events_per_minute=600), messages, tmp_path=tmp_path
        )

        assert run.returncode == 0, run.stderr[-3000:]
        assert len(tracked_ids(sandbox)) == 30
        arrivals = [r["at"] for r in sandbox.request_log() if r["endpoint"] == "track"]
        assert len(arrivals) == 30
        assert sandbox.stats()["by_endpoint"]["track"]["rate_limited"] == 0
        # Evenly spread: never more than 10 a second (plus one at the window's edge), so the
        # same pace never passes 600 in any minute either.
        assert max(sum(1 for t in arrivals if a <= t < a + 1.0) for a in arrivals) <= 11
        assert arrivals[-1] - arrivals[0] >= 29 * 0.1 * 0.95


def test_one_users_events_arrive_in_input_order(tmp_path: Path, run_target: RunTarget) -> None:
    """Several connections, few users, a high pace: Userpilot stamps each event on arrival, so
    one user's events must never overtake each other (they did, 24 times in one timeline)."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages += [record("users", user(i)) for i in range(3)]
        messages += [record("events", event(i, i % 3)) for i in range(300)]
        config = track_config(sandbox, tmp_path, events_per_minute=60_000)

        run = run_target(config, messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        received: dict[str, list[int]] = {}
        for e in sandbox.events():
            received.setdefault(e["user_id"], []).append(int(e["metadata"]["event_id"][2:]))
    assert connections_for(60_000) == 8
    assert received == {str(u): list(range(u, 300, 3)) for u in range(3)}
    track = [r for r in sandbox.request_log() if r["endpoint"] == "track"]
    assert len(track) == 300


def test_rate_limits_and_503s_that_say_retry_after_lose_and_duplicate_nothing(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    sandbox.set_faults(endpoints={"track"}, rate_limit_rate=0.06, retry_after=0.05, seed=7)
    sandbox.answer_next("track", 503, times=3, retry_after=0)
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(40)]
    messages += [record("events", event(i, i % 40)) for i in range(200)]

    run = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    injected = sandbox.stats()["faults_injected"]
    assert injected["scripted"] == 3 and injected["rate_limit"] > 0
    assert tracked_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(200)})
    assert run.summary["total"]["events_sent"] == 200
    assert run.summary["total"]["events_unconfirmed"] == 0
    assert "limited the rate of events (HTTP 429" in run.stderr


def _ten_events() -> list[dict[str, Any]]:
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(10)]
    messages += [record("events", event(i, i)) for i in range(10)]
    return [*messages, state({"done": True})]


def test_a_late_answer_never_multiplies_an_event(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    """The issue's case: Userpilot takes the event, but answers after the client's timeout.
    Sent again, 10 events became 28; now each goes once, and the summary says which are in
    doubt."""
    sandbox = timed_jobs_sandbox
    sandbox.set_faults(endpoints={"track"}, slow_rate=0.2, slow_seconds=1.0, seed=4)
    config = track_config(sandbox, tmp_path, request_timeout_seconds=0.3)

    run = run_target(config, _ten_events(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert tracked_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(10)})  # the slow ones took
    slow = sandbox.stats()["faults_injected"]["slow"]
    assert 0 < slow < 5
    total = run.summary["total"]
    assert (total["events_sent"], total["events_unconfirmed"]) == (10 - slow, slow)
    assert run.states[-1] == {"done": True}
    assert run.stderr.count("got no clear answer from Userpilot") == 2  # the warning, the table
    assert "unconfirmed" in run.stderr

    rerun = run_target(config, _ten_events(), tmp_path=tmp_path)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.summary["total"]["events_skipped"] == 10  # the doubtful ones are not resent
    assert len(sandbox.events()) == 10


def test_a_server_error_after_sending_is_not_retried(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    sandbox.answer_next("track", 500, times=1)

    run = run_target(track_config(sandbox, tmp_path), _ten_events(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.events()) == 9  # this 500 did nothing: the event is missing, not doubled
    assert run.summary["total"]["events_unconfirmed"] == 1
    track = [r for r in sandbox.request_log() if r["endpoint"] == "track"]
    assert len(track) == 10


def test_many_unconfirmed_events_in_a_row_stop_the_run(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    sandbox.answer_next("track", 502, times=100)
    messages = _ten_events()[:-1] + [record("events", event(i, i % 10)) for i in range(10, 40)]

    run = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert run.returncode == 9, run.stderr[-3000:]
    assert "events in a row got no clear answer from Userpilot" in run.stderr
    track = [r for r in sandbox.request_log() if r["endpoint"] == "track"]
    assert 10 <= len(track) < 40


def test_a_refused_event_rejects_only_that_record(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    rejects = tmp_path / "rejects.ndjson"
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(10)]
    messages += [record("events", event(i, i)) for i in range(10)]
    messages.append(record("events", event(10, 999)))  # no such user: Userpilot says 404
    messages += [record("events", event(i, i - 11)) for i in range(11, 21)]
    messages.append(record("events", {"event_id": "e-x", "user_id": 1}))  # no name

    run = run_target(
        track_config(sandbox, tmp_path, rejects_path=str(rejects)), messages, tmp_path=tmp_path
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(tracked_ids(sandbox)) == {f"e-{i}" for i in range(21)} - {"e-10"}
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted((r["stream"], r["position"]) for r in lines) == [("events", 11), ("events", 22)]
    refused = next(r for r in lines if r["position"] == 11)
    assert "HTTP 404" in refused["reason"]
    assert refused["record"]["user_id"] == "999"
    assert run.summary["streams"]["events"]["rejected"] == 2
    assert run.summary["streams"]["events"]["events_sent"] == 20


def _by_user(sandbox: Sandbox) -> dict[str, list[str]]:
    """The event ids each user received, in the order they arrived."""
    received: dict[str, list[str]] = {}
    for e in sandbox.events():
        received.setdefault(e["user_id"], []).append(e["metadata"]["event_id"])
    return received


@BOTH_LEDGERS
def test_an_events_stream_before_its_users_stream_loses_no_event(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    """tap-csv sends files in the order configured: the events file may come first. Every event
    waits for its user's job (or, sent before its user was read, is tried again after it)."""
    sandbox = timed_jobs_sandbox
    messages = [events_schema(), schema("users", USER_SCHEMA, ["id"])]
    messages += [record("events", event(i, i % 4)) for i in range(12)]
    messages += [record("users", user(i)) for i in range(4)]
    messages.append(state({"done": True}))

    run = run_target(
        track_config(sandbox, tmp_path, state_db=state_db), messages, tmp_path=tmp_path
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert _by_user(sandbox) == {str(u): [f"e-{i}" for i in range(u, 12, 4)] for u in range(4)}
    users_job = sandbox.stats()["job_timings"][0]
    assert all(e["at"] >= users_job["completed_at"] for e in sandbox.events())
    total = run.summary["total"]
    assert (total["events_sent"], total["rejected"]) == (12, 0)
    assert run.states == [{"done": True}]


@BOTH_LEDGERS
def test_an_event_of_a_user_in_no_input_is_tried_once_more_then_rejected(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    rejects = tmp_path / "rejects.ndjson"
    messages = [events_schema(), schema("users", USER_SCHEMA, ["id"])]
    messages.append(record("events", event(99, 999)))  # user 999 is in no input, nor Userpilot
    # The others after their users: they wait for them, so the only 404s are user 999's.
    messages += [record("users", user(i)) for i in range(5)]
    messages += [record("events", event(i, i)) for i in range(5)]
    messages.append(state({"done": True}))
    config = track_config(sandbox, tmp_path, rejects_path=str(rejects), state_db=state_db)

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(tracked_ids(sandbox)) == {f"e-{i}" for i in range(5)}
    users_job = sandbox.stats()["job_timings"][0]
    refusals = [r for r in sandbox.request_log() if r["endpoint"] == "track" and r["status"] == 404]
    assert len(refusals) == 2  # the first try, and one more after the users job
    assert refusals[1]["at"] >= users_job["completed_at"]
    (line,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (line["stream"], line["position"]) == ("events", 1)
    assert "HTTP 404" in line["reason"]
    assert "after every users row of this run was loaded" in line["reason"]
    assert run.summary["streams"]["events"]["rejected"] == 1
    assert run.states == [{"done": True}]


def test_a_4xx_answer_rejects_one_event_and_the_run_goes_on(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(5)]
    messages += [record("events", event(i, i)) for i in range(5)]
    sandbox.answer_next("track", 422)

    run = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(tracked_ids(sandbox)) == 4
    assert run.summary["total"]["rejected"] == 1
    assert "HTTP 422" in run.stderr


def test_an_oversized_event_is_rejected_and_the_run_goes_on(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    """A 413 on /v1/track is about the one event it carries: it is a rejected record, and a
    rerun does not stop at it either (it used to stop every run there with exit 8)."""
    sandbox = timed_jobs_sandbox
    sandbox.set_faults(max_bytes=4000)  # a request body over 4,000 bytes gets 413
    rejects = tmp_path / "rejects.ndjson"
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(5)]
    messages += [record("events", event(i, i)) for i in range(5)]
    messages.insert(9, record("events", event(99, 2, note="x" * 5000)))
    config = track_config(sandbox, tmp_path, rejects_path=str(rejects))

    for _ in range(2):
        run = run_target(config, messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert set(tracked_ids(sandbox)) == {f"e-{i}" for i in range(5)}
        assert run.summary["streams"]["events"]["rejected"] == 1
        assert "too large (HTTP 413)" in run.stderr
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["stream"], r["record"]["metadata"]["event_id"]) for r in lines] == [
        ("events", "e-99"),
        ("events", "e-99"),
    ]
    assert len(sandbox.events()) == 5  # the rerun skipped the five accepted ones


def test_a_rerun_skips_events_userpilot_already_accepted(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(20)]
    messages += [record("events", event(i, i)) for i in range(20)]
    # Without key properties the whole record is the key: two identical records are one event.
    plain = {k: v for k, v in EVENT_SCHEMA.items() if k != "event_id"}
    messages.append(schema("event", plain))
    same = {"user_id": 3, "event_name": "seat_added", "seats": [2]}
    messages += [record("event", same), record("event", same)]

    first = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)
    second = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert first.returncode == second.returncode == 0, second.stderr[-3000:]
    assert len(sandbox.events()) == 21
    assert first.summary["streams"]["event"]["events_skipped"] == 1
    assert second.summary["total"]["events_sent"] == 0
    assert second.summary["total"]["events_skipped"] == 22


def test_dry_run_writes_track_request_bodies(tmp_path: Path, run_target: RunTarget) -> None:
    out = tmp_path / "out"
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(3)]
    messages += [record("events", event(i, i)) for i in range(3)]
    config = {"dry_run": True, "output_dir": str(out), "state_db": str(tmp_path / "l.db")}

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    bodies = [json.loads(line) for line in (out / "events-1.ndjson").read_text().splitlines()]
    assert [b["user_id"] for b in bodies] == ["0", "1", "2"]
    assert bodies[0] == {
        "user_id": "0",
        "event_name": "invoice_paid",
        "metadata": {
            "event_id": "e-0",
            "invoice__amount": 0.5,
            "invoice__currency": "EUR",
            "seats": "[1,0]",
            "paid_at": "2026-01-02T03:04:05+01:00",
        },
    }
    assert (out / "events-1.ndjson").stat().st_mode & 0o777 == 0o600
    assert run.summary["total"]["events_sent"] == 3
    assert not (tmp_path / "l.db").exists()  # a dry run records nothing as sent


def test_a_refused_key_on_track_stops_the_run_after_the_users_state(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    sandbox.set_faults(forbidden=True, endpoints={"track"})
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(5)]
    messages.append(state({"users": "done"}))
    messages += [record("events", event(i, i)) for i in range(5)]
    messages.append(state({"events": "done"}))

    run = run_target(track_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert run.returncode == 3
    assert "Userpilot refused the API key (HTTP 403)" in run.stderr
    assert sandbox.events() == []
    assert run.states == [{"users": "done"}]
    assert API_KEY not in run.stderr


def test_with_on_invalid_record_fail_a_refused_event_stops_the_run_before_its_state(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = timed_jobs_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(3)]
    messages.append(state({"users": "done"}))
    messages.append(record("events", event(0, 999)))  # no such user: 404
    messages.append(state({"events": "done"}))

    run = run_target(
        track_config(sandbox, tmp_path, on_invalid_record="fail"), messages, tmp_path=tmp_path
    )

    assert run.returncode == 6
    assert "HTTP 404" in run.stderr
    assert run.states == [{"users": "done"}]


def test_a_stream_maps_recipe_renames_a_tables_columns_into_events(
    timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    # A billing table: the member is the user, the action the event's name.
    sandbox = timed_jobs_sandbox
    config = track_config(
        sandbox, tmp_path, **readme_recipe("Send a table whose columns have other names as events")
    )
    billing = {
        "id": {"type": "integer"},
        "member_id": {"type": "integer"},
        "action": {"type": "string"},
        "amount": {"type": "number"},
    }
    messages = [schema("users", USER_SCHEMA, ["id"]), schema("billing", billing, ["id"])]
    messages += [record("users", user(i)) for i in range(3)]
    messages += [
        record("billing", {"id": i, "member_id": i, "action": "paid", "amount": 9.5})
        for i in range(3)
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    got = sorted((e["user_id"], e["event_name"], e["metadata"]) for e in sandbox.events())
    assert got == [(str(i), "invoice_paid", {"id": i, "amount": 9.5}) for i in range(3)]


def test_progress_lines_say_sent_of_received_the_rate_and_the_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from target_userpilot.checkpoints import Checkpoints
    from target_userpilot.lanes.events import EventLane
    from target_userpilot.lanes.pace import EventPace
    from target_userpilot.rejects import RejectLog
    from target_userpilot.summary import RunSummary
    from target_userpilot.userpilot.client import UserpilotClient

    with Sandbox(port=0, api_key=API_KEY, events_per_minute=0, track_requires_user=False) as sb:
        written: list[Any] = []
        checkpoints = Checkpoints(write=written.append)
        pace = EventPace(1200)
        client = UserpilotClient(sb.url, API_KEY, pace=pace)
        lane = EventLane(
            client,
            checkpoints,
            RunSummary(),
            RejectLog(),
            pace=pace,
            keys=None,
            scope="test",
            progress_every=0.5,
        )
        try:
            with caplog.at_level("INFO", logger="target_userpilot.events"):
                # A users row first, in a job not completed yet: the events wait for it.
                users = checkpoints.hold(checkpoints.record(), kind="users")
                for i in range(30):
                    seq = checkpoints.record()
                    body = {"user_id": "u", "event_name": "seen", "metadata": {"n": i}}
                    lane.add("events", seq, i + 1, f"k{i}", body)
                checkpoints.add_state({"done": True})
                time.sleep(0.3)  # what is tested: nothing goes out meanwhile
                assert sb.events() == []
                checkpoints.release(users)
                assert written == []  # STATE waits for the events
                lane.wait_idle()
        finally:
            lane.close()
            client.close()
        assert written == [{"done": True}]
        assert len(sb.events()) == 30
        lines = [r.getMessage() for r in caplog.records]
        assert "the 30 events received so far take about 2 s at this pace" in lines[0]
        progress = [line for line in lines if line.startswith("Events: ")]
        assert len(progress) >= 2
        assert "of 30 received sent" in progress[0] and "a minute, about" in progress[0]
        assert progress[-1].startswith("Events: 30 of 30 received sent")


def test_a_postgresql_ledger_remembers_sent_events_between_runs(
    postgres: PostgresServer, timed_jobs_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    # A container's disk is gone after each run: the ledger lives in PostgreSQL instead.
    sandbox = timed_jobs_sandbox
    postgres.psql("DROP SCHEMA IF EXISTS t_events CASCADE; CREATE SCHEMA t_events")
    url = f"{postgres.url}?options=-csearch_path%3Dt_events"
    messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
    messages += [record("users", user(i)) for i in range(10)]
    messages += [record("events", event(i, i % 10)) for i in range(30)]
    config = track_config(sandbox, tmp_path, state_db=url)

    first = run_target(config, messages, tmp_path=tmp_path)
    second = run_target(config, messages, tmp_path=tmp_path)

    assert first.returncode == second.returncode == 0, second.stderr[-3000:]
    assert tracked_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(30)})
    assert second.summary["total"]["events_skipped"] == 30
    assert PASSWORD not in first.stderr + second.stderr
