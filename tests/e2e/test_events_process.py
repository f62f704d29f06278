"""Events across a process the test writes to, stops or kills: an event waits for its user's row
received later, a SIGTERM stops with STATE behind the accepted events, a rerun after kill -9
duplicates only the events in flight.

The rest runs in process: ``tests/integration/test_events.py``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from target_userpilot.lanes.pace import connections_for
from target_userpilot.sandbox import Sandbox

from support.events import track_config, tracked_ids
from support.messages import (
    API_KEY,
    USER_SCHEMA,
    event,
    events_schema,
    record,
    schema,
    state,
    user,
)
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget, TargetProcess
from support.waiting import eventually


def _by_user(sandbox: Sandbox) -> dict[str, list[str]]:
    """The event ids each user received, in the order they arrived."""
    received: dict[str, list[str]] = {}
    for e in sandbox.events():
        received.setdefault(e["user_id"], []).append(e["metadata"]["event_id"])
    return received


def _track_statuses(sandbox: Sandbox) -> Counter[int | None]:
    return Counter(r["status"] for r in sandbox.request_log() if r["endpoint"] == "track")


def test_an_event_waits_for_its_users_row_received_after_it(tmp_path: Path) -> None:
    """The users row of the second event comes after it in the input, in a later job than the
    users before it: the event waits for that job instead of going out to a 404."""
    # One row a second: each users job takes about a second.
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=60, events_per_minute=0) as sandbox:
        config = track_config(sandbox, tmp_path, batch_size_rows=1)
        running = TargetProcess(config, tmp_path)
        try:
            running.send([schema("users", USER_SCHEMA, ["id"]), events_schema()])
            running.send([record("users", user(1)), record("events", event(1, 1))])
            running.send([record("events", event(2, 2)), record("users", user(2))])
            code = running.close()
        finally:
            running.kill()

        assert code == 0, running.stderr[-3000:]
        assert _track_statuses(sandbox) == Counter({202: 2})  # no 404, no second try
        second_job = max(sandbox.stats()["job_timings"], key=lambda j: j["accepted_at"])
        e2 = next(e for e in sandbox.events() if e["user_id"] == "2")
        assert e2["at"] >= second_job["completed_at"]


@BOTH_LEDGERS
def test_an_event_tried_again_after_a_404_keeps_its_place_before_its_users_later_events(
    tmp_path: Path, state_db: str
) -> None:
    """Event 0 of user 7 is refused (404): its user comes later. Once the user is loaded,
    event 1 of user 7 arrives: it must not overtake event 0, which goes again only at the end.
    STATE waits for event 0 meanwhile."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        config = track_config(sandbox, tmp_path, state_db=state_db)
        running = TargetProcess(config, tmp_path)
        try:
            running.send([schema("users", USER_SCHEMA, ["id"]), events_schema()])
            running.send([record("events", event(0, 7)), state({"after": 0})])
            eventually(lambda: _track_statuses(sandbox)[404] == 1, what="a 404 for event 0")
            running.send([record("users", user(7)), state({"after": "user 7"})])
            eventually(lambda: "7" in sandbox.profiles("users"), what="user 7 loaded")
            running.send([record("events", event(1, 7)), record("events", event(2, 7))])
            running.send([state({"after": 2})])
            closed_at = time.monotonic()
            code = running.close()
        finally:
            running.kill()

        assert code == 0, running.stderr[-3000:]
        assert _by_user(sandbox) == {"7": ["e-0", "e-1", "e-2"]}
        assert _track_statuses(sandbox) == Counter({404: 1, 202: 3})
        # No STATE passed the event set aside before it went again: none before the input ended.
        assert running.states[-1] == {"after": 2}
        assert min(running.state_times) > closed_at


def test_kill_9_and_a_rerun_from_the_last_state_duplicate_only_events_in_flight(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        config = track_config(sandbox, tmp_path, events_per_minute=3000)
        messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages += [record("users", user(i)) for i in range(50)]
        messages.append(state({"users": "done"}))
        for i in range(300):
            messages.append(record("events", event(i, i % 50)))
            if (i + 1) % 20 == 0:
                messages.append(state({"events": i}))
        running = TargetProcess(config, tmp_path, messages=messages)
        try:
            eventually(lambda: len(sandbox.events()) >= 110, timeout=20, what="110 events")
        finally:
            running.proc.kill()
        running.drain()
        assert running.states, "no STATE before the kill"
        last = running.states[-1]
        assert last != {"events": 299}, "the run ended before the kill"
        resume = next(n for n, m in enumerate(messages) if m.get("value") == last) + 1
        rerun_input = messages[:2] + messages[resume:]

        rerun = run_target(config, rerun_input, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        ids = tracked_ids(sandbox)
        assert set(ids) == {f"e-{i}" for i in range(300)}
        duplicates = sum(ids.values()) - len(ids)
        assert duplicates <= connections_for(3000)
        assert rerun.summary["total"]["events_skipped"] > 0


def test_sigterm_while_events_go_out_stops_with_state_behind_the_accepted_ones(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        config = track_config(sandbox, tmp_path, events_per_minute=1200)
        messages = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages += [record("users", user(i)) for i in range(10)]
        for i in range(100):
            messages.append(record("events", event(i, i % 10)))
            messages.append(state({"events": i}))
        running = TargetProcess(config, tmp_path, messages=messages)
        eventually(lambda: len(sandbox.events()) >= 20, timeout=20, what="20 events")
        running.proc.send_signal(signal.SIGTERM)
        code = running.drain()

        assert code == 10, running.stderr[-3000:]
        sent = tracked_ids(sandbox)
        last = running.states[-1]["events"]
        assert last < 99
        # STATE never passes an event Userpilot has not accepted.
        assert {f"e-{i}" for i in range(last + 1)} <= set(sent)
        resume = next(n for n, m in enumerate(messages) if m.get("value") == {"events": last})
        rerun = run_target(config, messages[:2] + messages[resume + 1 :], tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        ids = tracked_ids(sandbox)
        assert set(ids) == {f"e-{i}" for i in range(100)}
        assert max(ids.values()) == 1


def test_sigterm_leaves_an_event_set_aside_for_the_rerun_and_no_state_past_it(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        config = track_config(sandbox, tmp_path)
        head = [schema("users", USER_SCHEMA, ["id"]), events_schema()]
        messages = [*head, record("events", event(0, 7)), state({"after": 0})]
        messages += [record("users", user(7)), state({"after": "user 7"})]
        running = TargetProcess(config, tmp_path)
        try:
            running.send(messages[:4])
            eventually(lambda: _track_statuses(sandbox)[404] == 1, what="a 404 for event 0")
            running.send(messages[4:])
            eventually(lambda: "7" in sandbox.profiles("users"), what="user 7 loaded")
            running.proc.send_signal(signal.SIGTERM)
            code = running.drain()
        finally:
            running.kill()

        assert code == 10, running.stderr[-3000:]
        assert running.states == []  # event 0 was set aside, not sent: no STATE passes it
        assert sandbox.events() == []

        rerun = run_target(config, messages, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert _by_user(sandbox) == {"7": ["e-0"]}
        assert rerun.states[-1] == {"after": "user 7"}
