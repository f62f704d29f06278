"""The ledger in PostgreSQL, reached through SQLAlchemy with psycopg 3 (the ``postgres`` extra).

For runs in containers whose disk is gone after each run. A URL's password is never written
anywhere: messages go through :func:`target_userpilot.privacy.redact.redact`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from target_userpilot.errors import ConfigurationError, LedgerUnavailable, WaitInterrupted
from target_userpilot.ledger.base import EXTRA_HINT, Ledger, check_readable, check_version, chunks
from target_userpilot.ledger.history import SentJob
from target_userpilot.ledger.schema import VERSION_TABLE, apply_pending, latest_version
from target_userpilot.ledger.tables import PostgresTables
from target_userpilot.privacy.redact import password_of, redact

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override

logger = logging.getLogger("target_userpilot")

T = TypeVar("T")


class _PgChange:
    """A migration's view of the open transaction."""

    backend = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.notices: list[str] = []

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        result = self._conn.execute(text(sql), params or {})
        return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    def notice(self, sentence: str) -> None:
        self.notices.append(sentence)


def _pg_version(conn: Any) -> int | None:
    """The database's schema version; None before versions existed (or for a new database)."""
    from sqlalchemy import text

    if conn.execute(text("SELECT to_regclass('ledger_schema')")).scalar() is None:
        return None
    return int(conn.execute(text("SELECT coalesce(max(version), 0) FROM ledger_schema")).scalar())


#: Serialises schema upgrades between runs starting at once: the second waits for the first's
#: transaction, then finds the migrations applied.
_PG_SCHEMA_LOCK = 0x7573_6572_7069  # "userpi"
_PG_LOOKUP_ROWS = """
    SELECT id, hash FROM confirmed_rows
    WHERE scope = :scope AND object = :object AND id = ANY(:ids)
"""
_PG_SAVE_ROWS = """
    INSERT INTO confirmed_rows (scope, object, id, hash, confirmed_at)
    SELECT :scope, :object, row_id, digest, now()
    FROM unnest(CAST(:ids AS text[]), CAST(:hashes AS bytea[])) AS batch(row_id, digest)
    ON CONFLICT (scope, object, id)
    DO UPDATE SET hash = EXCLUDED.hash, confirmed_at = EXCLUDED.confirmed_at
"""
_PG_FORGET_ROWS = """
    DELETE FROM confirmed_rows WHERE scope = :scope AND object = :object AND id = ANY(:ids)
"""
_PG_LOOKUP_EVENTS = """
    SELECT key FROM accepted_events
    WHERE scope = :scope AND stream = :stream AND key = ANY(:keys)
"""
_PG_ADD_EVENTS = """
    INSERT INTO accepted_events (scope, stream, key, accepted_at, name)
    SELECT :scope, :stream, key, now(), :name FROM unnest(CAST(:keys AS text[])) AS batch(key)
    ON CONFLICT (scope, stream, key) DO NOTHING
"""

_PG_ADD_HISTORY = """
    INSERT INTO sync_history (scope, object, id, sent_at, job_id, hash)
    SELECT :scope, :object, row_id, :sent_at, :job_id, digest
    FROM unnest(CAST(:ids AS text[]), CAST(:hashes AS bytea[])) AS batch(row_id, digest)
    ON CONFLICT DO NOTHING
"""

_PG_ADD_IMPORT_KEYS = """
    INSERT INTO import_keys (scope, filename, stream, key)
    SELECT :scope, :filename, :stream, key FROM unnest(CAST(:keys AS text[])) AS batch(key)
    ON CONFLICT DO NOTHING
"""


class _NoAnswer(Exception):
    """The database did not answer (a lost connection, a server restarting): worth another try.

    Holds the driver's words without any password, for the retry's messages."""


class PostgresLedger(PostgresTables, Ledger):
    """A PostgreSQL database, reached through SQLAlchemy with psycopg 3.

    Each thread takes its own pooled connection, so the watcher's confirms and the reading
    thread's lookups do not wait on each other. A connection lost mid-run (restart, failover) is
    replaced and the operation tried again by the run's retry policy (``RetryPolicy.reconnect``,
    for ``reconnect_max_time`` seconds, each pause ended at once by the run's stop); past that
    the run stops with :class:`LedgerUnavailable`.
    """

    chunk_size = 5000

    def __init__(
        self, state_db: str, *, connect_timeout: int = 10, read_only: bool = False
    ) -> None:
        import sqlalchemy
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import NoSuchModuleError

        #: As given, password included: for opening another connection, never for a message.
        self.url = state_db
        url = make_url(state_db)
        if url.drivername in ("postgresql", "postgres"):
            # SQLAlchemy's default PostgreSQL driver is psycopg2; the extra installs psycopg 3.
            url = url.set(drivername="postgresql+psycopg")
        self._secrets = [s for s in (url.password, password_of(state_db)) if s]
        self.host = f"{url.host or 'localhost'}:{url.port or 5432}"
        self.description = f"PostgreSQL database '{url.database or ''}' at {self.host}"
        self._user = url.username or ""
        self._read_only = read_only
        _quiet_sqlalchemy_logs()
        try:
            self._engine = sqlalchemy.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=4,
                connect_args={"connect_timeout": connect_timeout},
                hide_parameters=True,
            )
        except (ImportError, NoSuchModuleError) as exc:
            driver = url.get_driver_name()
            msg = (
                f"state_db is a PostgreSQL URL, but its driver '{driver}' is not installed "
                f"({redact(str(exc), self._secrets)}). Install the PostgreSQL extra: "
                f"{EXTRA_HINT}."
            )
            raise ConfigurationError(msg) from None
        if read_only:
            # Every transaction of every pooled connection is READ ONLY: the server itself
            # refuses any write, whatever a query would do.
            self._engine = self._engine.execution_options(postgresql_readonly=True)
        try:
            if read_only:
                self.version = self._readable_version()
                return
            notices = self._upgrade()
        except ImportError as exc:
            msg = (
                f"state_db is a PostgreSQL URL, but its driver is not installed ({exc}). "
                f"Install the PostgreSQL extra: {EXTRA_HINT}."
            )
            raise ConfigurationError(msg) from None
        except sqlalchemy.exc.DBAPIError as exc:
            self._engine.dispose()
            raise ConfigurationError(self._connect_message(exc)) from None
        for sentence in notices:
            logger.warning("%s (state_db %s)", sentence, self.description)
        self.version = latest_version()

    def _readable_version(self) -> int:
        """A reader's check: the schema version, or a refusal if the database holds no ledger."""
        from sqlalchemy import text

        with self._engine.begin() as conn:
            version = _pg_version(conn)
            legacy = conn.execute(text("SELECT to_regclass('confirmed_rows')")).scalar()
        try:
            return check_readable(version, self.description, legacy=legacy is not None)
        except ConfigurationError:
            self._engine.dispose()
            raise

    def _upgrade(self) -> list[str]:
        """Apply the migrations the database lacks, under an advisory lock, in one transaction."""
        import sqlalchemy

        with self._engine.begin() as conn:
            # Reading the version needs no right beyond SELECT: a user given ready-made tables
            # (PostgreSQL 15 grants no CREATE on public) opens an up-to-date ledger.
            if _pg_version(conn) == latest_version():
                return []
        with self._engine.connect() as conn:
            # A session lock, taken before the upgrade's own transaction: that transaction then
            # starts after the previous holder's commit and sees its tables (a lock taken inside
            # it can leave its view of the catalog older than that commit).
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
            conn.commit()
            try:
                with conn.begin():
                    current = _pg_version(conn)
                    if current is None:
                        conn.execute(sqlalchemy.text(VERSION_TABLE))
                    check_version(current or 0, self.description)
                    change = _PgChange(conn)
                    apply_pending(change, current or 0)
            finally:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_SCHEMA_LOCK}
                )
                conn.commit()
        return change.notices

    @override
    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @override
    def schema_versions(self) -> list[int]:
        """The migrations this database has had, in order."""
        from sqlalchemy import text

        rows = self._run(
            "reading the schema version",
            lambda conn: conn.execute(
                text("SELECT version FROM ledger_schema ORDER BY version")
            ).fetchall(),
        )
        return [version for (version,) in rows]

    def _connect_message(self, exc: Exception) -> str:
        reason = self._reason(exc)
        lowered = reason.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            return (
                f"state_db: PostgreSQL at {self.host} refused the credentials of user "
                f"'{self._user}' ({reason}). Check the user name and password in state_db."
            )
        if "does not exist" in lowered and self._read_only:
            return (
                f"state_db: PostgreSQL at {self.host} answered: {reason}. There is no ledger "
                "there: check the database and user names in state_db. Nothing was created."
            )
        if "does not exist" in lowered:
            return (
                f"state_db: PostgreSQL at {self.host} answered: {reason}. Create the database "
                "and user, or fix their names in state_db."
            )
        if "permission denied" in lowered and self._read_only:
            return (
                f"state_db: user '{self._user}' may not read the ledger's tables on PostgreSQL "
                f"at {self.host} ({reason}). Grant it SELECT on them."
            )
        if "permission denied" in lowered:
            return (
                f"state_db: user '{self._user}' may not create the ledger's tables on "
                f"PostgreSQL at {self.host} ({reason}). Grant it CREATE on the database's schema, "
                "or open the ledger once as a user who may (the tables confirmed_rows, "
                "accepted_events and the others are made then), and grant this one SELECT, "
                "INSERT, UPDATE and DELETE on them."
            )
        return (
            f"state_db: could not connect to PostgreSQL at {self.host} ({reason}). Check that "
            "the server runs and accepts connections from here, and the host and port in state_db."
        )

    def _reason(self, exc: Exception) -> str:
        """The driver's own words, first line, without any password."""
        original = getattr(exc, "orig", None) or exc
        lines = [line.strip() for line in str(original).splitlines() if line.strip()]
        return redact(lines[0] if lines else type(original).__name__, self._secrets)

    @override
    def _run(self, what: str, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in a transaction; a lost connection is tried again for a
        while (the retry policy's ``reconnect``), and a stop ends the wait before the next try."""
        from sqlalchemy.exc import DBAPIError

        def once() -> T:
            try:
                with self._engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated or _is_transient(exc):
                    raise _NoAnswer(self._reason(exc)) from None
                raise self._unavailable(what, self._reason(exc)) from None

        def retrying(error: BaseException, seconds: float) -> None:
            logger.warning(
                "The ledger at %s did not answer while %s (%s); retrying in %.1f s.",
                self.host,
                what,
                error,
                seconds,
            )

        try:
            return self.retry.reconnect(
                once, _NoAnswer, f"The ledger at {self.host}", stop=self.stop, log=retrying
            )
        except _NoAnswer as exc:
            raise self._unavailable(what, str(exc)) from None
        except WaitInterrupted as exc:
            reason = str(exc.last_error) if exc.last_error is not None else "no answer"
            raise self._unavailable(
                what, f"{reason}; the run stopped before it was tried again"
            ) from None

    def _unavailable(self, what: str, reason: str) -> LedgerUnavailable:
        msg = (
            f"The ledger (state_db, {self.description}) failed while {what}: {reason}. Rows "
            "Userpilot confirmed before this are recorded; once the database is back, rerun from "
            "the last STATE."
        )
        return LedgerUnavailable(msg)

    @override
    def _row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]:
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "ids": list(ids)}
        rows = self._run(
            "looking up unchanged rows",
            lambda conn: conn.execute(text(_PG_LOOKUP_ROWS), params).fetchall(),
        )
        return {row_id: bytes(digest) for row_id, digest in rows}

    @override
    def _save_row_hashes(self, scope: str, object: str, rows: list[tuple[str, bytes]]) -> None:
        from sqlalchemy import text

        def save(conn: Any) -> None:
            for chunk in chunks(rows, self.chunk_size):
                params = {
                    "scope": scope,
                    "object": object,
                    "ids": [row_id for row_id, _ in chunk],
                    "hashes": [digest for _, digest in chunk],
                }
                conn.execute(text(_PG_SAVE_ROWS), params)

        self._run("recording confirmed rows", save)

    @override
    def _forget_rows(self, scope: str, object: str, ids: Sequence[str]) -> None:
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "ids": list(ids)}
        self._run(
            "removing deleted profiles", lambda conn: conn.execute(text(_PG_FORGET_ROWS), params)
        )

    @override
    def _accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]:
        from sqlalchemy import text

        params = {"scope": scope, "stream": stream, "keys": list(keys)}
        rows = self._run(
            "looking up accepted events",
            lambda conn: conn.execute(text(_PG_LOOKUP_EVENTS), params).fetchall(),
        )
        return {key for (key,) in rows}

    @override
    def _add_accepted_events(
        self, scope: str, stream: str, keys: list[str], name: str | None
    ) -> None:
        from sqlalchemy import text

        def add(conn: Any) -> None:
            for chunk in chunks(keys, self.chunk_size):
                params = {"scope": scope, "stream": stream, "keys": list(chunk), "name": name}
                conn.execute(text(_PG_ADD_EVENTS), params)

        self._run("recording accepted events", add)

    # The history's primitives (history.py)

    @override
    def _query(self, what: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        return self._run(
            what, lambda conn: [tuple(row) for row in conn.execute(text(sql), params).fetchall()]
        )

    @override
    def _execute(self, what: str, steps: list[tuple[str, Any]]) -> None:
        from sqlalchemy import text

        def run(conn: Any) -> None:
            for sql, params in steps:
                conn.execute(text(sql), params)

        self._run(what, run)

    @override
    def _ids_in(self, column: str) -> str:
        return f"{column} = ANY(CAST(:ids AS text[]))"

    @override
    def _ids(self, ids: Sequence[str]) -> Any:
        return list(ids)

    @override
    def _epoch(self, param: str) -> str:
        return f"to_timestamp(:{param})"  # accepted_at is a TIMESTAMPTZ here

    @override
    def _import_keys_insert(
        self, scope: str, filename: str, stream: str, keys: Sequence[str]
    ) -> tuple[str, Any]:
        # One statement for the whole file: a row per key costs a round trip each otherwise.
        return (
            _PG_ADD_IMPORT_KEYS,
            {"scope": scope, "filename": filename, "stream": stream, "keys": list(keys)},
        )

    @override
    def _history_insert(
        self, scope: str, job: SentJob, rows: Sequence[tuple[str, bytes | None]]
    ) -> tuple[str, Any]:
        # One statement for the whole batch: a row per id costs a round trip each otherwise.
        return (
            _PG_ADD_HISTORY,
            {
                "scope": scope,
                "object": job.object,
                "sent_at": job.sent_at,
                "job_id": job.job_id,
                "ids": [row_id for row_id, _ in rows],
                "hashes": [digest for _, digest in rows],
            },
        )


def _is_transient(exc: Exception) -> bool:
    """A failure another try may get past: a lost connection, a deadlock, a server going down."""
    from sqlalchemy.exc import OperationalError

    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    # 08: connection exceptions; 40: transaction rollback (deadlock, serialization); 57P: the
    # server shutting down or restarting.
    return isinstance(exc, OperationalError) or code.startswith(("08", "40", "57P"))


def _quiet_sqlalchemy_logs() -> None:
    """Keep SQL statements and their parameters (ids, hashes) out of the run's log.

    SQLAlchemy logs statements at INFO on ``sqlalchemy.engine`` when that logger is enabled,
    which a DEBUG run enables for every logger. A level set explicitly is left alone.
    """
    for name in ("sqlalchemy.engine", "sqlalchemy.pool"):
        quiet = logging.getLogger(name)
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
