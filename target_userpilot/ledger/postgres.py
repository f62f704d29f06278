"""The ledger in PostgreSQL, reached through SQLAlchemy with psycopg 3 (the ``postgres`` extra).

For runs in containers whose disk is gone after each run. A URL's password is never written
anywhere: messages go through :func:`target_userpilot.privacy.redact.redact`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

# SQLAlchemy comes with the SDK; the PostgreSQL driver (psycopg) is the optional extra, loaded
# by ``create_engine`` below. This module is imported only for a PostgreSQL URL (``factory.py``).
import sqlalchemy
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, OperationalError

from target_userpilot.errors import ConfigurationError, LedgerUnavailable, WaitInterrupted
from target_userpilot.ledger.schema import (
    VERSION_TABLE,
    apply_pending,
    check_readable,
    check_version,
    latest_version,
)
from target_userpilot.ledger.store import Dialect, Ledger, Rows, Statement, chunks
from target_userpilot.privacy.redact import password_of, redact

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override

logger = logging.getLogger("target_userpilot")

T = TypeVar("T")

#: How to install the driver, for the message when it is missing.
EXTRA_HINT = "pip install 'target-userpilot[postgres]'"

#: A list of ids is one array parameter; the first tables keep moments as TIMESTAMPTZ.
POSTGRESQL = Dialect(
    one_of="{column} = ANY(CAST(:{param} AS text[]))",
    strings=list,
    moment="to_timestamp(:{param})",
    epoch="EXTRACT(EPOCH FROM {column})",
)


class _PgChange:
    """A migration's view of the open transaction."""

    backend = "postgresql"

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.notices: list[str] = []

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = self._conn.execute(sqlalchemy.text(sql), params or {})
        return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    def notice(self, sentence: str) -> None:
        self.notices.append(sentence)


def _pg_version(conn: Connection) -> int | None:
    """The database's schema version; None before versions existed (or for a new database)."""
    if conn.execute(sqlalchemy.text("SELECT to_regclass('ledger_schema')")).scalar() is None:
        return None
    found = conn.execute(sqlalchemy.text("SELECT coalesce(max(version), 0) FROM ledger_schema"))
    return int(found.scalar() or 0)


#: Serialises schema upgrades between runs starting at once: the second waits for the first's
#: transaction, then finds the migrations applied.
_PG_SCHEMA_LOCK = 0x7573_6572_7069  # "userpi"


class _NoAnswer(Exception):
    """The database did not answer (a lost connection, a server restarting): worth another try.

    Holds the driver's words without any password, for the retry's messages."""


class PostgresLedger(Ledger):
    """A PostgreSQL database, reached through SQLAlchemy with psycopg 3.

    Each thread takes its own pooled connection, so the watcher's confirms and the reading
    thread's lookups do not wait on each other. A connection lost mid-run (restart, failover) is
    replaced and the operation tried again by the run's retry policy (``RetryPolicy.reconnect``,
    for ``reconnect_max_time`` seconds, each pause ended at once by the run's stop); past that
    the run stops with :class:`LedgerUnavailable`.
    """

    chunk_size = 5000
    dialect = POSTGRESQL

    def __init__(
        self, state_db: str, *, connect_timeout: int = 10, read_only: bool = False
    ) -> None:
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
        except DBAPIError as exc:
            self._engine.dispose()
            raise ConfigurationError(self._connect_message(exc)) from None
        for sentence in notices:
            logger.warning("%s (state_db %s)", sentence, self.description)
        self.version = latest_version()

    def _readable_version(self) -> int:
        """A reader's check: the schema version, or a refusal if the database holds no ledger."""
        with self._engine.begin() as conn:
            version = _pg_version(conn)
            legacy = conn.execute(sqlalchemy.text("SELECT to_regclass('confirmed_rows')")).scalar()
        try:
            return check_readable(version, self.description, legacy=legacy is not None)
        except ConfigurationError:
            self._engine.dispose()
            raise

    def _upgrade(self) -> list[str]:
        """Apply the migrations the database lacks, under an advisory lock, in one transaction."""
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

    def _run(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` in a transaction; a lost connection is tried again for a
        while (the retry policy's ``reconnect``), and a stop ends the wait before the next try."""

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
    def _query(self, what: str, sql: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        statement = sqlalchemy.text(sql)
        # The rows as SQLAlchemy gives them (each unpacks as a tuple): a copy of each would cost
        # a tenth of a lookup.
        return self._run(what, lambda conn: conn.execute(statement, params).all())

    @override
    def _execute(self, what: str, steps: Sequence[Statement | Rows]) -> int:
        def run(conn: Connection) -> int:
            changed = 0
            for step in steps:
                for sql, params in self._statements(step):
                    changed += max(conn.execute(sqlalchemy.text(sql), params).rowcount, 0)
            return changed

        return self._run(what, run)

    def _statements(self, step: Statement | Rows) -> Iterator[Statement]:
        """A step as statements: many rows as arrays, a chunk per statement (a statement per
        row would cost a round trip each)."""
        if not isinstance(step, Rows):
            yield step
            return
        shared = [
            self.dialect.moment.format(param=column) if column in step.moments else f":{column}"
            for column in step.shared
        ]
        arrays = [f"CAST(:{column} AS {_array_type(step, column)}[])" for column in step.columns]
        columns = ", ".join(step.columns)
        sql = (
            f"INSERT INTO {step.table} ({', '.join([*step.shared, *step.columns])}) "  # noqa: S608
            f"SELECT {', '.join([*shared, *step.columns])} "
            f"FROM unnest({', '.join(arrays)}) AS batch({columns}) {step.conflict}"
        )
        for chunk in chunks(step.values, self.chunk_size):
            params = dict(step.shared)
            for n, column in enumerate(step.columns):
                params[column] = [values[n] for values in chunk]
            yield sql, params


def _array_type(rows: Rows, column: str) -> str:
    """The PostgreSQL type of a column's values, as one array parameter carries them."""
    if column in rows.binary:
        return "bytea"
    return "float8" if column in rows.numbers else "text"


def _is_transient(exc: Exception) -> bool:
    """A failure another try may get past: a lost connection, a deadlock, a server going down."""
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
