"""The run and its lanes in-process, with a fake Userpilot behind the lanes' client protocols.

No HTTP and no real-time pacing: the fake stands for the ``Uploader``, ``Deleter`` and
``Tracker`` protocols and logs every request it is asked for, the paces run at the test's
intervals. What is proven here: a stop reaches every lane at once (phase one) and lets only the
work in flight end (phase two); a signal is counted once however often an orchestrator forwards
it; a failure anywhere still removes every spool file and prints the summary.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from target_userpilot.batching import batch as batch_module
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.clock import SimulatedClock
from target_userpilot.errors import (
    AuthenticationError,
    LedgerUnavailable,
    PayloadTooLarge,
    Terminated,
    WaitInterrupted,
)
from target_userpilot.lanes.deletions import DeletionLane
from target_userpilot.lanes.events import EventLane
from target_userpilot.lanes.pace import DeletionPace, EventPace
from target_userpilot.ledger.store import RecordedImport
from target_userpilot.rejects import RejectLog
from target_userpilot.run import Run, RunParts
from target_userpilot.settings import Settings
from target_userpilot.stop import RunStop
from target_userpilot.summary import RunSummary

from support.waiting import eventually

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

#: An event's body, as the sink hands it to the lane.
SEEN = {"user_id": "1", "event_name": "seen"}


class FakeUserpilot:
    """Userpilot behind the Uploader, Deleter and Tracker protocols, logging every request.

    Jobs complete once ``jobs_done`` is set (at once by default); ``conflict`` makes uploads
    wait as for another client's job; ``refuse_deletions_over`` answers 413 to larger requests.
    """

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.jobs_done = threading.Event()
        self.jobs_done.set()
        self.conflict = False
        self.refuse_deletions_over: int | None = None
        self.track_error: BaseException | None = None
        self.on_delete: Any = None
        self._lock = threading.Lock()

    def _note(self, kind: str, detail: Any = None) -> None:
        with self._lock:
            self.log.append((kind, detail))

    def kinds(self, start: int = 0) -> list[str]:
        with self._lock:
            return [kind for kind, _ in self.log[start:]]

    def upload(
        self,
        object: str,
        path: str,
        filename: str,
        *,
        conflict_wait: float,
        stop: threading.Event | None = None,
        reached: Any = None,
    ) -> dict[str, Any]:
        while self.conflict:
            self._note("409")
            if stop is not None and stop.wait(0.01):
                raise WaitInterrupted("stopped")
        with open(path, "rb") as handle:
            rows = len(handle.readlines())
        self._note("upload", rows)
        return {"job_id": filename, "status": "processing", "total_rows": rows}

    def job_status(self, job_id: str, *, stop: Any = None) -> dict[str, Any]:
        self._note("status", job_id)
        done = self.jobs_done.is_set()
        return {"job_id": job_id, "status": "completed" if done else "processing"}

    def delete_profiles(self, object: str, ids: list[str], *, stop: Any = None) -> dict[str, Any]:
        limit = self.refuse_deletions_over
        if limit is not None and len(ids) > limit:
            self._note("delete-413", len(ids))
            raise PayloadTooLarge("too large")
        self._note("delete", list(ids))
        if self.on_delete is not None:
            self.on_delete()
        return {}

    def track(
        self, user_id: str, event_name: str, metadata: dict[str, Any] | None, *, stop: Any = None
    ) -> None:
        if self.track_error is not None:
            self._note("track-refused", user_id)
            raise self.track_error
        self._note("track", user_id)

    def close(self) -> None:
        self._note("close")


def _settings(**extra: Any) -> Settings:
    config: dict[str, Any] = {"api_url": "https://analytex.userpilot.io", "api_key": "test-key"}
    config.update({"rows_per_minute": 1e9, "batch_wait_seconds": 60, **extra})
    return Settings.from_config(config)


def _run(tmp_path: Path, fake: FakeUserpilot, states: list[Any], **extra: Any) -> Run:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    parts = RunParts(
        client=fake,
        event_client=fake,
        deletion_pace=DeletionPace(3600),  # after the first request, the next waits an hour
        event_pace=EventPace(None),
        spool_dir=str(spool),
        write_state=states.append,
    )
    return Run(_settings(state_db=str(tmp_path / "ledger.db"), **extra), parts=parts)


def _add_users(run: Run, ids: range, stream: str = "users") -> None:
    for i in ids:
        line = (json.dumps({"user_id": str(i), "metadata": {"n": i}}) + "\n").encode()
        run.buffer.add("users", stream, str(i), line, run.checkpoints.record())


def _summary(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("TARGET_USERPILOT_SUMMARY "))
    summary: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return summary


# The run: two-phase stop


def test_a_stop_reaches_every_lane_at_once_and_only_the_job_in_flight_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeUserpilot()
    fake.jobs_done.clear()  # the job in flight runs until the test says
    states: list[Any] = []
    run = _run(tmp_path, fake, states, batch_size_rows=5)
    try:
        _add_users(run, range(5))  # full: sealed, uploaded, in flight
        run.checkpoints.add_state({"users": 4})
        _add_users(run, range(5, 10))  # sealed, waiting behind the job
        run.summary.stream("events", "events")
        events = run.events()
        for i in range(3):  # these wait for the users before them
            events.add("events", run.checkpoints.record(), i + 1, f"k{i}", SEEN)
        run.deletions.add("users", "users", "gone-1", run.checkpoints.record())
        eventually(lambda: "delete" in fake.kinds(), what="the first deletion request")
        run.deletions.add("users", "users", "gone-2", run.checkpoints.record())  # paced: waits
        eventually(lambda: "status" in fake.kinds(), what="the job in flight")
        seen = len(fake.log)

        run.signal(signal.SIGTERM)
        eventually(lambda: all(lane.stopping for lane in run.lanes), what="every lane stopped")
        with pytest.raises(Terminated, match="Received SIGTERM"):
            run.check()
        fake.jobs_done.set()
        run.close(run.stop.reason)
    finally:
        run.close()

    assert set(fake.kinds(seen)) <= {"status", "close"}  # nothing new after the signal
    assert fake.kinds().count("upload") == 1
    assert states == [{"users": 4}]  # the job in flight was awaited: its STATE went out
    assert _summary(capsys)["total"]["rows_sent"] == 5
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_wait_for_another_clients_job_ends_at_the_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeUserpilot()
    fake.conflict = True
    run = _run(tmp_path, fake, [], batch_size_rows=5)
    try:
        _add_users(run, range(5))
        eventually(lambda: "409" in fake.kinds(), what="a 409")
        run.signal(signal.SIGTERM)
        # The wait for another client's job lasts minutes unless the stop ends it.
        eventually(lambda: not run.jobs.busy, timeout=10, what="the wait to end")
        run.close(run.stop.reason)
    finally:
        run.close()

    assert "upload" not in fake.kinds()
    assert _summary(capsys)["total"]["rows_sent"] == 0
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_signal_after_the_end_of_input_with_nothing_in_flight_leaves_deletions_unsent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeUserpilot()
    run = _run(tmp_path, fake, [])
    try:
        run.deletions.add("users", "users", "gone-1", run.checkpoints.record())
        eventually(lambda: "delete" in fake.kinds(), what="the first deletion request")
        run.deletions.add("users", "users", "gone-2", run.checkpoints.record())  # paced
        ended: list[BaseException] = []

        def finish() -> None:
            try:
                run.finish()  # waits for the deletion paced an hour away
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                ended.append(exc)

        finishing = threading.Thread(target=finish)
        finishing.start()
        eventually(lambda: run.finishing, what="the end of input")
        run.signal(signal.SIGTERM)
        finishing.join(5)  # returns at once: nothing in flight, deletions left unsent
    finally:
        run.close()

    assert len(ended) == 1 and isinstance(ended[0], Terminated)
    assert fake.kinds().count("delete") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("after the end of input: nothing new is sent." in w for w in warnings)
    assert not any("last job" in w for w in warnings)


def test_a_failing_events_lane_ends_the_run_with_its_summary_and_no_spool_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeUserpilot()
    fake.track_error = AuthenticationError("Userpilot refused the API key (HTTP 401).")
    run = _run(tmp_path, fake, [])
    woken = threading.Event()
    run.wake_reader = woken.set
    try:
        events = run.events()
        events.add("events", run.checkpoints.record(), 1, "k1", SEEN)
        woken.wait(5)  # the reading thread would be woken here, waiting for input
        with pytest.raises(AuthenticationError):
            run.check()
        run.close(run.stop.reason)
    finally:
        run.close()

    assert woken.is_set()
    assert "TARGET_USERPILOT_SUMMARY" in capsys.readouterr().err
    assert list((tmp_path / "spool").iterdir()) == []


class _FullDisk:
    """A spool file on a disk that fills up: writes fail, and so does closing (its flush)."""

    def __init__(self, handle: IO[bytes], room: int) -> None:
        self._handle = handle
        self._room = room

    def write(self, data: bytes) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._handle.write(data)

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        self._handle.close()
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_full_spool_folder_leaves_no_file_and_the_summary_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_module._spool_file  # noqa: SLF001 - where a spool file is opened

    def on_a_full_disk(spool_dir: str | None, prefix: str) -> tuple[Any, str]:
        handle, path = real(spool_dir, prefix)
        return _FullDisk(handle, 300), path

    monkeypatch.setattr(batch_module, "_spool_file", on_a_full_disk)
    fake = FakeUserpilot()
    run = _run(tmp_path, fake, [], batch_size_rows=1000)
    try:
        with pytest.raises(Exception, match="No space left") as failure:
            _add_users(run, range(100))
        run.close(failure.value)
    finally:
        run.close()

    assert "TARGET_USERPILOT_SUMMARY" in capsys.readouterr().err
    assert list((tmp_path / "spool").iterdir()) == []


class _FailingLedger:
    """A ledger that fails on every lookup (PostgreSQL gone, a SQLite file broken)."""

    def row_hashes(self, *args: Any) -> dict[str, Any]:
        raise LedgerUnavailable("The ledger (state_db) failed: the database went away.")

    def save_row_hashes(self, *args: Any) -> None:
        raise LedgerUnavailable("The ledger (state_db) failed.")

    def forget_rows(self, *args: Any) -> None:
        pass

    def unsettled_imports(self, *args: Any) -> list[RecordedImport]:
        return []

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        """The rest of the ledger (sync history): answers nothing, records nothing."""
        return lambda *args, **kwargs: None


def test_a_ledger_failing_as_a_batch_goes_up_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeUserpilot()
    parts_ledger = _FailingLedger()
    spool = tmp_path / "spool"
    spool.mkdir()
    run = Run(
        _settings(skip_unchanged=True, batch_size_rows=5),
        parts=RunParts(client=fake, ledger=parts_ledger, spool_dir=str(spool)),  # type: ignore[arg-type]  # a stand-in
    )
    try:
        _add_users(run, range(5))  # sealed: skip_unchanged looks it up as it goes up
        with pytest.raises(LedgerUnavailable):
            run.finish()
        run.close(run.stop.reason)
    finally:
        run.close()

    assert "upload" not in fake.kinds()
    assert "TARGET_USERPILOT_SUMMARY" in capsys.readouterr().err
    assert list(spool.iterdir()) == []


def test_a_slow_ledger_holds_up_neither_the_reading_thread_nor_the_buffer(tmp_path: Path) -> None:
    """skip_unchanged looks rows up on the job lane's thread, outside the buffer's lock."""
    release = threading.Event()

    class SlowLedger(_FailingLedger):
        @override
        def row_hashes(self, *args: Any) -> dict[str, Any]:
            release.wait(10)  # a PostgreSQL retry
            return {}

        @override
        def save_row_hashes(self, *args: Any) -> None:
            pass

    fake = FakeUserpilot()
    run = Run(
        _settings(skip_unchanged=True, batch_size_rows=2),
        parts=RunParts(client=fake, ledger=SlowLedger(), spool_dir=str(tmp_path)),  # type: ignore[arg-type]  # a stand-in
    )
    try:
        _add_users(run, range(2))  # sealed; the lane looks it up, and waits on the ledger
        eventually(lambda: run.jobs.busy, what="the lane to take the batch")
        started = time.monotonic()
        _add_users(run, range(2, 5))  # one more sealed batch, and an open one: never blocks
        took = time.monotonic() - started
        release.set()
        run.finish()
    finally:
        release.set()
        run.close()

    # Blocked on the ledger, adding would wait its 10 s; the bound leaves a loaded machine room.
    assert took < 5
    assert fake.kinds().count("upload") == 3


# Each lane with a fake client


def test_the_deletion_lane_sends_no_remaining_half_of_a_split_request_after_a_stop() -> None:
    fake = FakeUserpilot()
    fake.refuse_deletions_over = 2
    checkpoints = Checkpoints(write=lambda value: None)
    lane = DeletionLane(fake, checkpoints, RunSummary(), pace=DeletionPace(0))
    fake.on_delete = lane.stop  # the stop comes as the first half is accepted
    try:
        for i in range(8):
            lane.add("users", "users", f"u{i}", checkpoints.record())
        eventually(lambda: "delete" in fake.kinds(), what="the first accepted piece")
        assert lane.join(timeout=5)
    finally:
        lane.close()

    assert fake.kinds().count("delete") == 1
    assert checkpoints.held == 1  # the request is not durable: no STATE passes it


class _SlowKeys:
    """The ledger's event keys, with a lookup that waits until the test releases it."""

    def __init__(self, release: threading.Event) -> None:
        self.looking = threading.Event()
        self._release = release

    def accepted_events(self, scope: str, stream: str, keys: Any) -> set[str]:
        self.looking.set()
        self._release.wait(30)  # a PostgreSQL reconnect, or a slow network
        return set()

    def add_accepted_events(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_adding_an_event_never_waits_for_the_lanes_ledger_lookup() -> None:
    """The dispatcher asks the ledger outside the lane's lock: the reading thread goes on."""
    release = threading.Event()
    safety = threading.Timer(10, release.set)  # the old code would block add() until then
    keys = _SlowKeys(release)
    checkpoints = Checkpoints(write=lambda value: None)
    lane = EventLane(
        FakeUserpilot(),
        checkpoints,
        RunSummary(),
        RejectLog(),
        pace=EventPace(None),
        keys=keys,
        scope="test",
    )
    safety.start()
    try:
        lane.add("events", checkpoints.record(), 1, "k1", SEEN)
        assert keys.looking.wait(5)  # the dispatcher is inside the lookup

        lane.add("events", checkpoints.record(), 2, "k2", SEEN)

        assert not release.is_set()  # add returned while the lookup still waited
        release.set()
        lane.wait_idle()
    finally:
        release.set()
        safety.cancel()
        lane.close()
    assert lane.sent == 2


def test_adding_an_event_never_waits_for_a_state_being_written() -> None:
    """A finished event releases its hold, which may write STATE to a stdout that is slow to
    read; that happens outside the lane's lock and the checkpoints' own, so add() goes on."""
    release = threading.Event()
    writing = threading.Event()
    written: list[Any] = []
    safety = threading.Timer(10, release.set)

    def slow_stdout(value: Any) -> None:
        writing.set()
        release.wait(30)  # the consumer of stdout is not reading
        written.append(value)

    checkpoints = Checkpoints(write=slow_stdout)
    lane = EventLane(
        FakeUserpilot(),
        checkpoints,
        RunSummary(),
        RejectLog(),
        pace=EventPace(None),
        keys=None,
        scope="test",
    )
    safety.start()
    try:
        lane.add("events", checkpoints.record(), 1, "k1", SEEN)
        checkpoints.add_state({"after": 1})  # held until the event is accepted
        assert writing.wait(5)  # accepted: a sender is writing the STATE

        lane.add("events", checkpoints.record(), 2, "k2", SEEN)

        assert not release.is_set()  # add returned while the STATE was still being written
        release.set()
        lane.wait_idle()
    finally:
        release.set()
        safety.cancel()
        lane.close()
    assert written == [{"after": 1}]
    assert lane.sent == 2


def test_the_event_lane_sends_nothing_after_a_stop_during_its_pace() -> None:
    fake = FakeUserpilot()
    checkpoints = Checkpoints(write=lambda value: None)
    lane = EventLane(
        fake,
        checkpoints,
        RunSummary(),
        RejectLog(),
        pace=EventPace(2),  # one event every 30 s
        keys=None,
        scope="test",
    )
    try:
        for i in range(3):
            lane.add("events", checkpoints.record(), i + 1, f"k{i}", SEEN | {"user_id": str(i)})
        eventually(lambda: "track" in fake.kinds(), what="the first event")
        started = time.monotonic()
        lane.stop()
        assert lane.join(timeout=5)
        took = time.monotonic() - started
    finally:
        lane.close()

    assert fake.kinds().count("track") == 1
    assert took < 10  # the pace's next slot is 30 s away: the stop did not wait for it


def test_the_deletion_pace_runs_on_an_injected_clock() -> None:
    clock = SimulatedClock(100.0)
    pace = DeletionPace(2.0, clock=clock)

    assert pace.delay() <= 0
    pace.answered()
    assert pace.delay() == pytest.approx(2.0)
    clock.advance(1.5)
    assert pace.delay() == pytest.approx(0.5)


# Signals


class _Calls:
    def __init__(self) -> None:
        self.stops: list[tuple[BaseException, str | None]] = []
        self.abandoned = 0
        self.event = threading.Event()

    def stop(self, reason: BaseException, name: str | None) -> None:
        self.stops.append((reason, name))
        self.event.set()

    def abandon(self) -> None:
        self.abandoned += 1
        self.event.set()


def test_signals_a_few_ms_apart_count_once_and_the_first_one_names_the_stop() -> None:
    now = [0.0]
    calls = _Calls()
    stop = RunStop(stop=calls.stop, abandon=calls.abandon, clock=lambda: now[0])
    try:
        stop.signal(signal.SIGINT)
        now[0] += 0.005
        stop.signal(signal.SIGTERM)  # Meltano forwarding the same Ctrl-C
        eventually(lambda: calls.stops, what="the stop")
        time.sleep(0.1)  # what is tested: nothing more happens
        assert calls.abandoned == 0
        assert [name for _, name in calls.stops] == ["SIGINT"]
        assert "Received SIGINT" in str(stop.reason)

        now[0] += 1.0
        stop.signal(signal.SIGTERM)  # a real second signal
        eventually(lambda: calls.abandoned, what="the abandon")
    finally:
        stop.close()

    assert len(calls.stops) == 1 and stop.abandoned


def test_a_signal_after_a_lane_failed_stops_at_once() -> None:
    calls = _Calls()
    stop = RunStop(stop=calls.stop, abandon=calls.abandon)
    failure = AuthenticationError("refused")
    try:
        stop.failed(failure)
        eventually(lambda: calls.stops, what="the stop")
        stop.signal(signal.SIGINT)  # a real Ctrl-C while the run stops
        eventually(lambda: calls.abandoned, what="the abandon")
    finally:
        stop.close()

    assert calls.stops == [(failure, None)]
    assert stop.reason is failure


def test_summary_counters_from_many_threads_add_up() -> None:
    summary = RunSummary()

    def count() -> None:
        for _ in range(5000):
            summary.add("events", "events_sent")
            summary.add("events", "rejected")

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = summary.as_dict()["total"]
    assert (total["events_sent"], total["rejected"]) == (40_000, 40_000)
