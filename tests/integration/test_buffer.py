"""When a batch goes up: size limits, an idle lane, end of input (buffer.py), and what it costs.

Unit tests drive a BatchBuffer directly; the others run the run in-process in simulated time
against a sandbox on the same clock (``simulated.py``), the test writing rows piece by piece to
play a quiet stream, a silent tap, a slow tap and a fast one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.batching.buffer import BatchBuffer
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.clock import SimulatedClock
from target_userpilot.records.rows import encode_row

from support.simulated import add_rows, simulated_run, simulated_sandbox, within

#: Batches of 1,000 rows, and rows that wait half a second in an open batch at most.
PACED = {"batch_size_rows": 1000, "batch_wait_seconds": 0.5}


def _line(i: int) -> bytes:
    return encode_row({"user_id": f"u{i}", "metadata": {"n": i}})


def _buffer(tmp_path: Path, **kwargs: Any) -> tuple[BatchBuffer, Checkpoints]:
    checkpoints = Checkpoints(lambda value: None)
    options: dict[str, Any] = {"max_rows": 3, "max_bytes": 1_000_000, "wait_seconds": 60.0}
    options.update(kwargs)
    return BatchBuffer(checkpoints, spool_dir=str(tmp_path), **options), checkpoints


def _add(buffer: BatchBuffer, checkpoints: Checkpoints, obj: str, i: int) -> None:
    buffer.add(obj, f"{obj}_stream", f"u{i}", _line(i), checkpoints.record())


# The buffer on its own


def test_a_full_batch_is_sealed_at_once_and_given_to_the_lane(tmp_path: Path) -> None:
    buffer, checkpoints = _buffer(tmp_path)
    for i in range(3):
        _add(buffer, checkpoints, "users", i)

    batch = buffer.take()

    assert batch is not None
    assert batch.rows == 3


def test_an_idle_lane_gets_the_batch_holding_the_oldest_row_once_it_waited(tmp_path: Path) -> None:
    clock = SimulatedClock()
    buffer, checkpoints = _buffer(tmp_path, wait_seconds=5.0, clock=clock)
    _add(buffer, checkpoints, "companies", 1)  # the oldest row
    clock.advance(1.0)
    _add(buffer, checkpoints, "users", 2)

    batch = buffer.take()

    assert batch is not None
    assert batch.object == "companies"
    assert clock.now() == pytest.approx(5.0)  # the oldest row waited wait_seconds, no longer


def test_end_of_input_sends_every_open_batch_oldest_first(tmp_path: Path) -> None:
    buffer, checkpoints = _buffer(tmp_path)
    _add(buffer, checkpoints, "users", 1)
    _add(buffer, checkpoints, "companies", 2)
    buffer.end_input()

    objects = []
    while (batch := buffer.take()) is not None:
        objects.append(batch.object)

    assert objects == ["users", "companies"]


def test_the_reader_blocks_only_while_a_sealed_batch_already_waits(tmp_path: Path) -> None:
    buffer, checkpoints = _buffer(tmp_path, max_rows=1)
    _add(buffer, checkpoints, "users", 1)  # sealed, waiting for the lane
    blocked = threading.Event()
    done = threading.Event()

    def second() -> None:
        blocked.set()
        _add(buffer, checkpoints, "users", 2)
        done.set()

    threading.Thread(target=second, daemon=True).start()
    blocked.wait(5)
    assert not done.wait(0.2)  # the second sealed batch has no room yet
    assert buffer.take() is not None
    assert done.wait(5)


def test_a_lane_failure_wakes_a_blocked_reader_with_the_error(tmp_path: Path) -> None:
    buffer, checkpoints = _buffer(tmp_path, max_rows=1)
    _add(buffer, checkpoints, "users", 1)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            _add(buffer, checkpoints, "users", 2)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    buffer.fail(RuntimeError("lane stopped"))
    thread.join(5)

    assert [str(e) for e in errors] == ["lane stopped"]
    buffer.discard()
    assert os.listdir(tmp_path) == []


# Users before the events that name them (events_api: import), whatever the order of the streams


def _add_event(buffer: BatchBuffer, checkpoints: Checkpoints, n: int, user_id: int) -> None:
    line = encode_row({"event_type": "track", "user_id": f"u{user_id}", "event_name": "x"})
    buffer.add("events", "events", f"k{n}", line, checkpoints.record(), user_id=f"u{user_id}")


def _order(buffer: BatchBuffer) -> list[tuple[str, int]]:
    """Each batch the lane takes, as (object, rows), made durable as the job lane would."""
    taken = []
    while (batch := buffer.take()) is not None:
        taken.append((batch.object, batch.rows))
        buffer.durable(batch)
        batch.discard()
    return taken


def test_an_events_file_waits_for_the_users_batch_of_a_user_it_names_received_later(
    tmp_path: Path,
) -> None:
    buffer, checkpoints = _buffer(tmp_path)
    _add_event(buffer, checkpoints, 1, user_id=1)
    _add_event(buffer, checkpoints, 2, user_id=2)
    _add(buffer, checkpoints, "users", 2)  # after the events, in the open users batch
    buffer.end_input()

    assert _order(buffer) == [("users", 1), ("events", 2)]
    assert len(buffer.pending) == 0


def test_an_events_file_does_not_wait_for_users_it_does_not_name_received_later(
    tmp_path: Path,
) -> None:
    buffer, checkpoints = _buffer(tmp_path)
    _add_event(buffer, checkpoints, 1, user_id=1)
    _add(buffer, checkpoints, "users", 9)
    buffer.end_input()

    assert _order(buffer) == [("events", 1), ("users", 1)]


def test_users_batches_keep_their_order_when_one_must_go_before_an_events_file(
    tmp_path: Path,
) -> None:
    """The open users batch names the events' user, a sealed one does not: both go first, the
    sealed one before it (last write wins between users batches)."""
    buffer, checkpoints = _buffer(tmp_path)
    _add_event(buffer, checkpoints, 1, user_id=7)
    for i in (1, 2, 3):  # a full users batch, sealed
        _add(buffer, checkpoints, "users", i)
    _add(buffer, checkpoints, "users", 7)
    buffer.end_input()

    assert _order(buffer) == [("users", 3), ("users", 1), ("events", 1)]


def test_pending_users_are_those_of_batches_whose_jobs_have_not_completed(tmp_path: Path) -> None:
    buffer, checkpoints = _buffer(tmp_path)
    for i in (1, 2, 3, 1):
        _add(buffer, checkpoints, "users", i)  # the first three fill a batch
    first = buffer.take()
    assert first is not None

    assert len(buffer.pending.of("u1")) == 2  # the sealed batch and the open one
    assert buffer.pending.of("u2") == buffer.pending.of("u3") == (first.hold,)
    assert not buffer.pending.wait_done(buffer.pending.of("u2"), 0.01)
    buffer.durable(first)
    assert buffer.pending.of("u2") == ()
    assert len(buffer.pending.of("u1")) == 1
    assert buffer.pending.wait_done((first.hold,), 0.01)
    first.discard()
    buffer.discard()


# The run in simulated time (``simulated.py``): a tap writing piece by piece, a silent tap, a
# slow tap, a fast one, against a sandbox whose jobs take their time on the same clock


def test_a_quiet_streams_batch_does_not_hold_state_while_the_tap_is_silent(tmp_path: Path) -> None:
    """10 companies, a STATE, then silence: the companies go up and the STATE comes out."""
    clock = SimulatedClock()
    states: list[Any] = []
    with simulated_sandbox(clock, rows_per_minute=48_000) as sandbox:
        run = simulated_run(clock, sandbox, tmp_path, states, **PACED)
        try:
            add_rows(run, "companies", range(10))
            run.add_state({"companies": "done"})
            # The tap is silent: one batch wait, one tiny job and its first poll.
            within(clock, 2.0, lambda: states, "the STATE of the quiet stream")
            assert len(sandbox.profiles("companies")) == 10
            add_rows(run, "users", range(3000))
            run.add_state({"users": "done"})
            run.finish()
        finally:
            run.close()
        users = sandbox.profiles("users")

    assert states == [{"companies": "done"}, {"users": "done"}]
    assert len(users) == 3000
    assert clock.stalls == 0


def test_a_small_stream_first_does_not_hold_back_the_states_of_a_large_one(tmp_path: Path) -> None:
    """Companies first, then many users: STATE follows the users' jobs as they complete."""
    clock = SimulatedClock()
    states: list[Any] = []
    with simulated_sandbox(clock, rows_per_minute=48_000) as sandbox:
        run = simulated_run(clock, sandbox, tmp_path, states, **PACED)
        try:
            add_rows(run, "companies", range(10))
            for start in range(0, 8000, 1000):
                add_rows(run, "users", range(start, start + 1000))
                run.add_state({"users": start + 999})
            # The reading thread waits for room while jobs run: checkpoints came meanwhile.
            assert len(states) >= 3
            run.finish()
        finally:
            run.close()
        users = sandbox.profiles("users")

    assert states[-1] == {"users": 7999}
    assert len(users) == 8000
    assert clock.stalls == 0


def test_a_tap_slower_than_userpilot_leaves_it_idle_no_longer_than_batch_wait(
    tmp_path: Path,
) -> None:
    """200 users every 0.3 s (Userpilot could take 800/s): small jobs, each soon after input."""
    clock = SimulatedClock()
    with simulated_sandbox(clock, rows_per_minute=48_000) as sandbox:
        run = simulated_run(clock, sandbox, tmp_path, [], **PACED)
        try:
            for chunk in range(10):
                clock.sleep(0.3)  # the pace of the tap itself
                add_rows(run, "users", range(chunk * 200, (chunk + 1) * 200))
            closed = clock.now()
            run.finish()
            ended = clock.now()
        finally:
            run.close()
        jobs = sandbox.stats()["job_timings"]
        users = sandbox.profiles("users")

    assert len(jobs) >= 2, "rows waited for the end of input instead of going up"
    assert all(j["rows"] < 1000 for j in jobs)
    # The run ends soon after its input: at most one batch wait, two small jobs and their polls.
    assert ended - closed < 2 * 0.5 + 2 * 0.25 + 0.5
    assert len(users) == 2000
    assert clock.stalls == 0


def test_input_faster_than_userpilot_still_goes_up_in_full_batches(tmp_path: Path) -> None:
    """Userpilot at 60,000 rows a minute: while a job runs the next batch fills to the limit."""
    clock = SimulatedClock()
    with simulated_sandbox(clock, rows_per_minute=60_000) as sandbox:
        run = simulated_run(clock, sandbox, tmp_path, [], batch_size_rows=2000)
        try:
            add_rows(run, "users", range(10_000))
            run.finish()
        finally:
            run.close()
        rows = [j["rows"] for j in sandbox.stats()["job_timings"]]

    assert sum(rows) == 10_000
    # The first batch may go up before it is full (Userpilot was idle); the rest are full.
    assert rows[1:] == [2000] * (len(rows) - 1)
    assert clock.stalls == 0
