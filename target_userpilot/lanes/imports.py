"""Events through the Import API: what the job lane does before and after an events file's job.

With ``events_api: import`` events are a third object of the buffer (``buffer.py``): spooled to
NDJSON files of Import API records, at most 10,000 and 50 MB each, uploaded to ``/v1/imports``
by the one job lane (``jobs.py``), which awaits each job as it does bulk jobs. Two things differ
from profiles, because events are not idempotent:

- **Before the upload** (:meth:`ImportedEvents.prepare`): the events whose keys the ledger holds
  are left out of the file. Every earlier job of this run has completed by then (one job at a
  time), so the ledger already knows every event of this run that reached Userpilot.
- **Once the job completes** (:meth:`ImportedEvents.confirm`): every key of the file goes to the
  ledger, before the file's hold is released and its STATE written. A failed job records
  nothing, so a rerun sends its events again; a crash between completion and the ledger write
  duplicates at most that one file's events.

Profiles' batches pass through to the ``skip_unchanged`` confirmer, if there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from target_userpilot.batch import SealedBatch
from target_userpilot.rows import EVENTS
from target_userpilot.summary import RunSummary


class EventKeys(Protocol):
    """What events need of the ledger (``state_db``): see ``ledger.Ledger``."""

    def accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]: ...

    def add_accepted_events(self, scope: str, stream: str, keys: Iterable[str]) -> None: ...


class RowConfirmer(Protocol):
    """skip_unchanged's side: told of every profiles batch whose job completed."""

    def confirm(self, batch: SealedBatch) -> None: ...


class ImportedEvents:
    """The job lane's confirmer: events files checked against the ledger and recorded in it."""

    def __init__(
        self,
        keys: EventKeys | None,
        scope: str,
        summary: RunSummary,
        rows: RowConfirmer | None = None,
    ) -> None:
        #: None in a dry run: nothing is sent, so nothing is recorded as accepted either.
        self._keys = keys
        self._scope = scope
        self._summary = summary
        self._rows = rows

    def prepare(self, batch: SealedBatch) -> None:
        """Leave out of an events file the events Userpilot already accepted (the ledger)."""
        if batch.object != EVENTS or self._keys is None or not batch.rows:
            return
        sent: set[str] = set()
        for stream, keys in _keys_by_stream(batch).items():
            sent |= self._keys.accepted_events(self._scope, stream, keys)
        if not sent:
            return
        for stream, count in batch.drop_events(sent).items():
            self._summary.add(stream, "events_skipped", count)

    def confirm(self, batch: SealedBatch) -> None:
        """The file's job completed: its events are in Userpilot, so their keys go to the ledger."""
        if batch.object != EVENTS:
            if self._rows is not None:
                self._rows.confirm(batch)
            return
        if self._keys is None:
            return
        for stream, keys in _keys_by_stream(batch).items():
            self._keys.add_accepted_events(self._scope, stream, keys)


def _keys_by_stream(batch: SealedBatch) -> dict[str, list[str]]:
    """An events file's keys (its ``row_streams``, in line order), grouped by stream."""
    grouped: dict[str, list[str]] = {}
    for key, stream in batch.row_streams.items():
        grouped.setdefault(stream, []).append(key)
    return grouped
