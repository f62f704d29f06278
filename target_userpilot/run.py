"""One run's wiring: built once from the settings, closed once.

Userpilot's one-job rule and STATE release belong to the whole process, not to a stream, so the
target builds one :class:`Run` and every sink is handed the few pieces it needs
(:class:`SinkServices`). The run calls down into its parts; none of them calls back into it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from target_userpilot.batch import SealedBatch
from target_userpilot.buffer import BatchBuffer
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.client import UserpilotClient
from target_userpilot.dryrun import DryRunClient
from target_userpilot.errors import NothingLoaded, Terminated
from target_userpilot.history import SyncHistory
from target_userpilot.lanes import Lane
from target_userpilot.lanes.deletions import DELETE_INTERVAL_SECONDS, DeletionLane
from target_userpilot.lanes.events import EventLane, EventPace
from target_userpilot.lanes.imports import ImportedEvents
from target_userpilot.lanes.jobs import JobLane
from target_userpilot.lanes.pace import JobPace
from target_userpilot.ledger import Ledger, account_scope, open_ledger
from target_userpilot.rejects import RejectLog
from target_userpilot.rows import EVENTS
from target_userpilot.settings import Settings
from target_userpilot.summary import RunSummary
from target_userpilot.unchanged import ConfirmedRows

logger = logging.getLogger("target_userpilot")


@dataclass(frozen=True)
class SinkServices:
    """What a sink is handed: nothing more."""

    settings: Settings
    summary: RunSummary
    rejects: RejectLog
    checkpoints: Checkpoints
    buffer: BatchBuffer
    #: Raises the error that stopped the run's lanes, if any (cheap: called per record).
    check: Callable[[], None]
    #: hard_delete: where the ids of deleted source records go.
    deletions: DeletionLane
    #: The events lane, started on first use (most runs send no events).
    events: Callable[[], EventLane]
    #: One read-only request that proves the key works (Meltano's loader test stream).
    check_connection: Callable[[], str]


class Run:
    """The parts of one run: client, buffer, lanes, checkpoints, summary, rejects, ledger."""

    def __init__(self, settings: Settings, *, user_agent: str = "target-userpilot") -> None:
        self.settings = settings
        self.summary = RunSummary(dry_run=settings.dry_run)
        self.rejects = RejectLog(settings.on_invalid_record, settings.rejects_path)
        self.checkpoints = Checkpoints()
        self._signals = 0
        self._finishing = False
        self._closed = False
        #: The ledger (``state_db``), opened once before any input when a feature needs it.
        self.ledger: Ledger | None = None
        #: Entries in the ledger are scoped by account (API host and key fingerprint), or
        #: ``dry-run``.
        self.scope = account_scope(settings.api_url, settings.api_key, dry_run=settings.dry_run)
        #: Names this run's jobs in the sync history (``userpilot-ledger jobs --run``).
        self.run_id = uuid.uuid4().hex[:12]
        self.unchanged: ConfirmedRows | None = None
        if settings.skip_unchanged or settings.hard_delete:
            # hard_delete: deletions Userpilot accepted are remembered, not requested again.
            self.ledger = open_ledger(settings.state_db)
        if settings.skip_unchanged:
            assert self.ledger is not None
            self.unchanged = ConfirmedRows(self.ledger, self.scope)
        self.history: SyncHistory | None = None
        if self.ledger is not None:
            self.history = SyncHistory(
                self.ledger,
                self.scope,
                self.run_id,
                keep=settings.ledger_history_entries,
                keep_out=self.unchanged.forget if self.unchanged is not None else None,
            )
        self.client: UserpilotClient | DryRunClient
        if settings.dry_run:
            self.client = DryRunClient(settings.output_dir)
        else:
            self.client = UserpilotClient(
                settings.api_url,
                settings.api_key or "",
                upload_format=settings.upload_format,
                timeout=(10.0, settings.request_timeout_seconds),
                user_agent=user_agent,
            )
        self.buffer = BatchBuffer(
            self.checkpoints,
            max_rows=settings.batch_size_rows,
            max_bytes=settings.max_file_bytes,
            wait_seconds=float(settings.batch_wait_seconds),
            on_seal=self._drop_unchanged if self.unchanged is not None else None,
        )
        self.pace = JobPace(settings.rows_per_minute)
        #: events_api import: events are the buffer's third object, sent by the job lane.
        self.importing = settings.events_api == "import"
        if self.importing and not settings.dry_run and self.ledger is None:
            self.ledger = open_ledger(settings.state_db)
        self.confirmer = ImportedEvents(
            None if settings.dry_run or not self.importing else self.ledger,
            self.scope,
            self.summary,
            rows=self.unchanged,
        )
        self.jobs = JobLane(
            self.client,
            self.buffer,
            self.checkpoints,
            self.summary,
            self.rejects,
            pace=self.pace,
            job_timeout=settings.job_timeout_seconds,
            confirmer=self.confirmer,
            history=self.history,
            run_id=self.run_id,
            wake=self._wake_reader,
        )
        self.deletions = DeletionLane(
            self.client,
            self.checkpoints,
            self.summary,
            interval=0.0 if settings.dry_run else DELETE_INTERVAL_SECONDS,
            # A deleted profile leaves the skip_unchanged ledger.
            forget=self.unchanged.forget if self.unchanged is not None else None,
            history=self.history,
            wake=self._wake_reader,
        )
        self.lanes: list[Lane] = [self.jobs, self.deletions]
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
            check_connection=self.check_connection,
        )

    def events(self) -> EventLane:
        """The events lane, built when the first stream routed to events appears."""
        if self.event_lane is not None:
            return self.event_lane
        settings = self.settings
        if settings.dry_run:
            pace = EventPace(None)  # no network, so nothing to pace
            client: UserpilotClient | DryRunClient = self.client
            keys = None  # a dry run sends nothing, so it records nothing as accepted either
        else:
            pace = EventPace(float(settings.events_per_minute))
            # A client of its own: its 429s slow the events' pace, not anyone else's.
            client = self._event_client = UserpilotClient(
                settings.api_url,
                settings.api_key or "",
                timeout=(10.0, settings.request_timeout_seconds),
                user_agent=self._user_agent,
                on_rate_limited=pace.slow_down,
            )
            if self.ledger is None:
                self.ledger = open_ledger(settings.state_db)
            keys = self.ledger
        self.event_lane = EventLane(
            client,
            self.checkpoints,
            self.summary,
            self.rejects,
            pace=pace,
            keys=keys,
            scope=self.scope,
            wake=self._wake_reader,
        )
        self.lanes.append(self.event_lane)
        return self.event_lane

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
        """Raise what stopped a lane or the delivery of STATE, if anything did."""
        for lane in self.lanes:
            lane.raise_error()
        self.checkpoints.raise_error()

    def add_state(self, value: object) -> None:
        """A STATE message arrived; it goes out once the records before it are durable."""
        self.checkpoints.add_state(value)
        self.checkpoints.raise_error()

    def finish(self) -> None:
        """End of input: everything open goes up; wait until it is durable."""
        self._finishing = True
        self.buffer.end_input()
        if self.event_lane is not None:
            self.event_lane.end_input()
        for lane in self.lanes:
            lane.wait_idle()
        self.checkpoints.raise_error()
        total = self.summary.as_dict(final=False)["total"]
        loaded = (
            total["rows_sent"] or total["unchanged"] or total["deleted"] or total["deleted_before"]
        )
        if total["rejected"] and not (loaded or total["events_sent"] or total["events_skipped"]):
            msg = (
                f"Every record that should have become a Userpilot row was refused "
                f"({total['rejected']} rejected, see the warnings above"
                f"{' and rejects_path' if self.settings.rejects_path else ''}): nothing was "
                "loaded, so the run is not a success. Fix the records or the mapping and rerun."
            )
            raise NothingLoaded(msg)

    def terminate(self, signum: int) -> None:
        """A termination signal arrived (handler, main thread): stop the run where it is.

        The SDK's own handler would drain every sink from inside the signal handler and exit 0
        although the records not yet uploaded were never sent. Instead the run stops reading and
        uploading; on the way out the job already in flight is awaited, so the STATE it backs
        still goes out, and the run ends with exit 10. A second signal stops the wait. Once all
        input is read (``finish``), the first signal only waits for the last job.
        """
        # A lane that failed while the reading thread waited for input wakes it this way.
        self.check()
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1 and self._finishing and self._events_waiting():
            assert self.event_lane is not None
            msg = (
                f"Received {name}, so the run stopped before all of its events were sent. STATE "
                "was written up to the last event Userpilot accepted; rerun from it to send "
                "the rest (events already accepted are not sent again)."
            )
            self.event_lane.stop_sending(Terminated(msg))
            logger.warning(
                "Received %s after the end of input: no further events are sent; waiting for "
                "the events in flight and the last job, so STATE can go out; send the signal "
                "again to stop at once.",
                name,
            )
            return
        if self._signals == 1 and self._finishing:
            logger.warning(
                "Received %s after the end of input: waiting for the last job to end, so the "
                "final STATE can go out; send the signal again to stop at once.",
                name,
            )
            return
        if self._signals == 1:
            logger.warning(
                "Received %s: no further input is read or uploaded.%s",
                name,
                " Waiting for the job in flight to end, so its STATE can go out; send the "
                "signal again to stop at once."
                if any(lane.busy for lane in self.lanes)
                else "",
            )
        msg = (
            f"Received {name}, so the run stopped before all of its input was loaded. STATE was "
            "written up to the last record Userpilot confirmed; rerun from it to load the rest."
        )
        raise Terminated(msg)

    def close(self, error: BaseException | None = None) -> None:
        """Once: after a failure let the work in flight end (its STATE goes out); release all.

        A stop signal uploads nothing more; any other failure still sends the batches already
        sealed, which hold only records read before it.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if error is not None and self._signals <= 1:
                for lane in self.lanes:
                    try:
                        lane.settle(send_sealed=not isinstance(error, Terminated))
                    except Exception as exc:  # noqa: BLE001 - the first failure is reported
                        logger.debug("While stopping, the work in flight also failed: %s", exc)
        finally:
            self.buffer.discard()
            for lane in self.lanes:
                lane.close()
            self.client.close()
            if self._event_client is not None:
                self._event_client.close()
            if self.unchanged is not None:
                self.unchanged.close()
            if self.ledger is not None:
                self.ledger.close()
            self._log_summary()

    def _events_waiting(self) -> bool:
        return self.event_lane is not None and self.event_lane.busy

    def _wake_reader(self) -> None:
        """A lane failed: interrupt the main thread, which may be blocked reading a silent tap.

        The SIGINT handler (``terminate``) raises the lane's error there, so the run stops with
        that error's sentence and exit code instead of waiting for input that may never come.
        """
        main = threading.main_thread()
        if threading.current_thread() is not main and main.ident is not None:
            signal.pthread_kill(main.ident, signal.SIGINT)

    def _drop_unchanged(self, batch: SealedBatch) -> None:
        """skip_unchanged, as a batch is sealed: leave out rows Userpilot already holds."""
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
        for stream, count in gone.items():
            self.summary.stream(stream).unchanged += count
        logger.info(
            "Skipped %d unchanged %s rows; %d left to send.", dropped, batch.object, batch.rows
        )

    def _log_summary(self) -> None:
        """The end-of-run account on stderr: a table for people, a JSON line for schedulers."""
        if self.pace.observed and not self.settings.dry_run:
            self.summary.userpilot_rate = self.pace.rows_per_minute()
            self.summary.userpilot_job_seconds = self.pace.fixed
        for line in self.summary.table().splitlines():
            logger.info("%s", line)
        if self.history is not None and self.history.keep:
            logger.info(
                "This run's jobs are in the ledger's sync history: userpilot-ledger jobs --run %s",
                self.run_id,
            )
        sys.stderr.write(self.summary.json_line() + "\n")
        sys.stderr.flush()
