"""The ledger's sync history: what went to Userpilot, in which job, and how it ended.

Tables (made by migration 3 in ``ledger/schema.py``):

- ``sync_jobs``: one row per bulk job or deletion request: its run, object, streams, rows, when
  it was sent, when it ended and how (``completed``, ``failed``, ``timed out``, ``accepted``;
  NULL while not known: a run killed before the job ended leaves it so);
- ``sync_history``: one row per profile per job or deletion request that named it, with the hash
  of the row sent (NULL for a deletion). Only the newest ``keep`` entries of a profile stay
  (``ledger_history_entries``): the table grows with the profiles, not with the runs;
- ``deleted_profiles``: profiles whose deletion Userpilot accepted, until the source sends them
  live again (a deletion sent again is then not requested again).

The SQL here is written once for both backends: ``:name`` parameters, epoch seconds, and
``ON CONFLICT`` (SQLite 3.24+). A backend supplies how to run it and how to pass a list of ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The schema version that made these tables (migration 3): a reader needs a ledger at least
#: this new. A later migration that changes them raises it.
HISTORY_VERSION = 3

#: ``sync_jobs.kind`` of a bulk upload and of a deletion request.
JOB = "job"
DELETION = "deletion"


@dataclass(frozen=True)
class SentJob:
    """A bulk job or a deletion request, as it went to Userpilot."""

    job_id: str
    run_id: str
    kind: str
    object: str
    streams: str
    rows: int
    sent_at: float


@dataclass(frozen=True)
class JobEntry:
    """One row of ``sync_jobs``, for readers."""

    scope: str
    job_id: str
    run_id: str
    kind: str
    object: str
    streams: str
    rows: int
    sent_at: float
    ended_at: float | None
    outcome: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """One profile in one job or deletion request, with how that ended."""

    scope: str
    object: str
    id: str
    sent_at: float
    job_id: str
    hash: bytes | None
    kind: str | None
    run_id: str | None
    ended_at: float | None
    outcome: str | None


_JOB_COLUMNS = "scope, job_id, run_id, kind, object, streams, rows, sent_at, ended_at, outcome"
_ENTRY_SELECT = """
    SELECT h.scope, h.object, h.id, h.sent_at, h.job_id, h.hash, j.kind, j.run_id, j.ended_at,
           j.outcome
    FROM sync_history h LEFT JOIN sync_jobs j ON j.scope = h.scope AND j.job_id = h.job_id
"""


class HistoryTables(ABC):
    """The history half of :class:`target_userpilot.ledger.base.Ledger`, written once for both."""

    #: Ids per statement.
    chunk_size = 500

    # What a backend supplies

    @abstractmethod
    def _query(self, what: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of one statement; ``what`` names the work for an error message."""

    @abstractmethod
    def _execute(self, what: str, steps: list[tuple[str, Any]]) -> None:
        """Run ``(sql, params)`` steps in one transaction; a list of params runs it per item."""

    @abstractmethod
    def _ids_in(self, column: str) -> str:
        """SQL true when ``column`` is one of the ids passed as ``:ids``."""

    @abstractmethod
    def _ids(self, ids: Sequence[str]) -> Any:
        """``ids`` as the backend passes a list in ``:ids``."""

    # Written by the run

    def record_sent(
        self, scope: str, job: SentJob, rows: Sequence[tuple[str, bytes | None]], keep: int
    ) -> None:
        """A job or deletion request went out: note it, and one history entry per profile.

        Older entries of those profiles beyond the newest ``keep`` are removed in the same
        transaction, so the history stays bounded.
        """
        steps: list[tuple[str, Any]] = [
            (
                f"INSERT INTO sync_jobs ({_JOB_COLUMNS}) VALUES "  # noqa: S608 - placeholders
                "(:scope, :job_id, :run_id, :kind, :object, :streams, :rows, :sent_at, NULL, NULL) "
                "ON CONFLICT DO NOTHING",
                {
                    "scope": scope,
                    "job_id": job.job_id,
                    "run_id": job.run_id,
                    "kind": job.kind,
                    "object": job.object,
                    "streams": job.streams,
                    "rows": job.rows,
                    "sent_at": job.sent_at,
                },
            )
        ]
        if keep > 0 and rows:
            steps.append(self._history_insert(scope, job, rows))
            for chunk in _chunks(sorted(row_id for row_id, _ in rows), self.chunk_size):
                steps.append(
                    (
                        f"""
                        DELETE FROM sync_history
                        WHERE scope = :scope AND object = :object AND {self._ids_in("id")}
                          AND sent_at < (
                            SELECT x.sent_at FROM sync_history x
                            WHERE x.id = sync_history.id AND x.scope = sync_history.scope
                              AND x.object = sync_history.object
                            ORDER BY x.sent_at DESC LIMIT 1 OFFSET :skip)
                        """,  # noqa: S608 - only placeholders
                        {
                            "scope": scope,
                            "object": job.object,
                            "ids": self._ids(chunk),
                            "skip": keep - 1,
                        },
                    )
                )
        self._execute("recording the sync history", steps)

    def _history_insert(
        self, scope: str, job: SentJob, rows: Sequence[tuple[str, bytes | None]]
    ) -> tuple[str, Any]:
        """The statement adding one entry per row (a backend may make it one bulk statement)."""
        return (
            "INSERT INTO sync_history (scope, object, id, sent_at, job_id, hash) "
            "VALUES (:scope, :object, :id, :sent_at, :job_id, :hash) ON CONFLICT DO NOTHING",
            [
                {
                    "scope": scope,
                    "object": job.object,
                    "id": row_id,
                    "sent_at": job.sent_at,
                    "job_id": job.job_id,
                    "hash": digest,
                }
                for row_id, digest in rows
            ],
        )

    def record_outcome(self, scope: str, job_id: str, outcome: str, ended_at: float) -> None:
        """How a job or deletion request ended (``completed``, ``failed``, ``accepted``...)."""
        self._execute(
            "recording how a job ended",
            [
                (
                    "UPDATE sync_jobs SET ended_at = :ended_at, outcome = :outcome "
                    "WHERE scope = :scope AND job_id = :job_id",
                    {"scope": scope, "job_id": job_id, "outcome": outcome, "ended_at": ended_at},
                )
            ],
        )

    def remember_deletions(
        self, scope: str, object: str, ids: Iterable[str], job_id: str, accepted_at: float
    ) -> None:
        """Userpilot accepted the deletion of ``ids`` (HTTP 202)."""
        params = [
            {"scope": scope, "object": object, "id": row_id, "job_id": job_id, "at": accepted_at}
            for row_id in sorted(set(ids))
        ]
        if params:
            sql = (
                "INSERT INTO deleted_profiles (scope, object, id, accepted_at, job_id) "
                "VALUES (:scope, :object, :id, :at, :job_id) ON CONFLICT (scope, object, id) "
                "DO UPDATE SET accepted_at = excluded.accepted_at, job_id = excluded.job_id, "
                "upserted_at = NULL"
            )
            self._execute("remembering accepted deletions", [(sql, params)])

    def remembered_deletions(
        self, scope: str, object: str, ids: Sequence[str]
    ) -> dict[str, tuple[float, float | None]]:
        """For each of ``ids`` whose deletion Userpilot accepted: when, and when it was upserted
        again since (None: still deleted in the source)."""
        found: dict[str, tuple[float, float | None]] = {}
        for chunk in _chunks(list(ids), self.chunk_size):
            rows = self._query(
                "looking up accepted deletions",
                "SELECT id, accepted_at, upserted_at FROM deleted_profiles "  # noqa: S608
                f"WHERE scope = :scope AND object = :object AND {self._ids_in('id')}",
                {"scope": scope, "object": object, "ids": self._ids(chunk)},
            )
            found.update(
                {
                    row_id: (float(at), float(again) if again is not None else None)
                    for row_id, at, again in rows
                }
            )
        return found

    def mark_upserted(self, scope: str, object: str, ids: Iterable[str], at: float) -> None:
        """The source sent ``ids`` live again before Userpilot's deletion run erased them."""
        steps: list[tuple[str, Any]] = [
            (
                "UPDATE deleted_profiles SET upserted_at = :at "  # noqa: S608 - placeholders
                f"WHERE scope = :scope AND object = :object AND {self._ids_in('id')} "
                "AND upserted_at IS NULL",
                {"scope": scope, "object": object, "ids": self._ids(chunk), "at": at},
            )
            for chunk in _chunks(sorted(set(ids)), self.chunk_size)
        ]
        if steps:
            self._execute("noting profiles sent again after their deletion", steps)

    def prune_deletions(self, scope: str, accepted_before: float) -> None:
        """Drop deletions long erased whose profile the source has sent live again since."""
        self._execute(
            "pruning accepted deletions",
            [
                (
                    "DELETE FROM deleted_profiles WHERE scope = :scope "
                    "AND upserted_at IS NOT NULL AND accepted_at < :before",
                    {"scope": scope, "before": accepted_before},
                )
            ],
        )

    def forget_deletions(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """The source sent ``ids`` live again: a later deletion of them must be requested."""
        steps: list[tuple[str, Any]] = [
            (
                "DELETE FROM deleted_profiles "  # noqa: S608 - only placeholders
                f"WHERE scope = :scope AND object = :object AND {self._ids_in('id')}",
                {"scope": scope, "object": object, "ids": self._ids(chunk)},
            )
            for chunk in _chunks(sorted(set(ids)), self.chunk_size)
        ]
        if steps:
            self._execute("forgetting accepted deletions", steps)

    def has_remembered_deletions(self, scope: str) -> bool:
        """Whether any deletion of this account is remembered (most ledgers have none)."""
        rows = self._query(
            "looking up accepted deletions",
            "SELECT 1 FROM deleted_profiles WHERE scope = :scope LIMIT 1",
            {"scope": scope},
        )
        return bool(rows)

    # Read by userpilot-ledger

    def profile_history(self, scope: str | None, object: str | None, id: str) -> list[HistoryEntry]:
        """Every entry kept for profile ``id``, newest first."""
        rows = self._query(
            "reading a profile's history",
            _ENTRY_SELECT + " WHERE h.id = :id AND (CAST(:scope AS TEXT) IS NULL OR h.scope = "
            ":scope) AND (CAST(:object AS TEXT) IS NULL OR h.object = :object) "
            "ORDER BY h.sent_at DESC",
            {"id": id, "scope": scope, "object": object},
        )
        return [_entry(row) for row in rows]

    def current_state(self, scope: str | None, object: str | None) -> list[HistoryEntry]:
        """The newest entry of every profile: what Userpilot was last sent for it."""
        rows = self._query(
            "exporting the current state",
            _ENTRY_SELECT  # noqa: S608 - only placeholders
            + """
            WHERE (CAST(:scope AS TEXT) IS NULL OR h.scope = :scope)
              AND (CAST(:object AS TEXT) IS NULL OR h.object = :object)
              AND h.sent_at = (SELECT max(x.sent_at) FROM sync_history x
                               WHERE x.id = h.id AND x.scope = h.scope AND x.object = h.object)
            ORDER BY h.scope, h.object, h.id
            """,
            {"scope": scope, "object": object},
        )
        return [_entry(row) for row in rows]

    def jobs(self, scope: str | None, run_id: str | None, limit: int) -> list[JobEntry]:
        """Jobs and deletion requests of one run (or the newest ``limit``), in the order sent."""
        rows = self._query(
            "reading jobs",
            f"SELECT {_JOB_COLUMNS} FROM sync_jobs "  # noqa: S608 - only placeholders
            "WHERE (CAST(:scope AS TEXT) IS NULL OR scope = :scope) "
            "AND (CAST(:run_id AS TEXT) IS NULL OR run_id = :run_id) "
            "ORDER BY sent_at DESC LIMIT :limit",
            {"scope": scope, "run_id": run_id, "limit": limit},
        )
        return [JobEntry(*row) for row in reversed(rows)]

    def accounts(self) -> list[tuple[str, int]]:
        """Each account scope with history, and how many profiles it has entries for."""
        rows = self._query(
            "listing accounts",
            "SELECT scope, count(DISTINCT object || ':' || id) FROM sync_history "
            "GROUP BY scope ORDER BY scope",
            {},
        )
        return [(scope, int(count)) for scope, count in rows]


def _entry(row: tuple[Any, ...]) -> HistoryEntry:
    scope, object, row_id, sent_at, job_id, digest, kind, run_id, ended_at, outcome = row
    return HistoryEntry(
        scope,
        object,
        row_id,
        float(sent_at),
        job_id,
        bytes(digest) if digest is not None else None,
        kind,
        run_id,
        float(ended_at) if ended_at is not None else None,
        outcome,
    )


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
