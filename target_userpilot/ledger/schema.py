"""The ledger's versioned schema: every table of ``state_db`` and how an old ledger is upgraded.

A ledger records the version of its schema in the table ``ledger_schema`` (one row per applied
migration). Opening a ledger (``open_ledger``) applies, in order and in one transaction, every
migration whose version is above the highest recorded one, so a ledger written by any earlier
release upgrades in place. The transaction holds the database's write lock for the whole upgrade
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), so several runs opening one
ledger at once apply each migration exactly once: the others wait, then find it applied. A reader
(``open_ledger(..., read_only=True)``, as ``userpilot-ledger``) never migrates: it reads a ledger
at the version it finds.

A ledger made before versions existed has no ``ledger_schema`` table: it counts as version 0, and
migration 1 (``CREATE TABLE IF NOT EXISTS`` of that release's tables) leaves its entries alone.

Adding a table or a column: write a function below decorated with ``@migration(N, "why")``,
taking the next free ``N``, and use ``change.backend`` where SQLite and PostgreSQL differ. A
migration never changes once released: a later change is a new migration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from target_userpilot.errors import ConfigurationError, LedgerMissing


class SchemaChange(Protocol):
    """One backend's open transaction, as a migration sees it."""

    #: ``"sqlite"`` or ``"postgresql"``.
    backend: str

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement with ``:name`` parameters; the rows it returns, if any."""
        ...

    def notice(self, sentence: str) -> None:
        """A WARNING for the user, logged once the upgrade is committed (so exactly once)."""
        ...


@dataclass(frozen=True)
class Migration:
    """One step of the schema: its version, why it exists, and what it does."""

    version: int
    summary: str
    apply: Callable[[SchemaChange], None]


#: Every migration, in version order.
MIGRATIONS: list[Migration] = []


def migration(version: int, summary: str) -> Callable[[Callable[[SchemaChange], None]], Any]:
    """Register the decorated function as migration ``version`` (the next free number)."""

    def register(apply: Callable[[SchemaChange], None]) -> Callable[[SchemaChange], None]:
        if MIGRATIONS and version != MIGRATIONS[-1].version + 1:
            msg = f"ledger migration {version} follows {MIGRATIONS[-1].version}: take the next one"
            raise RuntimeError(msg)
        MIGRATIONS.append(Migration(version, summary, apply))
        return apply

    return register


def latest_version() -> int:
    """The schema version this release writes."""
    return MIGRATIONS[-1].version


#: The table that says which migrations a ledger has had.
VERSION_TABLE = """
    CREATE TABLE ledger_schema (
        version INTEGER PRIMARY KEY,
        summary TEXT NOT NULL,
        applied_at DOUBLE PRECISION NOT NULL
    )
"""


def check_version(current: int, description: str) -> None:
    """Refuse a ledger a newer release upgraded: this one would misread its tables."""
    if current > latest_version():
        msg = (
            f"The ledger (state_db, {description}) has schema version {current}, written by a "
            f"newer target-userpilot; this one knows versions up to {latest_version()}. Upgrade "
            "target-userpilot, or point state_db at another ledger."
        )
        raise ConfigurationError(msg)


def check_readable(version: int | None, description: str, *, legacy: bool) -> int:
    """For a reader: the ledger's schema version, or refuse a database that holds no ledger.

    ``version`` is None where the database has no ``ledger_schema`` table; ``legacy``: it has
    the tables of a ledger made before versions existed (version 0). A newer release's ledger is
    refused as the target refuses it.
    """
    if version is None and not legacy:
        msg = (
            f"state_db ({description}) holds no target-userpilot ledger: none of its tables are "
            "there. Nothing was created or changed."
        )
        raise LedgerMissing(msg)
    check_version(version or 0, description)
    return version or 0


def pending(current: int) -> list[Migration]:
    """The migrations a ledger at version ``current`` still needs, in order."""
    return [step for step in MIGRATIONS if step.version > current]


def apply_pending(change: SchemaChange, current: int) -> None:
    """Apply every migration above ``current`` in the caller's transaction, recording each."""
    for step in pending(current):
        step.apply(change)
        change.execute(
            "INSERT INTO ledger_schema (version, summary, applied_at) "
            "VALUES (:version, :summary, :at)",
            {"version": step.version, "summary": step.summary, "at": time.time()},
        )


def _blob(change: SchemaChange) -> str:
    return "BYTEA" if change.backend == "postgresql" else "BLOB"


def _without_rowid(change: SchemaChange) -> str:
    """SQLite stores a table with a composite key in the key's own B-tree: half the space."""
    return "" if change.backend == "postgresql" else " WITHOUT ROWID"


# The migrations, oldest first.


@migration(1, "row hashes (skip_unchanged) and accepted event keys, as before versions")
def _first_tables(change: SchemaChange) -> None:
    # The keys lead with the id on PostgreSQL: a lookup of thousands of ids
    # (``id = ANY(array)``) is then an index search per id whatever the planner's statistics
    # say. With the scope first, a table that grew since its last ANALYZE was filtered row by
    # row against the whole array: seconds per batch.
    if change.backend == "postgresql":
        change.execute(
            """
            CREATE TABLE IF NOT EXISTS confirmed_rows (
                scope TEXT NOT NULL,
                object TEXT NOT NULL,
                id TEXT NOT NULL,
                hash BYTEA NOT NULL,
                confirmed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (id, scope, object)
            )
            """
        )
        change.execute(
            """
            CREATE TABLE IF NOT EXISTS accepted_events (
                scope TEXT NOT NULL,
                stream TEXT NOT NULL,
                key TEXT NOT NULL,
                accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (key, scope, stream)
            )
            """
        )
        return
    change.execute(
        """
        CREATE TABLE IF NOT EXISTS confirmed_rows (
            scope TEXT NOT NULL,
            object TEXT NOT NULL,
            id TEXT NOT NULL,
            hash BLOB NOT NULL,
            confirmed_at REAL NOT NULL,
            PRIMARY KEY (scope, object, id)
        ) WITHOUT ROWID
        """
    )
    change.execute(
        """
        CREATE TABLE IF NOT EXISTS accepted_events (
            scope TEXT NOT NULL,
            stream TEXT NOT NULL,
            key TEXT NOT NULL,
            accepted_at REAL NOT NULL,
            PRIMARY KEY (scope, stream, key)
        ) WITHOUT ROWID
        """
    )


#: The scope dry runs write under: no account, so no key to fingerprint.
DRY_RUN_SCOPE = "dry-run"


@migration(2, "entries scoped by account (API host and key fingerprint); host-only ones dropped")
def _account_scope(change: SchemaChange) -> None:
    # Until now entries were scoped by API host alone, so two accounts on one host (staging and
    # production) shared them: the second skipped profiles only the first had. Such an entry
    # cannot prove which account's key wrote it, so none is trusted for any account. Keeping
    # them under another name would only keep personal data nobody can use: they are dropped.
    # Dry-run entries were never an account's and stay.
    params = {"dry": DRY_RUN_SCOPE}
    rows = change.execute("SELECT count(*) FROM confirmed_rows WHERE scope <> :dry", params)[0][0]
    events = change.execute("SELECT count(*) FROM accepted_events WHERE scope <> :dry", params)
    events = events[0][0]
    if not rows and not events:
        return
    change.execute("DELETE FROM confirmed_rows WHERE scope <> :dry", params)
    change.execute("DELETE FROM accepted_events WHERE scope <> :dry", params)
    change.notice(
        f"The ledger was upgraded to scope its entries by account (API host and a fingerprint "
        f"of the API key): its {rows} row hashes and {events} event keys were recorded per host "
        "only, so they cannot prove which account they belong to and were removed. The next "
        "skip_unchanged run sends those profiles once more (harmless: upserts), and an event "
        "the tap sends again that was accepted before this upgrade is sent again."
    )


#: The schema version that made the sync history's tables (migration 3): ``userpilot-ledger``
#: needs a ledger at least this new. A later migration that changes them raises it.
HISTORY_VERSION = 3


@migration(3, "sync history per profile, jobs and deletion requests, remembered deletions")
def _sync_history(change: SchemaChange) -> None:
    # Times are epoch seconds in both backends, so one SQL text serves both. On PostgreSQL the
    # profile tables' keys lead with the id, for the reason given in migration 1.
    pg = change.backend == "postgresql"
    real = "DOUBLE PRECISION" if pg else "REAL"
    # One row per bulk job or deletion request: what went, and how it ended (NULL: not known,
    # the run stopped before it ended).
    change.execute(
        f"""
        CREATE TABLE sync_jobs (
            scope TEXT NOT NULL,
            job_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            object TEXT NOT NULL,
            streams TEXT NOT NULL,
            rows INTEGER NOT NULL,
            sent_at {real} NOT NULL,
            ended_at {real},
            outcome TEXT,
            PRIMARY KEY (scope, job_id)
        )
        """
    )
    change.execute("CREATE INDEX sync_jobs_by_run ON sync_jobs (scope, run_id)")
    change.execute("CREATE INDEX sync_jobs_by_time ON sync_jobs (scope, sent_at)")
    # One row per profile per job or deletion request that named it: the newest few are kept
    # (ledger_history_entries). A NULL hash is a deletion.
    key = "id, scope, object, sent_at" if pg else "scope, object, id, sent_at"
    change.execute(
        f"""
        CREATE TABLE sync_history (
            scope TEXT NOT NULL,
            object TEXT NOT NULL,
            id TEXT NOT NULL,
            sent_at {real} NOT NULL,
            job_id TEXT NOT NULL,
            hash {_blob(change)},
            PRIMARY KEY ({key})
        ){_without_rowid(change)}
        """
    )
    # Profiles Userpilot accepted a deletion of: a deletion the tap sends again is not requested
    # again. ``upserted_at``: when the source sent the profile live again before Userpilot's
    # next deletion run (which may erase that upsert too); a later deletion is then requested.
    key = "id, scope, object" if pg else "scope, object, id"
    change.execute(
        f"""
        CREATE TABLE deleted_profiles (
            scope TEXT NOT NULL,
            object TEXT NOT NULL,
            id TEXT NOT NULL,
            accepted_at {real} NOT NULL,
            job_id TEXT NOT NULL,
            upserted_at {real},
            PRIMARY KEY ({key})
        ){_without_rowid(change)}
        """
    )
    # Events: the name beside the key and its time.
    change.execute("ALTER TABLE accepted_events ADD COLUMN name TEXT")


@migration(4, "mirror deletes: the version each id was last loaded in; object keys per stream")
def _versions_and_object_keys(change: SchemaChange) -> None:
    # version_ids: per stream, the full-table version each id was last loaded in (only ids
    # whose job completed), so a finished version finds the ids it lacks. Versions are epoch
    # seconds or milliseconds: BIGINT. The index by version finds them; the one by id removes a
    # deleted profile from every stream at once.
    # object_keys: the flattened keys sent under each object property of a stream, so a null
    # object clears them in a later run.
    rowid = _without_rowid(change)
    change.execute(
        f"""
        CREATE TABLE version_ids (
            scope TEXT NOT NULL,
            object TEXT NOT NULL,
            stream TEXT NOT NULL,
            id TEXT NOT NULL,
            version BIGINT NOT NULL,
            loaded_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, object, stream, id)
        ){rowid}
        """
    )
    change.execute(
        "CREATE INDEX version_ids_by_version ON version_ids (scope, object, stream, version)"
    )
    change.execute("CREATE INDEX version_ids_by_id ON version_ids (id, scope, object)")
    change.execute(
        f"""
        CREATE TABLE object_keys (
            scope TEXT NOT NULL,
            stream TEXT NOT NULL,
            property TEXT NOT NULL,
            key TEXT NOT NULL,
            first_sent_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, stream, property, key)
        ){rowid}
        """
    )


@migration(5, "mirror deletes: the ids each stream loaded without a full-table version")
def _unversioned_ids(change: SchemaChange) -> None:
    # A profile is a mirror delete's candidate only when no other stream that loaded it still
    # holds it. A stream without versions (incremental, or one a stream map filters) never shows
    # that it dropped an id, so every id it loaded counts as held: this table says which. The key
    # leads with the id on both backends: the one lookup is "which other stream has this id".
    change.execute(
        f"""
        CREATE TABLE unversioned_ids (
            scope TEXT NOT NULL,
            object TEXT NOT NULL,
            stream TEXT NOT NULL,
            id TEXT NOT NULL,
            loaded_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (id, scope, object, stream)
        ){_without_rowid(change)}
        """
    )


@migration(6, "import files recorded before their upload, with their event keys, until settled")
def _import_files(change: SchemaChange) -> None:
    # An Import API file is recorded before its upload and settled once its job's end is known,
    # by this run or by a rerun after a crash: import_jobs holds the file (the name a rerun
    # looks it up by, its job once Userpilot named it, how far it got), import_keys the keys of
    # its events until then.
    # state: 'ready' (nothing of it can have reached Userpilot), 'sent' (a try may have),
    # 'accepted' (job_id known); settled: 'completed', 'failed', 'unconfirmed'. A settled
    # file's keys are in accepted_events (completed, unconfirmed) or nowhere (failed).
    pg = change.backend == "postgresql"
    real = "DOUBLE PRECISION" if pg else "REAL"
    change.execute(
        f"""
        CREATE TABLE import_jobs (
            scope TEXT NOT NULL,
            filename TEXT NOT NULL,
            run_id TEXT NOT NULL,
            state TEXT NOT NULL,
            job_id TEXT,
            events INTEGER NOT NULL,
            recorded_at {real} NOT NULL,
            settled_at {real},
            PRIMARY KEY (scope, filename)
        )
        """
    )
    change.execute(
        "CREATE INDEX import_jobs_unsettled ON import_jobs (scope, recorded_at) "
        "WHERE settled_at IS NULL"
    )
    change.execute(
        f"""
        CREATE TABLE import_keys (
            scope TEXT NOT NULL,
            filename TEXT NOT NULL,
            stream TEXT NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (scope, filename, stream, key)
        ){_without_rowid(change)}
        """
    )


# store.RUNS_VERSION names this migration's version for readers.
@migration(7, "runs and how each ended; events by user, name, time and job")
def _runs_and_event_users(change: SchemaChange) -> None:
    # runs: one row per run that had a ledger, written as it starts and again as it ends. A
    # row without an end is a run killed (kill -9, a lost machine) or still going. ``counts``
    # is the end-of-run summary as JSON; ``orchestrator`` what the orchestrator passed (JSON),
    # its run id also in a column of its own.
    pg = change.backend == "postgresql"
    real = "DOUBLE PRECISION" if pg else "REAL"
    change.execute(
        f"""
        CREATE TABLE runs (
            scope TEXT NOT NULL,
            run_id TEXT NOT NULL,
            started_at {real} NOT NULL,
            ended_at {real},
            outcome TEXT,
            exit_code INTEGER,
            reason TEXT,
            counts TEXT,
            orchestrator TEXT,
            orchestrator_run_id TEXT,
            PRIMARY KEY (scope, run_id)
        )
        """
    )
    change.execute("CREATE INDEX runs_by_time ON runs (scope, started_at)")
    # Events: whose they are and how they went, so a user's history shows them. ``via``:
    # 'track' or 'import'; ``outcome``: 'accepted' (track), 'imported' (an import job that
    # completed) or 'unconfirmed'; ``occurred_at``: an imported event's own time
    # (``inserted_at``); ``filename``: its import file, whose job import_jobs names. Keys
    # accepted before this migration keep NULLs: nothing tells their user.
    for column in ("user_id TEXT", "run_id TEXT", "via TEXT", "outcome TEXT", "filename TEXT"):
        change.execute(f"ALTER TABLE accepted_events ADD COLUMN {column}")
    change.execute(f"ALTER TABLE accepted_events ADD COLUMN occurred_at {real}")
    change.execute(
        "CREATE INDEX accepted_events_by_user ON accepted_events (user_id, scope) "
        "WHERE user_id IS NOT NULL"
    )
    # An import file's events carry the same until the file is settled.
    for column in ("user_id TEXT", "name TEXT", f"occurred_at {real}"):
        change.execute(f"ALTER TABLE import_keys ADD COLUMN {column}")
