"""The ledger (``state_db``): everything a run may ask of it, whatever database sits behind it.

:class:`Ledger` is the one interface. It holds what Userpilot confirmed, kept between runs:

- ``confirmed_rows``: the hash of the last row Userpilot confirmed per profile
  (``skip_unchanged``);
- ``accepted_events``: the keys of the events Userpilot accepted, so an event is not sent twice;
- ``version_ids``, ``unversioned_ids``: per stream, the ids it loaded, and in which full-table
  version (mirror deletes);
- ``object_keys``: the flattened keys ever sent under each object property of a stream, so a
  null object clears them;
- ``sync_jobs``, ``sync_history``, ``deleted_profiles``: the sync history (what went to
  Userpilot, in which job, and how it ended) and the deletions Userpilot accepted;
- ``import_jobs``, ``import_keys``: the Import API files from before their upload until their
  job's end is known;
- ``runs``: every run that had a ledger, from its start to how it ended, with its counts.

Every entry is scoped by account (``scope.py``) and object or stream, so one database serves
several accounts and several runs at once. Writes are upserts, so two runs sharing one database
never lose each other's entries; lookups go in chunks of :attr:`Ledger.chunk_size` ids.

Each statement is written here once, for both backends: ``:name`` parameters, epoch seconds,
``ON CONFLICT`` (SQLite 3.24+). What they spell differently is data (:class:`Dialect`), and a
backend (``sqlite.py``, ``postgres.py``) supplies only a connection to run statements on
(:meth:`Ledger._query`, :meth:`Ledger._execute`, which writes :class:`Rows` its own fastest
way). The tables themselves, and how an older ledger is upgraded, are in ``schema.py``.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from target_userpilot.retry import RetryPolicy, Stop

T = TypeVar("T")

#: One statement and its ``:name`` parameters.
Statement = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Rows:
    """Many rows of one table, written as one step: SQLite runs one ``INSERT … VALUES`` per row
    in one call; PostgreSQL sends the columns as arrays, a chunk of rows per statement."""

    table: str
    #: The value every row has, by column.
    shared: Mapping[str, Any]
    #: The columns whose value each row gives, in the order of ``values``' tuples.
    columns: tuple[str, ...]
    values: Sequence[tuple[Any, ...]]
    #: What becomes of a row whose key is already there: an ``ON CONFLICT`` clause.
    conflict: str
    #: Columns of ``shared`` holding a moment as epoch seconds (see :attr:`Dialect.moment`).
    moments: tuple[str, ...] = ()
    #: Columns of ``columns`` holding bytes (the others hold text).
    binary: tuple[str, ...] = ()
    #: Columns of ``columns`` holding numbers (epoch seconds).
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dialect:
    """What SQLite and PostgreSQL spell differently in the ledger's statements."""

    #: SQL true when ``{column}`` is one of the strings in the parameter ``:{param}``.
    one_of: str
    #: How that parameter passes its strings.
    strings: Callable[[Sequence[str]], Any]
    #: SQL for the epoch seconds in ``:{param}`` as the first tables keep a moment
    #: (``confirmed_at``, ``accepted_at``: TIMESTAMPTZ in PostgreSQL, migration 1).
    moment: str
    #: SQL for the moment in ``{column}`` (a first table's) as epoch seconds.
    epoch: str

    def seconds(self, column: str) -> str:
        """SQL for the epoch seconds of ``column``, a moment of the first tables."""
        return self.epoch.format(column=column)

    def ids_in(self, column: str, param: str = "ids") -> str:
        """SQL true when ``column`` is one of the strings passed as ``:param``."""
        return self.one_of.format(column=column, param=param)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# What the ledger takes and gives back

#: ``sync_jobs.kind`` of a bulk upload and of a deletion request.
JOB = "job"
DELETION = "deletion"

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

#: ``accepted_events.via``: how an event went; ``.outcome``: how Userpilot took it (a track
#: request accepted, an import job completed, or either without a clear answer:
#: ``UNCONFIRMED``).
TRACK = "track"
IMPORT = "import"
EVENT_ACCEPTED = "accepted"
EVENT_IMPORTED = "imported"

#: The schema version that made ``runs`` and gave events their user (migration 7 of
#: ``schema.py``): ``userpilot-ledger runs`` needs a ledger this new; an older one's events
#: name no user.
RUNS_VERSION = 7

#: ``runs.outcome``: how a run ended (NULL: no end recorded, a run killed or still going).
RUN_COMPLETED = "completed"
RUN_FAILED = "failed"
RUN_SIGNALLED = "stopped by a signal"
RUN_GUARD = "stopped by the guard"


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


@dataclass(frozen=True)
class ImportedEvent:
    """What the ledger keeps of one event of an import file besides its key: whose, which, when."""

    user_id: str | None
    name: str | None
    #: The event's own time (its ``inserted_at``), epoch seconds.
    occurred_at: float | None


@dataclass(frozen=True)
class EventEntry:
    """One accepted event key, with whose it is and how it went, for readers."""

    scope: str
    stream: str
    key: str
    name: str | None
    #: None for keys accepted before the ledger kept users (schema version 7).
    user_id: str | None
    run_id: str | None
    via: str | None
    outcome: str | None
    #: When the ledger recorded it: a track request's acceptance, an import job's end.
    accepted_at: float
    #: An imported event's own time (``inserted_at``).
    occurred_at: float | None
    #: An imported event's job, when its file went up, and when the run saw the job end.
    job_id: str | None
    file_sent_at: float | None
    job_ended_at: float | None

    @property
    def time(self) -> float:
        """When it happened as far as the ledger knows: an imported event's own time, else when
        Userpilot accepted it (the track API stamps events on arrival) or its job completed."""
        return self.occurred_at if self.occurred_at is not None else self.accepted_at


@dataclass(frozen=True)
class RunEntry:
    """One row of ``runs``: a run's start and, once it ended, how (``outcome`` None: no end
    recorded)."""

    scope: str
    run_id: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    exit_code: int | None
    reason: str | None
    #: The end-of-run summary (the ``TARGET_USERPILOT_SUMMARY`` line's object).
    counts: dict[str, Any] | None
    #: What the orchestrator passed: its name, run id and context.
    orchestrator: dict[str, Any] | None


_JOB_COLUMNS = "scope, job_id, run_id, kind, object, streams, rows, sent_at, ended_at, outcome"
_ENTRY_SELECT = """
    SELECT h.scope, h.object, h.id, h.sent_at, h.job_id, h.hash, j.kind, j.run_id, j.ended_at,
           j.outcome
    FROM sync_history h LEFT JOIN sync_jobs j ON j.scope = h.scope AND j.job_id = h.job_id
"""


def _if_given(column: str) -> str:
    """SQL true when the parameter named after ``column`` (``h.scope``: ``:scope``) is NULL or
    equals it: a reader's optional filter. The CAST gives PostgreSQL a type for a NULL."""
    param = column.rpartition(".")[2]
    return f"(CAST(:{param} AS TEXT) IS NULL OR {column} = :{param})"


def _held_elsewhere(row: str) -> str:
    """SQL: another stream than ``row``'s still holds ``row``'s id (``row``: a version_ids row)."""
    return f"""(
        EXISTS (
            SELECT 1 FROM version_ids other
            WHERE other.id = {row}.id AND other.scope = {row}.scope
                AND other.object = {row}.object AND other.stream <> {row}.stream
        )
        OR EXISTS (
            SELECT 1 FROM unversioned_ids other
            WHERE other.id = {row}.id AND other.scope = {row}.scope
                AND other.object = {row}.object AND other.stream <> {row}.stream
        )
    )"""  # noqa: S608 - a table name of this module, never input


class Ledger(ABC):
    """What a run may ask of ``state_db``: row hashes, accepted events, full-table versions,
    object keys, the sync history and the import files not settled yet.

    Safe to call from several threads: the job lane's confirms run while the reading thread
    looks rows up. A backend gives :meth:`_query`, :meth:`_execute`, :meth:`close` and its
    :class:`Dialect`; every method here is written once over them.
    """

    #: Ids per lookup statement, and rows per statement where a backend splits a write.
    chunk_size = 500
    #: Where the entries live, for messages; never holds a password.
    description = "the ledger"
    #: The schema version found on open (after any upgrade): 0 for a ledger made before versions.
    version = 0
    #: What the backend spells its own way.
    dialect: Dialect
    #: How a lost connection is tried again (``RetryPolicy.reconnect``), and what ends the
    #: pauses between tries at once: the run's stop. The run sets both.
    retry = RetryPolicy()
    stop: Stop | None = None

    # What a backend supplies

    @abstractmethod
    def close(self) -> None:
        """Release the database connections."""

    @abstractmethod
    def _query(self, what: str, sql: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        """The rows of one statement; ``what`` names the work for an error message."""

    @abstractmethod
    def _execute(self, what: str, steps: Sequence[Statement | Rows]) -> int:
        """Run ``steps`` in one transaction; how many rows they changed."""

    # Reading in chunks

    def _lookup(
        self, what: str, sql: str, params: Mapping[str, Any], ids: Sequence[str]
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql`` (its ``:ids`` one chunk of ``ids`` at a time)."""
        for chunk in chunks(ids, self.chunk_size):
            yield from self._query(what, sql, {**params, "ids": self.dialect.strings(chunk)})

    def _per_chunk(
        self, sql: str, params: Mapping[str, Any], ids: Iterable[str]
    ) -> list[Statement]:
        """``sql`` once per chunk of ``ids`` (sorted, each once) passed as ``:ids``: one
        transaction's steps. Sorted, two runs lock shared ids in one order: no deadlock."""
        return [
            (sql, {**params, "ids": self.dialect.strings(chunk)})
            for chunk in chunks(sorted(set(ids)), self.chunk_size)
        ]

    def _execute_per_chunk(
        self, doing: str, sql: str, params: Mapping[str, Any], ids: Iterable[str]
    ) -> None:
        """Run ``sql`` over ``ids`` a chunk at a time (``_per_chunk``) in one transaction;
        nothing at all when there are no ids."""
        steps = self._per_chunk(sql, params, ids)
        if steps:
            self._execute(doing, steps)

    def _forget_profiles(
        self, table: str, doing: str, scope: str, object: str, ids: Iterable[str]
    ) -> None:
        """Remove the rows of ``ids`` from ``table``, a table keyed by scope, object and id."""
        sql = (
            f"DELETE FROM {table} "  # noqa: S608 - a table name of ours, then placeholders
            f"WHERE scope = :scope AND object = :object AND {self.dialect.ids_in('id')}"
        )
        self._execute_per_chunk(doing, sql, {"scope": scope, "object": object}, ids)

    # The schema (schema.py)

    def schema_versions(self) -> list[int]:
        """The migrations this ledger has had, in order."""
        rows = self._query(
            "reading the schema version", "SELECT version FROM ledger_schema ORDER BY version", {}
        )
        return [int(version) for (version,) in rows]

    # skip_unchanged: confirmed_rows

    def row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]:
        """The confirmed row hash of each of ``ids`` that has one."""
        sql = (
            "SELECT id, hash FROM confirmed_rows "  # noqa: S608 - only placeholders
            f"WHERE scope = :scope AND object = :object AND {self.dialect.ids_in('id')}"
        )
        rows = self._lookup(
            "looking up unchanged rows", sql, {"scope": scope, "object": object}, ids
        )
        return {row_id: bytes(digest) for row_id, digest in rows}

    def save_row_hashes(self, scope: str, object: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Record ``(id, hash)`` pairs as confirmed, replacing earlier hashes of those ids."""
        # One entry per id (the last wins), in id order: two runs writing overlapping ids then
        # lock them in the same order and cannot deadlock.
        latest = sorted(dict(rows).items())
        if not latest:
            return
        confirmed = Rows(
            "confirmed_rows",
            {"scope": scope, "object": object, "confirmed_at": time.time()},
            ("id", "hash"),
            latest,
            "ON CONFLICT (scope, object, id) "
            "DO UPDATE SET hash = excluded.hash, confirmed_at = excluded.confirmed_at",
            moments=("confirmed_at",),
            binary=("hash",),
        )
        self._execute("recording confirmed rows", [confirmed])

    def forget_rows(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """Remove the entries of ``ids`` (deleted profiles: a profile made again is sent again)."""
        self._forget_profiles("confirmed_rows", "removing deleted profiles", scope, object, ids)

    # Events: accepted_events

    def accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` Userpilot already accepted as events of ``stream``."""
        sql = (
            "SELECT key FROM accepted_events "  # noqa: S608 - only placeholders
            f"WHERE scope = :scope AND stream = :stream AND {self.dialect.ids_in('key')}"
        )
        rows = self._lookup(
            "looking up accepted events", sql, {"scope": scope, "stream": stream}, keys
        )
        return {key for (key,) in rows}

    def add_accepted_events(
        self,
        scope: str,
        stream: str,
        keys: Iterable[str],
        name: str | None = None,
        *,
        user_id: str | None = None,
        run_id: str | None = None,
        via: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Record event keys (of events named ``name``, of ``user_id``, sent by ``run_id``
        ``via`` the track API or an import) as accepted; present keys stay as they were."""
        unique = sorted(set(keys))
        if not unique:
            return
        shared = {
            "scope": scope,
            "stream": stream,
            "accepted_at": time.time(),
            "name": name,
            "user_id": user_id,
            "run_id": run_id,
            "via": via,
            "outcome": outcome,
        }
        accepted = Rows(
            "accepted_events",
            shared,
            ("key",),
            [(key,) for key in unique],
            "ON CONFLICT (scope, stream, key) DO NOTHING",
            moments=("accepted_at",),
        )
        self._execute("recording accepted events", [accepted])

    def user_events(self, scope: str | None, user_id: str) -> list[EventEntry]:
        """The accepted events of user ``user_id``, newest first (none in a ledger older than
        schema version 7, which kept no user per event)."""
        if self.version < RUNS_VERSION:
            return []
        accepted = self.dialect.seconds("e.accepted_at")
        rows = self._query(
            "reading a user's events",
            _event_select(accepted) + f" WHERE e.user_id = :user_id AND {_if_given('e.scope')}"
            f" ORDER BY coalesce(e.occurred_at, {accepted}) DESC, e.stream, e.key",
            {"user_id": user_id, "scope": scope},
        )
        return [_event(row) for row in rows]

    def event_entries(self, scope: str | None) -> list[EventEntry]:
        """Every accepted event key, by account, user, stream and key (in a ledger older than
        schema version 7, without users, runs or jobs)."""
        accepted = self.dialect.seconds("e.accepted_at")
        if self.version < RUNS_VERSION:
            select = (
                "SELECT e.scope, e.stream, e.key, e.name, NULL, NULL, NULL, NULL, "  # noqa: S608
                f"{accepted}, NULL, NULL, NULL, NULL FROM accepted_events e"
            )
            order = "e.scope, e.stream, e.key"
        else:
            select = _event_select(accepted)
            # Keys without a user last, on both backends (PostgreSQL sorts NULL last, SQLite
            # first).
            order = "e.scope, e.user_id IS NULL, e.user_id, e.stream, e.key"
        rows = self._query(
            "exporting the accepted events",
            f"{select} WHERE {_if_given('e.scope')} ORDER BY {order}",
            {"scope": scope},
        )
        return [_event(row) for row in rows]

    # Mirror deletes (memory/mirror.py): the version each id of a stream was last loaded in.
    # A stream's id is a candidate when the stream's finished version lacks it and no other
    # stream holds it: none has it in version_ids (a stream's rows there are ids of its latest
    # complete version or of a copy in progress: a finished version removes the others) and
    # none loaded it without versions (unversioned_ids).

    def save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Iterable[str]
    ) -> None:
        """Record ``ids`` (their jobs completed) as loaded from ``stream`` in ``version``."""
        unique = sorted(set(ids))
        if not unique:
            return
        loaded = Rows(
            "version_ids",
            {
                "scope": scope,
                "object": object,
                "stream": stream,
                "version": version,
                "loaded_at": time.time(),
            },
            ("id",),
            [(row_id,) for row_id in unique],
            "ON CONFLICT (scope, object, stream, id) "
            "DO UPDATE SET version = excluded.version, loaded_at = excluded.loaded_at",
        )
        self._execute("recording the ids of a full-table version", [loaded])

    def save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Iterable[str]
    ) -> None:
        """Record ``ids`` (their jobs completed) as loaded from ``stream`` without a version."""
        unique = sorted(set(ids))
        if not unique:
            return
        loaded = Rows(
            "unversioned_ids",
            {"scope": scope, "object": object, "stream": stream, "loaded_at": time.time()},
            ("id",),
            [(row_id,) for row_id in unique],
            "ON CONFLICT (id, scope, object, stream) DO NOTHING",
        )
        self._execute("recording the ids of a stream without versions", [loaded])

    def forget_version_ids(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """Userpilot accepted deleting ``ids``: no stream holds them, none deletes them again."""
        ids = sorted(set(ids))
        steps = [
            step
            for table in ("version_ids", "unversioned_ids")
            for step in self._per_chunk(
                f"DELETE FROM {table} "  # noqa: S608 - a table name and placeholders
                f"WHERE {self.dialect.ids_in('id')} AND scope = :scope AND object = :object",
                {"scope": scope, "object": object},
                ids,
            )
        ]
        if steps:
            self._execute("removing deleted profiles from the full-table versions", steps)

    def version_entries(self, scope: str, object: str, stream: str) -> dict[str, int]:
        """Each id recorded for ``stream``, with the version it was last loaded in (a plan)."""
        rows = self._query(
            "reading a stream's full-table versions",
            "SELECT id, version FROM version_ids WHERE scope = :scope AND object = :object "
            "AND stream = :stream",
            {"scope": scope, "object": object, "stream": stream},
        )
        return {row_id: int(version) for row_id, version in rows}

    def ids_held_by_others(
        self, scope: str, object: str, stream: str, ids: Sequence[str]
    ) -> set[str]:
        """Which of ``ids`` another stream than ``stream`` holds, with or without versions."""
        found: set[str] = set()
        for table in ("version_ids", "unversioned_ids"):
            sql = (
                f"SELECT id FROM {table} "  # noqa: S608 - a table name and placeholders
                "WHERE scope = :scope AND object = :object AND stream <> :stream "
                f"AND {self.dialect.ids_in('id')}"
            )
            params = {"scope": scope, "object": object, "stream": stream}
            found.update(
                i for (i,) in self._lookup("looking up ids other streams hold", sql, params, ids)
            )
        return found

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id was recorded as loaded from ``stream`` in ``version``."""
        rows = self._query(
            "looking up a full-table version",
            "SELECT 1 FROM version_ids WHERE scope = :scope AND object = :object "
            "AND stream = :stream AND version = :version LIMIT 1",
            {"scope": scope, "object": object, "stream": stream, "version": version},
        )
        return bool(rows)

    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int, int]:
        """``(known, candidates, held)``: the stream's recorded ids; those ``version`` lacks
        that no other stream holds; those it lacks that another stream holds."""
        sql = f"""
            SELECT count(*),
                count(*) FILTER (WHERE v.version <> :version AND NOT {_held_elsewhere("v")}),
                count(*) FILTER (WHERE v.version <> :version AND {_held_elsewhere("v")})
            FROM version_ids v
            WHERE v.scope = :scope AND v.object = :object AND v.stream = :stream
        """  # noqa: S608 - no input in the text
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        known, candidates, held = self._query("counting a version's missing ids", sql, params)[0]
        return int(known), int(candidates or 0), int(held or 0)

    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's ids missing from ``version`` that no other stream holds, sorted."""
        sql = f"""
            SELECT v.id FROM version_ids v
            WHERE v.scope = :scope AND v.object = :object AND v.stream = :stream
                AND v.version <> :version AND NOT {_held_elsewhere("v")}
            ORDER BY v.id
        """  # noqa: S608 - no input in the text
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        return [row_id for (row_id,) in self._query("listing a version's missing ids", sql, params)]

    def drop_ids_held_elsewhere(self, scope: str, object: str, stream: str, version: int) -> int:
        """The stream no longer holds its ids missing from ``version`` that another stream
        holds: its rows for them go (how many did)."""
        sql = f"""
            DELETE FROM version_ids
            WHERE scope = :scope AND object = :object AND stream = :stream
                AND version <> :version AND {_held_elsewhere("version_ids")}
        """  # noqa: S608 - no input in the text
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        return self._execute("releasing the ids another stream holds", [(sql, params)])

    # Keys cleared (records/object_keys.py): the flattened keys sent under object properties.

    def object_keys(self, scope: str, stream: str) -> dict[str, list[str]]:
        """Per object property of ``stream``, the flattened keys ever sent under it."""
        rows = self._query(
            "reading object keys",
            "SELECT property, key FROM object_keys WHERE scope = :scope AND stream = :stream "
            "ORDER BY property, key",
            {"scope": scope, "stream": stream},
        )
        found: dict[str, list[str]] = {}
        for prop, key in rows:
            found.setdefault(prop, []).append(key)
        return found

    def add_object_keys(self, scope: str, stream: str, keys: dict[str, list[str]]) -> None:
        """Record keys as sent under their properties (already present ones stay)."""
        pairs = sorted({(prop, key) for prop, names in keys.items() for key in names})
        if not pairs:
            return
        sent = Rows(
            "object_keys",
            {"scope": scope, "stream": stream, "first_sent_at": time.time()},
            ("property", "key"),
            pairs,
            "ON CONFLICT (scope, stream, property, key) DO NOTHING",
        )
        self._execute("recording object keys", [sent])

    # The sync history (memory/history.py): sync_jobs, one row per bulk job or deletion request
    # (NULL outcome: not known, the run stopped first); sync_history, one row per profile per
    # job or request that named it, the newest ``keep`` kept; deleted_profiles, the profiles
    # whose deletion Userpilot accepted, until the source sends them live again.

    def record_sent(
        self, scope: str, job: SentJob, rows: Sequence[tuple[str, bytes | None]], keep: int
    ) -> None:
        """A job or deletion request went out: note it, and one history entry per profile.

        Older entries of those profiles beyond the newest ``keep`` are removed in the same
        transaction, so the history grows with the profiles, not with the runs.
        """
        steps: list[Statement | Rows] = [
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
            steps.append(
                Rows(
                    "sync_history",
                    {
                        "scope": scope,
                        "object": job.object,
                        "sent_at": job.sent_at,
                        "job_id": job.job_id,
                    },
                    ("id", "hash"),
                    rows,
                    "ON CONFLICT DO NOTHING",
                    binary=("hash",),
                )
            )
            prune = f"""
                DELETE FROM sync_history
                WHERE scope = :scope AND object = :object AND {self.dialect.ids_in("id")}
                  AND sent_at < (
                    SELECT x.sent_at FROM sync_history x
                    WHERE x.id = sync_history.id AND x.scope = sync_history.scope
                      AND x.object = sync_history.object
                    ORDER BY x.sent_at DESC LIMIT 1 OFFSET :skip)
            """  # noqa: S608 - only placeholders
            params = {"scope": scope, "object": job.object, "skip": keep - 1}
            steps += self._per_chunk(prune, params, (row_id for row_id, _ in rows))
        self._execute("recording the sync history", steps)

    def record_outcome(self, scope: str, job_id: str, outcome: str, ended_at: float) -> None:
        """How a job or deletion request ended (``completed``, ``failed``, ``accepted``...)."""
        sql = (
            "UPDATE sync_jobs SET ended_at = :ended_at, outcome = :outcome "
            "WHERE scope = :scope AND job_id = :job_id"
        )
        params = {"scope": scope, "job_id": job_id, "outcome": outcome, "ended_at": ended_at}
        self._execute("recording how a job ended", [(sql, params)])

    def remember_deletions(
        self, scope: str, object: str, ids: Iterable[str], job_id: str, accepted_at: float
    ) -> None:
        """Userpilot accepted the deletion of ``ids`` (HTTP 202)."""
        unique = sorted(set(ids))
        if not unique:
            return
        deleted = Rows(
            "deleted_profiles",
            {"scope": scope, "object": object, "accepted_at": accepted_at, "job_id": job_id},
            ("id",),
            [(row_id,) for row_id in unique],
            "ON CONFLICT (scope, object, id) DO UPDATE SET accepted_at = excluded.accepted_at, "
            "job_id = excluded.job_id, upserted_at = NULL",
        )
        self._execute("remembering accepted deletions", [deleted])

    def remembered_deletions(
        self, scope: str, object: str, ids: Sequence[str]
    ) -> dict[str, tuple[float, float | None]]:
        """For each of ``ids`` whose deletion Userpilot accepted: when, and when it was upserted
        again since (None: still deleted in the source)."""
        sql = (
            "SELECT id, accepted_at, upserted_at FROM deleted_profiles "  # noqa: S608
            f"WHERE scope = :scope AND object = :object AND {self.dialect.ids_in('id')}"
        )
        rows = self._lookup(
            "looking up accepted deletions", sql, {"scope": scope, "object": object}, ids
        )
        return {
            row_id: (float(at), float(again) if again is not None else None)
            for row_id, at, again in rows
        }

    def mark_upserted(self, scope: str, object: str, ids: Iterable[str], at: float) -> None:
        """The source sent ``ids`` live again before Userpilot's deletion run erased them."""
        sql = (
            "UPDATE deleted_profiles SET upserted_at = :at "  # noqa: S608 - placeholders
            f"WHERE scope = :scope AND object = :object AND {self.dialect.ids_in('id')} "
            "AND upserted_at IS NULL"
        )
        params = {"scope": scope, "object": object, "at": at}
        self._execute_per_chunk("noting profiles sent again after their deletion", sql, params, ids)

    def prune_deletions(self, scope: str, accepted_before: float) -> None:
        """Drop deletions long erased whose profile the source has sent live again since."""
        sql = (
            "DELETE FROM deleted_profiles WHERE scope = :scope "
            "AND upserted_at IS NOT NULL AND accepted_at < :before"
        )
        params = {"scope": scope, "before": accepted_before}
        self._execute("pruning accepted deletions", [(sql, params)])

    def forget_deletions(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """The source sent ``ids`` live again: a later deletion of them must be requested."""
        self._forget_profiles(
            "deleted_profiles", "forgetting accepted deletions", scope, object, ids
        )

    def has_remembered_deletions(self, scope: str) -> bool:
        """Whether any deletion of this account is remembered (most ledgers have none)."""
        rows = self._query(
            "looking up accepted deletions",
            "SELECT 1 FROM deleted_profiles WHERE scope = :scope LIMIT 1",
            {"scope": scope},
        )
        return bool(rows)

    # The sync history, as userpilot-ledger reads it (cli.py)

    def profile_history(self, scope: str | None, object: str | None, id: str) -> list[HistoryEntry]:
        """Every entry kept for profile ``id``, newest first."""
        rows = self._query(
            "reading a profile's history",
            _ENTRY_SELECT
            + f" WHERE h.id = :id AND {_if_given('h.scope')} AND {_if_given('h.object')}"
            " ORDER BY h.sent_at DESC",
            {"id": id, "scope": scope, "object": object},
        )
        return [_entry(row) for row in rows]

    def current_state(self, scope: str | None, object: str | None) -> list[HistoryEntry]:
        """The newest entry of every profile: what Userpilot was last sent for it."""
        rows = self._query(
            "exporting the current state",
            _ENTRY_SELECT  # noqa: S608 - only placeholders
            + f"""
            WHERE {_if_given("h.scope")} AND {_if_given("h.object")}
              AND h.sent_at = (SELECT max(x.sent_at) FROM sync_history x
                               WHERE x.id = h.id AND x.scope = h.scope AND x.object = h.object)
            ORDER BY h.scope, h.object, h.id
            """,  # noqa: S608 - only placeholders
            {"scope": scope, "object": object},
        )
        return [_entry(row) for row in rows]

    def jobs(self, scope: str | None, run_id: str | None, limit: int) -> list[JobEntry]:
        """Jobs and deletion requests of one run (or the newest ``limit``), in the order sent."""
        rows = self._query(
            "reading jobs",
            f"SELECT {_JOB_COLUMNS} FROM sync_jobs "  # noqa: S608 - only placeholders
            f"WHERE {_if_given('scope')} AND {_if_given('run_id')} "
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

    # Runs (memory/runs.py): one row per run that had a ledger, written as it starts and again
    # as it ends; a row without an end is a run killed, or one still going.

    def record_run_start(
        self, scope: str, run_id: str, started_at: float, orchestrator: Mapping[str, Any] | None
    ) -> None:
        """A run began (with what its orchestrator passed, if anything)."""
        sql = (
            "INSERT INTO runs (scope, run_id, started_at, orchestrator, orchestrator_run_id) "
            "VALUES (:scope, :run_id, :started_at, :orchestrator, :orchestrator_run_id) "
            "ON CONFLICT DO NOTHING"
        )
        params = {
            "scope": scope,
            "run_id": run_id,
            "started_at": started_at,
            "orchestrator": json.dumps(orchestrator, sort_keys=True) if orchestrator else None,
            "orchestrator_run_id": (orchestrator or {}).get("run_id"),
        }
        self._execute("recording the run's start", [(sql, params)])

    def record_run_end(
        self,
        scope: str,
        run_id: str,
        *,
        ended_at: float,
        outcome: str,
        exit_code: int,
        reason: str | None,
        counts: Mapping[str, Any],
    ) -> None:
        """How the run ended: its outcome, exit code, reason and the summary's counts."""
        sql = (
            "UPDATE runs SET ended_at = :ended_at, outcome = :outcome, exit_code = :exit_code, "
            "reason = :reason, counts = :counts WHERE scope = :scope AND run_id = :run_id"
        )
        params = {
            "scope": scope,
            "run_id": run_id,
            "ended_at": ended_at,
            "outcome": outcome,
            "exit_code": exit_code,
            "reason": reason,
            "counts": json.dumps(counts, sort_keys=True),
        }
        self._execute("recording how the run ended", [(sql, params)])

    def runs(self, scope: str | None, run_id: str | None, limit: int) -> list[RunEntry]:
        """The newest ``limit`` runs (or the run ``run_id``), newest first."""
        rows = self._query(
            "reading runs",
            f"SELECT {_RUN_COLUMNS} FROM runs "  # noqa: S608 - only placeholders
            f"WHERE {_if_given('scope')} AND {_if_given('run_id')} "
            "ORDER BY started_at DESC, run_id LIMIT :limit",
            {"scope": scope, "run_id": run_id, "limit": limit},
        )
        return [_run(row) for row in rows]

    # Import API files (memory/imported.py): import_jobs holds each file from before its upload
    # until its job's end is known; import_keys the keys of its events until then.

    def record_import(
        self,
        scope: str,
        filename: str,
        run_id: str,
        keys: Mapping[str, Sequence[str]],
        at: float,
        *,
        events: Mapping[str, ImportedEvent] | None = None,
    ) -> None:
        """An events file is about to go up: the file, and the keys of its events per stream
        (with, from ``events``, each one's user, name and time)."""
        details = events or {}
        blank = ImportedEvent(None, None, None)
        steps: list[Statement | Rows] = [
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
            Rows(
                "import_keys",
                {"scope": scope, "filename": filename, "stream": stream},
                ("key", "user_id", "name", "occurred_at"),
                [
                    (key, event.user_id, event.name, event.occurred_at)
                    for key in sorted(set(stream_keys))
                    for event in [details.get(key, blank)]
                ],
                "ON CONFLICT DO NOTHING",
                numbers=("occurred_at",),
            )
            for stream, stream_keys in sorted(keys.items())
            if stream_keys
        ]
        self._execute("recording an import file", steps)

    def import_tried(self, scope: str, filename: str, *, may_have_arrived: bool) -> None:
        """A try of the file's upload is about to go (``True``), or every try so far proved
        that none of it reached Userpilot (``False``)."""
        before, after = (READY, SENT) if may_have_arrived else (SENT, READY)
        sql = (
            "UPDATE import_jobs SET state = :after "
            "WHERE scope = :scope AND filename = :filename AND state = :before"
        )
        params = {"scope": scope, "filename": filename, "before": before, "after": after}
        self._execute("recording an import file's upload", [(sql, params)])

    def import_accepted(self, scope: str, filename: str, job_id: str) -> None:
        """Userpilot named the file's job: a rerun follows it by its id."""
        sql = (
            "UPDATE import_jobs SET state = :state, job_id = :job_id "
            "WHERE scope = :scope AND filename = :filename AND settled_at IS NULL"
        )
        params = {"scope": scope, "filename": filename, "state": ACCEPTED, "job_id": job_id}
        self._execute("recording an import job", [(sql, params)])

    def settle_import(self, scope: str, filename: str, outcome: str, at: float) -> None:
        """The file's end is known: ``completed``, ``failed``, ``unconfirmed`` or ``not sent``.

        One transaction: the keys go to ``accepted_events`` (completed, unconfirmed) or are
        dropped, and the file is marked settled (a file never sent is forgotten). Settling a
        file twice (two runs at once) changes nothing the second time.
        """
        if outcome not in _SETTLED:
            raise ValueError(f"an import file is settled as one of {_SETTLED}, not {outcome!r}")
        params = {
            "scope": scope,
            "filename": filename,
            "at": at,
            "outcome": outcome,
            "event_outcome": EVENT_IMPORTED if outcome == COMPLETED else outcome,
            "via": IMPORT,
        }
        steps: list[Statement | Rows] = []
        if outcome in _KEPT:
            moment = self.dialect.moment.format(param="at")
            steps.append(
                (
                    "INSERT INTO accepted_events (scope, stream, key, accepted_at, name, "  # noqa: S608
                    "user_id, run_id, via, outcome, occurred_at, filename) "
                    f"SELECT k.scope, k.stream, k.key, {moment}, k.name, k.user_id, j.run_id, "
                    ":via, :event_outcome, k.occurred_at, k.filename FROM import_keys k "
                    "LEFT JOIN import_jobs j ON j.scope = k.scope AND j.filename = k.filename "
                    "WHERE k.scope = :scope AND k.filename = :filename ON CONFLICT DO NOTHING",
                    params,
                )
            )
        steps.append(
            ("DELETE FROM import_keys WHERE scope = :scope AND filename = :filename", params)
        )
        if outcome == NOT_SENT:
            forget = (
                "DELETE FROM import_jobs WHERE scope = :scope AND filename = :filename "
                "AND settled_at IS NULL"
            )
            steps.append((forget, params))
        else:
            settle = (
                "UPDATE import_jobs SET state = :outcome, settled_at = :at "
                "WHERE scope = :scope AND filename = :filename AND settled_at IS NULL"
            )
            steps.append((settle, params))
        self._execute("settling an import file", steps)

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
                filename, run_id, state, job_id, events.get(filename, {}), float(recorded_at)
            )
            for filename, run_id, state, job_id, recorded_at in files
        ]


_RUN_COLUMNS = (
    "scope, run_id, started_at, ended_at, outcome, exit_code, reason, counts, orchestrator"
)


def _event_select(accepted: str) -> str:
    """SELECT of accepted events (alias ``e``) with their import job, as :func:`_event` reads."""
    return (
        "SELECT e.scope, e.stream, e.key, e.name, e.user_id, e.run_id, e.via, e.outcome, "  # noqa: S608
        f"{accepted}, e.occurred_at, j.job_id, j.recorded_at, j.settled_at FROM accepted_events e "
        "LEFT JOIN import_jobs j ON j.scope = e.scope AND j.filename = e.filename"
    )


def _event(row: Sequence[Any]) -> EventEntry:
    scope, stream, key, name, user_id, run_id, via, outcome, accepted, occurred = row[:10]
    job, sent, ended = row[10:]
    return EventEntry(
        scope,
        stream,
        key,
        name,
        user_id,
        run_id,
        via,
        outcome,
        float(accepted),
        float(occurred) if occurred is not None else None,
        job,
        float(sent) if sent is not None else None,
        float(ended) if ended is not None else None,
    )


def _run(row: Sequence[Any]) -> RunEntry:
    scope, run_id, started, ended, outcome, code, reason, counts, orchestrator = row
    return RunEntry(
        scope,
        run_id,
        float(started),
        float(ended) if ended is not None else None,
        outcome,
        int(code) if code is not None else None,
        reason,
        json.loads(counts) if counts else None,
        json.loads(orchestrator) if orchestrator else None,
    )


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
