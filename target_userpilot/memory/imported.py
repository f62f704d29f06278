"""Events through the Import API: the ledger's side of every events file the job lane sends.

With ``events_api: import`` events are a third object of the buffer (``batching/buffer.py``):
spooled to NDJSON files of Import API records, at most 10,000 and 50 MB each, uploaded to
``/v1/imports`` by the one job lane (``lanes/jobs.py``), which awaits each job as it does bulk
jobs. Events are not idempotent, and a job can outlive the run that uploaded it, so a file is in
the ledger (``ledger/store.py``) from before its upload until the end of its job is known:

- **Before the upload** (:meth:`ImportedEvents.prepare`): the events whose keys the ledger holds
  are left out of the file. Every earlier job of this run has completed by then (one job at a
  time), and every file of an earlier run was settled first, so the ledger knows every event
  that reached Userpilot.
- **Recorded** (:meth:`ImportedEvents.record`): the file's name (unique: it holds the run id),
  its run and the keys of its events, before anything of it can reach Userpilot; then whether a
  try may have reached it, and its job once Userpilot names it.
- **Settled**, in one ledger transaction: the job completed (:meth:`ImportedEvents.confirm`), so
  its keys count as sent; it failed, so they are dropped and the rerun sends the events again;
  its answer was lost and Userpilot shows it nowhere (:meth:`ImportedEvents.unconfirmed`), so
  they count as sent all the same, since a second copy could count twice; or nothing of it
  reached Userpilot (every try was refused or proved it had no effect), so it is forgotten.
- **A file an earlier run left unsettled** (a crash, a stop, a lost answer that ended the run)
  is settled by the next run of the account before anything goes up
  (:meth:`ImportedEvents.settle_earlier`; the job lane looks for its job and waits for it).

Profiles' batches pass through to the ``skip_unchanged`` confirmer, if there is one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.errors import Unconfirmed, WaitInterrupted
from target_userpilot.ledger.store import (
    COMPLETED,
    FAILED,
    NOT_SENT,
    READY,
    UNCONFIRMED,
    ImportedEvent,
    RecordedImport,
)
from target_userpilot.records.routing import EVENTS
from target_userpilot.retry import Stop
from target_userpilot.summary import RunSummary, count
from target_userpilot.userpilot.client import FINAL_STATUSES

logger = logging.getLogger("target_userpilot.lane")


class ImportLedger(Protocol):
    """What events files need of the ledger (``state_db``): part of
    :class:`~target_userpilot.ledger.store.Ledger`."""

    def accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]: ...

    def record_import(
        self,
        scope: str,
        filename: str,
        run_id: str,
        keys: Mapping[str, Sequence[str]],
        at: float,
        *,
        events: Mapping[str, ImportedEvent] | None = None,
    ) -> None: ...

    def import_tried(self, scope: str, filename: str, *, may_have_arrived: bool) -> None: ...

    def import_accepted(self, scope: str, filename: str, job_id: str) -> None: ...

    def settle_import(self, scope: str, filename: str, outcome: str, at: float) -> None: ...

    def unsettled_imports(self, scope: str) -> list[RecordedImport]: ...


class RowConfirmer(Protocol):
    """skip_unchanged's side: told of every profiles batch whose job completed."""

    def confirm(self, batch: SealedBatch) -> None: ...


class ImportedEvents:
    """The job lane's confirmer: events files checked against the ledger, recorded in it before
    they go up, and settled in it once their job's end is known (this run's, or an earlier's)."""

    def __init__(
        self,
        ledger: ImportLedger | None,
        scope: str,
        summary: RunSummary,
        rows: RowConfirmer | None = None,
        *,
        run_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: None in a dry run: nothing is sent, so nothing is recorded either.
        self._ledger = ledger
        self._scope = scope
        self._summary = summary
        self._rows = rows
        self._run_id = run_id
        self._clock = clock
        #: Whether a try of the file in flight (one at a time) may have reached Userpilot.
        self._may_have_arrived = False

    def prepare(self, batch: SealedBatch) -> None:
        """Leave out of an events file the events Userpilot already accepted (the ledger)."""
        if batch.object != EVENTS or self._ledger is None or not batch.rows:
            return
        sent: set[str] = set()
        for stream, keys in _keys_by_stream(batch).items():
            sent |= self._ledger.accepted_events(self._scope, stream, keys)
        if not sent:
            return
        for stream, n in batch.drop_events(sent).items():
            self._summary.add(stream, "events_skipped", n)

    # This run's file in flight

    @contextmanager
    def uploading(self, batch: SealedBatch) -> Iterator[Callable[[bool], None] | None]:
        """Around the upload of ``batch``: an events file is recorded first, and if the upload
        fails (but for :class:`Unconfirmed`, settled apart) :meth:`not_accepted` is told. Gives
        what the client tells of each try (None: a profiles batch or a dry run)."""
        reached = self.record(batch)
        try:
            yield reached
        except Unconfirmed:
            raise
        except BaseException:
            self.not_accepted(batch)
            raise

    def record(self, batch: SealedBatch) -> Callable[[bool], None] | None:
        """An events file is about to go up as ``batch.filename``: it goes to the ledger with its
        keys first. Returns what the client tells of each try of the upload (None: nothing to
        record, a profiles batch or a dry run)."""
        if batch.object != EVENTS or self._ledger is None:
            return None
        self._may_have_arrived = False
        self._ledger.record_import(
            self._scope,
            batch.filename,
            self._run_id,
            _keys_by_stream(batch),
            self._clock(),
            events=_events_by_key(batch),
        )
        ledger, filename = self._ledger, batch.filename

        def tried(may_have_arrived: bool) -> None:
            self._may_have_arrived = may_have_arrived
            ledger.import_tried(self._scope, filename, may_have_arrived=may_have_arrived)

        return tried

    def accepted(self, batch: SealedBatch, job_id: str) -> None:
        """Userpilot named the file's job: a rerun after a crash follows it by its id."""
        if batch.object == EVENTS and self._ledger is not None:
            self._ledger.import_accepted(self._scope, batch.filename, job_id)

    def not_accepted(self, batch: SealedBatch) -> None:
        """The upload failed (the run stops): forgotten if nothing of it reached Userpilot,
        else left for the next run, which looks for its job before it sends anything."""
        if batch.object != EVENTS or self._ledger is None:
            return
        if not self._may_have_arrived:
            self._while_failing(NOT_SENT, batch)
            return
        logger.warning(
            "The events file %s (%s of %s) may have reached Userpilot: the next run looks for "
            "its import job before it sends anything, and does not send it again.",
            batch.filename,
            count(batch.rows, "event"),
            batch.streams,
        )

    def unconfirmed(self, batch: SealedBatch, reason: BaseException) -> None:
        """The upload's answer was lost and Userpilot shows its job nowhere: the events may or
        may not be in, so they count as sent (never sent again), counted apart, said once."""
        if self._ledger is not None:
            self._ledger.settle_import(self._scope, batch.filename, UNCONFIRMED, self._clock())
        self._count_unconfirmed(batch.rows_by_stream())
        for stream, n in batch.merged_by_stream.items():
            self._summary.add(stream, "events_skipped", n)
        one = batch.rows == 1
        logger.warning(
            "%s. The %s of %s %s not sent again, by this run or a rerun: a second copy could "
            "import %s twice. The summary counts %s as 'unconfirmed'; check the imports in "
            "Userpilot.",
            reason,
            count(batch.rows, "event"),
            batch.streams,
            "is" if one else "are",
            "it" if one else "them",
            "it" if one else "them",
        )

    def failed(self, batch: SealedBatch) -> None:
        """The file's job failed: its keys go, so the rerun sends its events again."""
        if batch.object == EVENTS and self._ledger is not None:
            self._while_failing(FAILED, batch)

    def _while_failing(self, outcome: str, batch: SealedBatch) -> None:
        """Settle a file while the run's failure is on its way out: a ledger failure here is
        logged, never put in that failure's place (the next run settles the file instead)."""
        assert self._ledger is not None
        try:
            self._ledger.settle_import(self._scope, batch.filename, outcome, self._clock())
        except Exception as exc:  # noqa: BLE001 - the failure being raised is the one to report
            logger.debug("Settling %s in the ledger failed too: %s", batch.filename, exc)

    def confirm(self, batch: SealedBatch) -> None:
        """The batch's job completed: an events file's keys count as sent, in the same write
        that settles the file; a profiles batch goes to skip_unchanged."""
        if batch.object != EVENTS:
            if self._rows is not None:
                self._rows.confirm(batch)
            return
        if self._ledger is not None:
            self._ledger.settle_import(self._scope, batch.filename, COMPLETED, self._clock())

    # Files earlier runs left unsettled

    def settle_earlier(
        self,
        find: Callable[[RecordedImport], dict[str, Any] | None],
        wait: Callable[[dict[str, Any], SealedBatch], dict[str, Any] | None],
        stop: Stop,
    ) -> bool:
        """Settle every file earlier runs of the account left, before anything goes up: ``find``
        looks for its job (None: shown nowhere), ``wait`` follows one that still runs (None: a
        stop ended the wait). False once ``stop`` is set: no lookup starts after it, and the
        next run settles the rest."""
        try:
            for recorded in self.unsettled():
                if stop.is_set() or not self._settle_one(recorded, find, wait):
                    return False
        except WaitInterrupted:
            return False  # a stop ended a wait before a retry of a lookup
        return True

    def _settle_one(
        self,
        recorded: RecordedImport,
        find: Callable[[RecordedImport], dict[str, Any] | None],
        wait: Callable[[dict[str, Any], SealedBatch], dict[str, Any] | None],
    ) -> bool:
        """Settle one file; False if a stop ended the wait for its job."""
        job = None if recorded.state == READY else find(recorded)
        status = "" if job is None else str(job.get("status", "")).strip().lower()
        if job is not None and status not in FINAL_STATUSES:
            logger.info(
                "Waiting for import job %s of an earlier run (%s) before anything goes up.",
                job.get("job_id"),
                recorded.filename,
            )
            # What the polls' pacing and messages read of a batch: its rows and streams.
            streams = ", ".join(sorted(recorded.events))
            job = wait(job, SealedBatch(EVENTS, streams, "", recorded.total, 0))
            if job is None:
                return False
        self.settle(recorded, job)
        return True

    def unsettled(self) -> list[RecordedImport]:
        """The account's files an earlier run recorded and did not settle, oldest first."""
        return [] if self._ledger is None else self._ledger.unsettled_imports(self._scope)

    def settle(self, recorded: RecordedImport, job: dict[str, Any] | None) -> None:
        """Settle a file of an earlier run by its job as Userpilot shows it now: final, or None
        when it is shown nowhere (a file no try of which can have reached Userpilot is not
        looked for)."""
        if self._ledger is None:
            return
        what = (
            f"The events file {recorded.filename} ({_events_of(recorded)}, run {recorded.run_id})"
        )
        status = "" if job is None else str(job.get("status", "")).strip().lower()
        if recorded.state == READY:
            outcome = NOT_SENT
            logger.info(
                "%s never reached Userpilot: its events go when the tap sends them again.", what
            )
        elif job is None:
            outcome = UNCONFIRMED
            self._count_unconfirmed(recorded.events)
            if recorded.job_id:
                how = f"was accepted as job {recorded.job_id}, which Userpilot now shows nowhere"
            else:
                how = "may have reached Userpilot, which lists no import job for it"
            logger.warning(
                "%s %s: its events may or may not have been imported. They are not sent again, "
                "since a second copy could count twice; the summary counts them as "
                "'unconfirmed'. Check the imports in Userpilot.",
                what,
                how,
            )
        elif status == "failed":
            outcome = FAILED
            logger.warning(
                "%s was imported by job %s, which failed (%s): its events are sent again when "
                "the tap sends them (no STATE went past them).",
                what,
                job.get("job_id"),
                json.dumps(job, sort_keys=True, default=str),
            )
        else:
            outcome = COMPLETED
            logger.info(
                "%s was imported by job %s, which completed: its events count as sent.",
                what,
                job.get("job_id"),
            )
        self._ledger.settle_import(self._scope, recorded.filename, outcome, self._clock())

    def _count_unconfirmed(self, events: Mapping[str, int]) -> None:
        for stream, n in events.items():
            self._summary.add(stream, "events_unconfirmed", n, finished=True)


def _events_of(recorded: RecordedImport) -> str:
    """``3 events of 'a'`` / ``5 events of 'a', 'b'``, for log lines."""
    streams = ", ".join(f"'{name}'" for name in sorted(recorded.events)) or "no stream"
    return f"{count(recorded.total, 'event')} of {streams}"


def _events_by_key(batch: SealedBatch) -> dict[str, ImportedEvent]:
    """Whose each event of an events file is, its name and its time, by key: what a user's
    history shows of it. The keys are the batch's ``row_streams``, in line order; the file is
    streamed, never read whole."""
    found: dict[str, ImportedEvent] = {}
    with open(batch.path, "rb") as lines:
        for key, line in zip(batch.row_streams, lines, strict=False):
            record = json.loads(line)
            user = record.get("user_id")
            found[key] = ImportedEvent(
                None if user is None else str(user),
                record.get("event_name") or record.get("event_type"),
                _epoch(record.get("inserted_at")),
            )
    return found


def _epoch(text: Any) -> float | None:
    """``inserted_at`` (``2024-01-02T03:04:05Z``, as ``records/imports.py`` writes it) as epoch
    seconds."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _keys_by_stream(batch: SealedBatch) -> dict[str, list[str]]:
    """An events file's keys (its ``row_streams``, in line order), grouped by stream."""
    grouped: dict[str, list[str]] = {}
    for key, stream in batch.row_streams.items():
        grouped.setdefault(stream, []).append(key)
    return grouped
