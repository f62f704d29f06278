"""The ledger's record of Import API files: each file from before its upload until it is settled.

Events are not idempotent, and an import job can outlive the run that uploaded it (a crash, a
stop, an answer lost on the way back). So an events file is written here before anything of it
can reach Userpilot, with the keys of its events, and settled once the end of its job is known,
by the run that uploaded it or by the next run of the account (``lanes/jobs.py``):

- ``completed``, ``unconfirmed`` (Userpilot shows it nowhere: it may or may not be in): its keys
  go to ``accepted_events``, in the same transaction that settles it, so they are never sent
  again;
- ``failed``: its keys are dropped, so its events are sent again when the tap sends them;
- never sent (every try was refused, or proved it had no effect): the file is forgotten.

Tables (made by migration 6 in ``ledger/schema.py``): ``import_jobs``, one row per file (its
name, the run, ``state``, its ``job_id`` once Userpilot named it, when it was recorded and
settled), and ``import_keys``, the keys of the files not settled yet. The SQL is written once for
both backends, as in ``ledger/history.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: ``import_jobs.state`` while a file is not settled: nothing of it can have reached Userpilot
#: yet; a try may have; Userpilot named its job.
READY = "ready"
SENT = "sent"
ACCEPTED = "accepted"
#: How a file is settled (``NOT_SENT`` leaves no row).
COMPLETED = "completed"
FAILED = "failed"
UNCONFIRMED = "unconfirmed"
NOT_SENT = "not sent"
_KEPT = (COMPLETED, UNCONFIRMED)
_SETTLED = (COMPLETED, FAILED, UNCONFIRMED, NOT_SENT)


@dataclass(frozen=True)
class RecordedImport:
    """An events file an earlier upload recorded and nothing settled yet."""

    filename: str
    run_id: str
    state: str
    job_id: str | None
    #: The keys not settled yet, per stream: how many.
    events: dict[str, int]
    recorded_at: float

    @property
    def total(self) -> int:
        """Its events, every stream together."""
        return sum(self.events.values())


class ImportTables(ABC):
    """The import half of :class:`target_userpilot.ledger.base.Ledger`, written once for both."""

    # What a backend supplies (``ledger_history.HistoryTables`` declares the same two)

    @abstractmethod
    def _query(self, what: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of one statement; ``what`` names the work for an error message."""

    @abstractmethod
    def _execute(self, what: str, steps: list[tuple[str, Any]]) -> None:
        """Run ``(sql, params)`` steps in one transaction; a list of params runs it per item."""

    @abstractmethod
    def _epoch(self, param: str) -> str:
        """SQL for the epoch seconds in ``:param`` as ``accepted_events.accepted_at`` holds it."""

    def _import_keys_insert(
        self, scope: str, filename: str, stream: str, keys: Sequence[str]
    ) -> tuple[str, Any]:
        """The statement adding one file's keys of one stream (a backend may make it one)."""
        return (
            "INSERT INTO import_keys (scope, filename, stream, key) "
            "VALUES (:scope, :filename, :stream, :key) ON CONFLICT DO NOTHING",
            [{"scope": scope, "filename": filename, "stream": stream, "key": key} for key in keys],
        )

    # Written by the job lane

    def record_import(
        self,
        scope: str,
        filename: str,
        run_id: str,
        keys: Mapping[str, Sequence[str]],
        at: float,
    ) -> None:
        """An events file is about to go up: the file, and the keys of its events per stream."""
        steps: list[tuple[str, Any]] = [
            (
                "INSERT INTO import_jobs (scope, filename, run_id, state, job_id, events, "
                "recorded_at, settled_at) VALUES (:scope, :filename, :run_id, :state, NULL, "
                ":events, :at, NULL)",
                {
                    "scope": scope,
                    "filename": filename,
                    "run_id": run_id,
                    "state": READY,
                    "events": sum(len(k) for k in keys.values()),
                    "at": at,
                },
            )
        ]
        steps += [
            self._import_keys_insert(scope, filename, stream, sorted(set(stream_keys)))
            for stream, stream_keys in sorted(keys.items())
            if stream_keys
        ]
        self._execute("recording an import file", steps)

    def import_tried(self, scope: str, filename: str, *, may_have_arrived: bool) -> None:
        """A try of the file's upload is about to go (``True``), or every try so far proved
        that none of it reached Userpilot (``False``)."""
        before, after = (READY, SENT) if may_have_arrived else (SENT, READY)
        self._execute(
            "recording an import file's upload",
            [
                (
                    "UPDATE import_jobs SET state = :after "
                    "WHERE scope = :scope AND filename = :filename AND state = :before",
                    {"scope": scope, "filename": filename, "before": before, "after": after},
                )
            ],
        )

    def import_accepted(self, scope: str, filename: str, job_id: str) -> None:
        """Userpilot named the file's job: a rerun follows it by its id."""
        self._execute(
            "recording an import job",
            [
                (
                    "UPDATE import_jobs SET state = :state, job_id = :job_id "
                    "WHERE scope = :scope AND filename = :filename AND settled_at IS NULL",
                    {"scope": scope, "filename": filename, "state": ACCEPTED, "job_id": job_id},
                )
            ],
        )

    def settle_import(self, scope: str, filename: str, outcome: str, at: float) -> None:
        """The file's end is known: ``completed``, ``failed``, ``unconfirmed`` or ``not sent``.

        One transaction: the keys go to ``accepted_events`` (completed, unconfirmed) or are
        dropped, and the file is marked settled (a file never sent is forgotten). Settling a
        file twice (two runs at once) changes nothing the second time.
        """
        if outcome not in _SETTLED:
            raise ValueError(f"an import file is settled as one of {_SETTLED}, not {outcome!r}")
        params = {"scope": scope, "filename": filename, "at": at, "outcome": outcome}
        steps: list[tuple[str, Any]] = []
        if outcome in _KEPT:
            steps.append(
                (
                    "INSERT INTO accepted_events (scope, stream, key, accepted_at) "  # noqa: S608
                    f"SELECT scope, stream, key, {self._epoch('at')} FROM import_keys "
                    "WHERE scope = :scope AND filename = :filename ON CONFLICT DO NOTHING",
                    params,
                )
            )
        steps.append(
            ("DELETE FROM import_keys WHERE scope = :scope AND filename = :filename", params)
        )
        if outcome == NOT_SENT:
            steps.append(
                (
                    "DELETE FROM import_jobs WHERE scope = :scope AND filename = :filename "
                    "AND settled_at IS NULL",
                    params,
                )
            )
        else:
            steps.append(
                (
                    "UPDATE import_jobs SET state = :outcome, settled_at = :at "
                    "WHERE scope = :scope AND filename = :filename AND settled_at IS NULL",
                    params,
                )
            )
        self._execute("settling an import file", steps)

    # Read by the next run

    def unsettled_imports(self, scope: str) -> list[RecordedImport]:
        """The account's import files not settled yet, oldest first."""
        files = self._query(
            "looking up import files not settled",
            "SELECT filename, run_id, state, job_id, recorded_at FROM import_jobs "
            "WHERE scope = :scope AND settled_at IS NULL ORDER BY recorded_at, filename",
            {"scope": scope},
        )
        if not files:
            return []
        counts = self._query(
            "counting the events of import files not settled",
            "SELECT filename, stream, count(*) FROM import_keys WHERE scope = :scope "
            "GROUP BY filename, stream",
            {"scope": scope},
        )
        events: dict[str, dict[str, int]] = {}
        for filename, stream, count in counts:
            events.setdefault(filename, {})[stream] = int(count)
        return [
            RecordedImport(
                filename,
                run_id,
                state,
                job_id,
                events.get(filename, {}),
                float(recorded_at),
            )
            for filename, run_id, state, job_id, recorded_at in files
        ]
