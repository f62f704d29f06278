"""One run's wiring: built once from the settings, closed once.

Userpilot's one-job rule and STATE release belong to the whole process, not to a stream, so the
target builds one :class:`Run` and every sink is handed the few pieces it needs
(:class:`SinkServices`). The run calls down into its parts; they call back only through the
callbacks it hands them: a lane's failure to :class:`~target_userpilot.stop.RunStop`, the one
path a stop takes; the job lane's ``before_upload`` (``skip_unchanged``,
:meth:`Run._drop_unchanged`) and the deletion lane's ``accepted`` (mirror deletes forget the
ids); the checkpoints' ``before_write`` (mirror deletes record a STATE's ids first).

Threads: the main thread reads the input itself (``input/reader.py``: it polls the input and
is woken through a pipe) and runs the sinks; each lane has its threads; the stop thread acts on
signals and lane failures. Nothing raises into the main thread (a signal handler only notes the
signal): it checks :meth:`Run.check` between lines and per record, and raises there the reason
the run stops.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.batching.buffer import BatchBuffer
from target_userpilot.checkpoints import Checkpoints, hold_back
from target_userpilot.clock import REAL_CLOCK, Clock
from target_userpilot.errors import NothingLoaded, Terminated
from target_userpilot.lanes import Lane
from target_userpilot.lanes.deletions import DeletionLane
from target_userpilot.lanes.events import EventLane, Tracker
from target_userpilot.lanes.jobs import JobLane
from target_userpilot.lanes.pace import DELETE_INTERVAL_SECONDS, DeletionPace, EventPace, JobPace
from target_userpilot.ledger.cli import jobs_command
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.store import Ledger
from target_userpilot.logs import SUMMARY_FIELD, json_stderr, request_duration
from target_userpilot.memory.history import SyncHistory
from target_userpilot.memory.imported import ImportedEvents
from target_userpilot.memory.mirror import Guard, MirrorDeletes
from target_userpilot.memory.runs import RunRecord
from target_userpilot.memory.unchanged import ConfirmedRows
from target_userpilot.plan.tally import PlanCounter
from target_userpilot.privacy.redact import password_of
from target_userpilot.records.object_keys import ObjectKeys
from target_userpilot.records.routing import EVENTS
from target_userpilot.rejects import RejectLog
from target_userpilot.retry import RetryPolicy
from target_userpilot.settings import Settings
from target_userpilot.stop import RunStop
from target_userpilot.summary import RunSummary, count, nothing_loaded
from target_userpilot.userpilot.client import UserpilotClient
from target_userpilot.userpilot.dryrun import DryRunClient

logger = logging.getLogger("target_userpilot")

#: How long, once a second signal abandoned the run, each lane's threads get to end.
ABANDON_JOIN_SECONDS = 0.5


@dataclass(frozen=True)
class SinkServices:
    """What a sink is handed: nothing more."""

    settings: Settings
    summary: RunSummary
    rejects: RejectLog
    checkpoints: Checkpoints
    #: Where rows go (None in a plan, which counts them instead).
    buffer: BatchBuffer | None
    #: Raises why the run stops (a signal, a lane's failure), if it does (cheap: per record).
    check: Callable[[], None]
    #: hard_delete: where the ids of deleted source records go.
    deletions: DeletionLane | None
    #: The events lane, started on first use (most runs send no events).
    events: Callable[[], EventLane] | None
    #: The flattened keys sent so far under each object property of a stream (one per stream,
    #: kept for the run, filled from the ledger when the run has one).
    object_keys: Callable[[str], ObjectKeys]
    #: Writes the keys a stream's rows are about to send for the first time to the ledger.
    save_object_keys: Callable[[str, ObjectKeys], None]
    #: hard_delete with a ledger: full-table versions and the deletes they cause.
    mirror: MirrorDeletes | None
    #: One read-only request that proves the key works (Meltano's loader test stream).
    check_connection: Callable[[], str]
    #: ``plan_path``: each record's outcome is counted here, and nothing else is done with it.
    plan: PlanCounter | None = None


@dataclass
class RunParts:
    """What a test may hand a run instead of what the settings would build.

    The clients stand for Userpilot (see the ``Uploader``, ``Deleter`` and ``Tracker``
    protocols of the lanes), the paces run on the test's clock, ``write_state`` takes STATE
    messages instead of stdout. ``clock`` is what every pace, lane, the buffer, the retry
    policy and the ledger's reconnect wait on (a simulated one runs the run in simulated time);
    paces handed in keep their own.
    """

    clock: Clock = REAL_CLOCK
    client: Any = None
    event_client: Tracker | None = None
    ledger: Ledger | None = None
    deletion_pace: DeletionPace | None = None
    event_pace: EventPace | None = None
    spool_dir: str | None = None
    write_state: Callable[[Any], None] | None = None


class Run:
    """The parts of one run: client, buffer, lanes, checkpoints, summary, rejects, ledger."""

    def __init__(
        self,
        settings: Settings,
        *,
        user_agent: str = "target-userpilot",
        parts: RunParts | None = None,
    ) -> None:
        parts = parts or RunParts()
        #: What every wait of the run is waited on.
        self.clock = parts.clock
        #: Set once the run stops: ends the ledger's waits between tries (the lanes have their own).
        self._stopped = threading.Event()
        #: The one retry policy, on the run's clock: Userpilot's calls and the ledger's connection.
        self.retry = RetryPolicy(clock=self.clock)
        self.settings = settings
        self.summary = RunSummary(dry_run=settings.dry_run)
        self.rejects = RejectLog(
            settings.on_invalid_record, settings.rejects_path, summary=self.summary
        )
        # A dry run holds every STATE back: nothing it does is durable in Userpilot.
        write_state = parts.write_state or (hold_back if settings.dry_run else None)
        self.checkpoints = Checkpoints(write=write_state)
        self._parts = parts
        self._finishing = False
        self._closing = False
        self._closed = False
        #: Wakes the reading thread when the run stops while it waits for input (set by the
        #: target to its input reader's ``wake``).
        self.wake_reader: Callable[[], None] | None = None
        self._lanes_lock = threading.Lock()
        self.lanes: list[Lane] = []
        #: The ledger (``state_db``), opened once before any input when a feature needs it.
        self.ledger: Ledger | None = parts.ledger
        #: Entries in the ledger are scoped by account (API host and key fingerprint), or
        #: ``dry-run``.
        self.scope = account_scope(settings.api_url, settings.api_key, dry_run=settings.dry_run)
        #: Names this run's jobs in the sync history (``userpilot-ledger jobs --run``, or
        #: ``meltano invoke target-userpilot:ledger jobs --run``).
        self.run_id = uuid.uuid4().hex[:12]
        #: This run's row in the ledger's ``runs`` (memory/runs.py), from its start to how it
        #: ended; begun once a ledger is open. A dry run records nothing: nothing it does
        #: reaches Userpilot.
        self.record = self._run_record()
        self.unchanged: ConfirmedRows | None = None
        #: events_api import: events are the buffer's third object, sent by the job lane.
        self.importing = settings.events_api == "import"
        importing = self.importing and not settings.dry_run
        if (settings.skip_unchanged or settings.hard_delete or importing) and self.ledger is None:
            # hard_delete: deletions Userpilot accepted are remembered, not requested again, and
            # full-table versions give mirror deletes; import files are recorded before they go
            # up. Whenever it is open, the ledger also keeps the sync history, this run's row in
            # runs, and the flattened keys of object properties, so a null object clears them
            # across runs.
            self.ledger = open_ledger(settings.state_db)
        if self.ledger is not None:
            self._attach(self.ledger)
        if settings.skip_unchanged:
            assert self.ledger is not None
            self.unchanged = ConfirmedRows(self.ledger, self.scope)
        self._object_keys: dict[str, ObjectKeys] = {}
        self.history: SyncHistory | None = None
        if self.ledger is not None:
            self.history = SyncHistory(
                self.ledger,
                self.scope,
                self.run_id,
                keep=settings.ledger_history_entries,
                keep_out=self.unchanged.forget if self.unchanged is not None else None,
            )
        self.client: UserpilotClient | DryRunClient = (
            parts.client if parts.client is not None else self._client(user_agent)
        )
        self.buffer = BatchBuffer(
            self.checkpoints,
            max_rows=settings.batch_size_rows,
            max_bytes=settings.max_file_bytes,
            wait_seconds=float(settings.batch_wait_seconds),
            spool_dir=parts.spool_dir,
            clock=self.clock,
        )
        self.pace = JobPace(settings.rows_per_minute, self.clock)
        # With a ledger, the job lane first settles the import files earlier runs left (any
        # run: a running import job holds the account for every upload).
        self.confirmer = ImportedEvents(
            None if settings.dry_run else self.ledger,
            self.scope,
            self.summary,
            rows=self.unchanged,
            run_id=self.run_id,
        )
        # Started only once the parts that may refuse to open (the ledger) are open: a run that
        # ends before any input leaves no stop thread behind.
        self.stop = RunStop(stop=self._stop_lanes, abandon=self._abandon_lanes)
        self.jobs = JobLane(
            self.client,
            self.buffer,
            self.checkpoints,
            self.summary,
            self.rejects,
            pace=self.pace,
            job_timeout=settings.job_timeout_seconds,
            confirmer=self.confirmer,
            before_upload=self._drop_unchanged if self.unchanged is not None else None,
            history=self.history,
            run_id=self.run_id,
            on_failure=self.stop.failed,
        )
        deletion_pace = parts.deletion_pace or DeletionPace(
            0.0 if settings.dry_run else DELETE_INTERVAL_SECONDS, self.clock
        )
        self.deletions = DeletionLane(
            self.client,
            self.checkpoints,
            self.summary,
            pace=deletion_pace,
            # A deleted profile leaves the skip_unchanged ledger.
            mark_deleted=self.unchanged.mark_deleted if self.unchanged is not None else None,
            forget=self.unchanged.forget_stored if self.unchanged is not None else None,
            accepted=self._deletion_accepted if settings.hard_delete else None,
            history=self.history,
            on_failure=self.stop.failed,
        )
        self._add_lane(self.jobs)
        self._add_lane(self.deletions)
        self.mirror = self._mirror_deletes()
        self._user_agent = user_agent
        self.event_lane: EventLane | None = None
        self._event_client: UserpilotClient | None = None
        self.services = SinkServices(
            settings,
            self.summary,
            self.rejects,
            self.checkpoints,
            self.buffer,
            self.check,
            deletions=self.deletions,
            events=self.events,
            object_keys=self.object_keys,
            save_object_keys=self.save_object_keys,
            mirror=self.mirror,
            check_connection=self.check_connection,
        )
        self._begin_record()

    def _run_record(self) -> RunRecord | None:
        """This run's row in ``runs``, or None for a run that records none (a dry run)."""
        settings = self.settings
        if settings.dry_run:
            return None
        secrets = [settings.api_key or "", password_of(settings.state_db)]
        return RunRecord(self.scope, self.run_id, secrets=secrets)

    def _begin_record(self) -> None:
        """The run has a ledger: its row in ``runs`` goes in (once), if it keeps one."""
        if self.record is not None and self.ledger is not None:
            self.record.begin(self.ledger)

    def _mirror_deletes(self) -> MirrorDeletes | None:
        """hard_delete with a ledger: full-table versions and the deletions they cause."""
        settings = self.settings
        if not settings.hard_delete or self.ledger is None:
            return None
        mirror = MirrorDeletes(
            self.ledger,
            self.scope,
            self.checkpoints,
            self.deletions,
            flush=self.buffer.flush,
            check=self.check,
            guard=Guard(settings.mirror_delete_max_percent, settings.mirror_delete_floor),
            dry_run=settings.dry_run,
            close_at_end_of_input=settings.mirror_delete_on_end_of_input,
            delete_filtered=settings.mirror_delete_filtered_streams,
        )
        # The ids of the rows before a STATE are in the ledger before it goes out: a copy
        # resumed from it (even after a kill -9) then keeps them.
        self.checkpoints.before_write = mirror.persist
        return mirror

    def object_keys(self, stream: str) -> ObjectKeys:
        """The object keys of ``stream``: one for the run, starting from the ledger's."""
        keys = self._object_keys.get(stream)
        if keys is None:
            known = self.ledger.object_keys(self.scope, stream) if self.ledger is not None else {}
            keys = self._object_keys[stream] = ObjectKeys(known)
        return keys

    def save_object_keys(self, stream: str, keys: ObjectKeys) -> None:
        """Record keys before the first row sending them goes up (a crash then loses none)."""
        new = keys.take_new()
        if new and self.ledger is not None:
            self.ledger.add_object_keys(self.scope, stream, new)

    def _deletion_accepted(self, object: str, ids: list[str]) -> None:
        """Userpilot accepted deleting ``ids``: no later version deletes them again."""
        if self.ledger is not None:
            self.ledger.forget_version_ids(self.scope, object, ids)

    def events(self) -> EventLane:
        """The events lane, built when the first stream routed to events appears."""
        if self.event_lane is not None:
            return self.event_lane
        settings = self.settings
        client: Tracker
        if settings.dry_run:
            # No network: nothing to pace.
            pace = self._parts.event_pace or EventPace(None, self.clock)
            client = self._parts.event_client or self.client
            keys = None  # a dry run sends nothing, so it records nothing as accepted either
        else:
            pace = self._parts.event_pace or EventPace(
                float(settings.events_per_minute), self.clock
            )
            if self._parts.event_client is not None:
                client = self._parts.event_client
            else:
                # A client of its own: its 429s slow the events' pace, not anyone else's, and
                # the pace decides when a refused event goes again.
                client = self._event_client = UserpilotClient(
                    settings.api_url,
                    settings.api_key or "",
                    timeout=(10.0, settings.request_timeout_seconds),
                    retry=self.retry,
                    user_agent=self._user_agent,
                    pace=pace,
                    observe=request_duration,
                )
            if self.ledger is None:
                self.ledger = self._attach(open_ledger(settings.state_db))
                self._warn_unsettled_imports(self.ledger)
                self._begin_record()
            keys = self.ledger
        self.event_lane = EventLane(
            client,
            self.checkpoints,
            self.summary,
            self.rejects,
            pace=pace,
            keys=keys,
            scope=self.scope,
            run_id=self.run_id,
            on_failure=self.stop.failed,
            spool_dir=self._parts.spool_dir,
            pending=self.buffer.pending,
        )
        self._add_lane(self.event_lane)
        return self.event_lane

    def _client(self, user_agent: str) -> UserpilotClient | DryRunClient:
        """Userpilot's client, on the run's retry policy; the dry run's stand-in for it."""
        settings = self.settings
        if settings.dry_run:
            return DryRunClient(settings.output_dir)
        return UserpilotClient(
            settings.api_url,
            settings.api_key or "",
            upload_format=settings.upload_format,
            timeout=(10.0, settings.request_timeout_seconds),
            retry=self.retry,
            user_agent=user_agent,
            observe=request_duration,
        )

    def _attach(self, ledger: Ledger) -> Ledger:
        """The ledger's reconnect waits on the run's clock, and ends at the run's stop."""
        ledger.retry = self.retry
        ledger.stop = self._stopped
        return ledger

    def _warn_unsettled_imports(self, ledger: Ledger) -> None:
        """Track mode opened the ledger after the job lane began: it cannot settle the import
        files an earlier run left, so say what that means."""
        unsettled = ledger.unsettled_imports(self.scope)
        if unsettled:
            logger.warning(
                "The ledger holds %s of earlier runs whose jobs were not settled (%s): track "
                "requests do not settle them, so an event of theirs the tap sends again is sent "
                "again. Run once with events_api 'import' (or with skip_unchanged) to settle "
                "them first.",
                count(len(unsettled), "Import API file"),
                count(sum(file.total for file in unsettled), "event"),
            )

    def _add_lane(self, lane: Lane) -> None:
        with self._lanes_lock:
            self.lanes.append(lane)
            stopped = self.stop.reason is not None
        if stopped:
            lane.stop()  # built after the stop (its SCHEMA was read meanwhile): no work

    def _all_lanes(self) -> list[Lane]:
        with self._lanes_lock:
            return list(self.lanes)

    def check_connection(self) -> str:
        """What ``--check-connection`` checks, in the run: say how it went, or raise.

        A refused key raises :class:`AuthenticationError` (HTTP 401/403), so the run, and
        Meltano's ``config test`` that sent it, fail; nothing is written either way.
        """
        if isinstance(self.client, DryRunClient):
            return "dry_run is on, so Userpilot was not contacted"
        self.client.list_jobs()
        return "the API key was accepted (one read-only request, as --check-connection)"

    def check(self) -> None:
        """Raise why the run stops, if it does: a signal, a lane's failure, STATE undeliverable.

        The reading thread calls this per record and between input lines: the one place the
        stop reaches it.
        """
        reason = self.stop.reason
        if reason is not None:
            raise reason
        for lane in self.lanes:
            lane.raise_error()
        self.checkpoints.raise_error()

    def add_state(self, value: object) -> None:
        """A STATE message arrived; it goes out once the records before it are durable."""
        if self.mirror is not None:
            self.mirror.state()
        self.checkpoints.add_state(value)
        self.checkpoints.raise_error()

    @property
    def finishing(self) -> bool:
        """True once the end of input was read."""
        return self._finishing

    def signal(self, signum: int) -> None:
        """A stop signal arrived (the signal handler): noted only; the stop thread acts on it."""
        self.stop.signal(signum)

    def finish(self) -> None:
        """End of input: everything open goes up; wait until it is durable.

        A stop meanwhile (a signal after the end of input) lets the work in flight end; if
        anything was left unsent then, the run ends as stopped.
        """
        self.stop.act_now()  # a signal that came with the last lines stops the run as before
        self.check()
        self._finishing = True
        self.buffer.end_input()
        if self.event_lane is not None:
            self.event_lane.end_input()
        for lane in self._all_lanes():
            lane.wait_idle()
        if self.mirror is not None:
            self.mirror.finish(self.checkpoints.record())
            self.deletions.wait_idle()
        self.checkpoints.raise_error()
        reason = self.stop.reason
        if reason is not None and (self.checkpoints.held or self.stop.abandoned):
            raise reason
        total = self.summary.as_dict(final=False)["total"]
        if nothing_loaded(total):
            msg = (
                f"Every record that should have become a Userpilot row was refused "
                f"({total['rejected']} rejected, see the warnings above"
                f"{' and rejects_path' if self.settings.rejects_path else ''}): nothing was "
                "loaded, so the run is not a success. Fix the records or the mapping and rerun."
            )
            raise NothingLoaded(msg)

    def close(self, error: BaseException | None = None) -> None:
        """Once: stop every lane, let the work in flight end (its STATE goes out); release all.

        Every part is released and the summary printed whatever fails on the way: a failing
        part is logged and the next one still runs, so no spool file is left behind.
        """
        if self._closed:
            return
        self._closed = True
        self._closing = True
        if error is not None:
            self.stop.stop_now(error)
        if self.stop.reason is not None and not self.stop.abandoned:
            # Phase two: every lane was told to take no new work; now their work in flight
            # ends, one lane after the other (a second signal ends these waits at once).
            for lane in self._all_lanes():
                lane.join()
            for lane in self._all_lanes():
                failure = lane.failed
                if failure is not None and failure is not self.stop.reason:
                    logger.debug("While stopping, the work in flight also failed: %s", failure)
        if self.mirror is not None and error is not None:
            # Ids of rows already durable, so a copy the tap resumes later keeps them.
            try:
                self.mirror.settle()
            except Exception as exc:  # noqa: BLE001 - the first failure is reported
                logger.debug("While stopping, recording the version's ids failed: %s", exc)
        steps: list[tuple[str, Callable[[], None]]] = [("the batch files", self.buffer.discard)]
        grace = ABANDON_JOIN_SECONDS if self.stop.abandoned else 5.0
        steps += [
            (f"the {type(lane).__name__}", functools.partial(lane.close, grace=grace))
            for lane in self._all_lanes()
        ]
        steps.append(("the client", self.client.close))
        if self._event_client is not None:
            steps.append(("the events client", self._event_client.close))
        if self.unchanged is not None:
            steps.append(("skip_unchanged", self.unchanged.close))
        if self.stop.reason is not None:
            steps.append(("what was left unsent", self._note_unsent))
        # The counts are final once the lanes are joined and what was left is noted.
        steps.append(("the run's record in the ledger", functools.partial(self._end_record, error)))
        if self.ledger is not None:
            steps.append(("the ledger", self.ledger.close))
        steps.append(("the summary", self._log_summary))
        steps.append(("the stop thread", self.stop.close))
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the next part must still be released
                logger.warning("Closing %s failed: %s", what, exc)

    # The stop thread (see stop.py)

    def _stop_lanes(self, reason: BaseException, signal_name: str | None) -> None:
        """Phase one of a stop: every lane takes no new work, all at once; the reader wakes.

        After a stop signal nothing new is uploaded; after a failure the batches already sealed
        (records read before it) still go up. Deletions and events never start after a stop.
        """
        self._stopped.set()  # first: no ledger retry waits after it
        lanes = self._all_lanes()
        send_sealed = not isinstance(reason, Terminated)
        for lane in lanes:
            lane.stop(send_sealed=send_sealed)
        if signal_name is not None:
            self._announce_stop(signal_name)
        if not self._closing and self.wake_reader is not None:
            self.wake_reader()

    def _abandon_lanes(self) -> None:
        """A second signal: every wait ends at once."""
        for lane in self._all_lanes():
            lane.abandon()
        if not self._closing and self.wake_reader is not None:
            self.wake_reader()

    def _announce_stop(self, name: str) -> None:
        """Say what the run still waits for, and only that."""
        waiting = []
        if self.jobs.busy:
            waiting.append("the last job" if self._finishing else "the job in flight")
        if self.deletions.busy:
            waiting.append("the deletion request in flight")
        if self.event_lane is not None and self.event_lane.sending:
            waiting.append("the events in flight")
        what = " and ".join(waiting)
        if self._finishing:
            head = f"Received {name} after the end of input: nothing new is sent"
            tail = (
                f"; waiting for {what} to end, so STATE can go out; send the signal again to "
                "stop at once."
                if waiting
                else "."
            )
        else:
            head = f"Received {name}: no further input is read and nothing new is sent"
            tail = (
                f". Waiting for {what} to end, so its STATE can go out; send the signal again "
                "to stop at once."
                if waiting
                else "."
            )
        logger.warning("%s%s", head, tail)

    def _drop_unchanged(self, batch: SealedBatch) -> None:
        """skip_unchanged, just before a batch goes up (job lane): leave out rows Userpilot
        already holds. On the lane's thread and outside the buffer's lock, so a slow ledger
        holds up neither the reading thread nor the buffer."""
        assert self.unchanged is not None
        if batch.object == EVENTS:
            return  # events are left out by their keys (ImportedEvents.prepare)
        before = batch.row_streams
        dropped = self.unchanged.drop_unchanged(batch)
        if not dropped:
            return
        if before:
            gone = Counter(s for i, s in before.items() if i not in batch.row_streams)
        else:
            gone = Counter({batch.stream: dropped})
        for stream, n in gone.items():
            self.summary.add(stream, "unchanged", n)
        logger.info(
            "Skipped %s; %d left to send.",
            count(dropped, f"unchanged {batch.object} row"),
            batch.rows,
        )

    def _held_back(self) -> str:
        """A dry run's one line on STATE: how many it held back, and why."""
        received = self.checkpoints.received
        why = (
            "nothing reached Userpilot, so the bookmark stays where it was and the next real run "
            "loads every record this one previewed."
        )
        if not received:
            return f"Dry run: no STATE was written (the input held none); {why}"
        if received == 1:
            return f"Dry run: the input's STATE message was held back, not written to stdout: {why}"
        return (
            f"Dry run: the {received} STATE messages of the input were held back, none written "
            f"to stdout: {why}"
        )

    def _note_unsent(self) -> None:
        """The run stopped: put what it never sent, and the jobs it left, in the summary."""
        rows = self.buffer.unsent + self.jobs.unsent
        self.summary.left_unsent(
            rows=dict(rows),
            deletions=self.deletions.unsent(),
            events=self.event_lane.unsent() if self.event_lane is not None else 0,
            jobs_left=self.jobs.left_to_userpilot,
        )

    def _end_record(self, error: BaseException | None) -> None:
        """How the run ended, with the summary's counts, into its row in ``runs``."""
        if self.record is None:
            return
        self._observed_pace()
        # Stopped by a signal after the end of input, with nothing left: a success all the same.
        signal_after_input = error is None and isinstance(self.stop.reason, Terminated)
        self.record.end(error, self.summary.as_dict(), signal_after_input=signal_after_input)

    def _observed_pace(self) -> None:
        """Userpilot's pace as this run's jobs showed it, into the summary."""
        if self.pace.observed and not self.settings.dry_run:
            self.summary.userpilot_rate = self.pace.rows_per_minute()
            self.summary.userpilot_job_seconds = self.pace.fixed

    def _log_summary(self) -> None:
        """The end-of-run account on stderr, in the form of the run's logs (``logs.py``).

        Plain logs: a table for people, and a ``TARGET_USERPILOT_SUMMARY`` JSON line for
        schedulers, written past the log format so that it starts the line. JSON logs: one
        record, its fields the same JSON; the prefixed line is left out, since it would be the
        one line of stderr that is not a JSON record.
        """
        self._observed_pace()
        data = self.summary.as_dict()
        structured = json_stderr(logger)
        if structured:
            # Past the logger's level, as the plain line is written past the log format:
            # schedulers read it even from a run logged at WARNING.
            summary = logger.makeRecord(
                logger.name,
                logging.INFO,
                __file__,
                0,
                "%s",
                (self.summary.message(data),),
                None,
                extra={SUMMARY_FIELD: data},
            )
            logger.handle(summary)
        else:
            for line in self.summary.table(data).splitlines():
                logger.info("%s", line)
        if self.settings.dry_run:
            logger.info("%s", self._held_back())
        # Under Meltano, the command its user can type there (ledger/cli.py).
        if self.history is not None and self.history.keep:
            logger.info(
                "This run's jobs are in the ledger's sync history: %s",
                jobs_command(self.run_id, self.settings.state_db),
            )
        elif self.record is not None and self.record.begun:
            # Track events alone open the ledger with the first events stream: no sync history,
            # but the run's row and its events are there.
            logger.info(
                "This run is in the ledger: %s", jobs_command(self.run_id, self.settings.state_db)
            )
        if not structured:
            sys.stderr.write(self.summary.json_line(data) + "\n")
            sys.stderr.flush()
