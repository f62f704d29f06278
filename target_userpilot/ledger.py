"""The ledger (``state_db``): what Userpilot confirmed, kept between runs.

It holds two things and nothing else: the hash of the last row Userpilot confirmed per profile
(``skip_unchanged``), and the keys of the events Userpilot accepted (so an event is not sent
twice). Entries are scoped by API host and object, so one database serves several accounts and
several runs at once.

Two backends sit behind one interface, :class:`Ledger`:

- a SQLite file (the default, ``.target-userpilot/state.db``), for a machine whose disk outlives
  the run;
- a SQLAlchemy URL (``postgresql://…``), for runs in containers whose disk is gone after each run.
  The driver, psycopg 3, comes with the ``postgres`` extra.

No SQL lives outside the backends. Lookups go in chunks, so a 10,000-row batch costs a few round
trips. Writes are upserts, so two runs sharing one database never lose each other's entries.
A URL's password is never written anywhere: messages go through ``redact.py``.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from target_userpilot.errors import ConfigurationError, LedgerUnavailable
from target_userpilot.redact import password_of, redact, redact_url

logger = logging.getLogger("target_userpilot")

T = TypeVar("T")

DEFAULT_PATH = ".target-userpilot/state.db"
EXTRA_HINT = "pip install 'target-userpilot[postgres]'"
_ENCODING_HINT = (
    " Percent-encode the special characters of the user name and password: @ as %40, : as %3A,"
    " / as %2F, # as %23, ? as %3F, % as %25."
)

#: ``scheme://`` at the start, or a database's name and a colon (``postgresql:/db``, a slash
#: short): such a string is a URL, never a file path (``postgresql:`` as a folder name is not
#: what anyone means). One letter and a colon is a Windows drive.
_URL = re.compile(
    r"^([A-Za-z][A-Za-z0-9+.\-]+://|(postgres|postgresql|sqlite|mysql|mariadb|mssql|oracle)"
    r"(\+[A-Za-z0-9_]+)?:)",
    re.IGNORECASE,
)


def looks_like_url(state_db: str) -> bool:
    """Whether ``state_db`` is a URL (``scheme://…``) rather than a file path."""
    return bool(_URL.match(state_db.strip()))


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ledger(ABC):
    """Row hashes for ``skip_unchanged`` and accepted event keys, scoped by host and object.

    Safe to call from several threads: confirms come from the job watcher while lookups run on
    the reading thread.
    """

    #: Keys per lookup or delete statement.
    chunk_size = 500
    #: Where the entries live, for messages; never holds a password.
    description = "the ledger"

    def row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]:
        """The confirmed row hash of each of ``ids`` that has one."""
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(ids), self.chunk_size):
            found.update(self._row_hashes(scope, object, chunk))
        return found

    def save_row_hashes(self, scope: str, object: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Record ``(id, hash)`` pairs as confirmed, replacing earlier hashes of those ids."""
        # One entry per id (the last wins), in id order: two runs writing overlapping ids then
        # lock them in the same order and cannot deadlock.
        latest = dict(rows)
        if latest:
            self._save_row_hashes(scope, object, sorted(latest.items()))

    def forget_rows(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """Remove the entries of ``ids`` (deleted profiles: a profile made again is sent again)."""
        for chunk in _chunks(sorted(set(ids)), self.chunk_size):
            self._forget_rows(scope, object, chunk)

    def accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` Userpilot already accepted as events of ``stream``."""
        found: set[str] = set()
        for chunk in _chunks(list(keys), self.chunk_size):
            found.update(self._accepted_events(scope, stream, chunk))
        return found

    def add_accepted_events(self, scope: str, stream: str, keys: Iterable[str]) -> None:
        """Record event keys as accepted by Userpilot (already present keys stay)."""
        unique = sorted(set(keys))
        if unique:
            self._add_accepted_events(scope, stream, unique)

    @abstractmethod
    def close(self) -> None:
        """Release the database connections."""

    # Backends implement these; the public methods above chunk and normalise.

    @abstractmethod
    def _row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]: ...

    @abstractmethod
    def _save_row_hashes(self, scope: str, object: str, rows: list[tuple[str, bytes]]) -> None: ...

    @abstractmethod
    def _forget_rows(self, scope: str, object: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]: ...

    @abstractmethod
    def _add_accepted_events(self, scope: str, stream: str, keys: list[str]) -> None: ...


def open_ledger(state_db: str) -> Ledger:
    """Open the ledger ``state_db`` names: a SQLite file path, or a SQLAlchemy URL.

    Raises :class:`ConfigurationError` (before any input is read) for a URL whose driver is not
    installed, a database that cannot be reached or refuses the credentials, and a damaged file.
    """
    state_db = state_db.strip() or DEFAULT_PATH
    if not looks_like_url(state_db):
        return SQLiteLedger(state_db)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(state_db)
    except (ArgumentError, ValueError):
        msg = (
            f"state_db '{redact_url(state_db)}' looks like a URL but cannot be read as one. Use a "
            "SQLAlchemy URL such as postgresql://user:password@host:5432/database, or a file path."
            f"{_ENCODING_HINT if state_db.count('@') > 1 else ''}"
        )
        raise ConfigurationError(msg) from None
    if "@" in (url.host or ""):
        # SQLAlchemy ends the password at its first @: the rest of it would become the host
        # name, shown in every message and tried as an address.
        msg = (
            f"state_db '{redact_url(state_db)}' cannot be read as one URL: its password or user "
            f"name holds an @.{_ENCODING_HINT}"
        )
        raise ConfigurationError(msg)
    backend = url.get_backend_name()
    if backend == "postgres":
        # The spelling Heroku and others give DATABASE_URL; SQLAlchemy knows only "postgresql".
        backend = "postgresql"
        state_db = "postgresql" + state_db[len("postgres") :]
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            msg = (
                "state_db 'sqlite://' needs a file (sqlite:///path/to/state.db) to outlive the run."
            )
            raise ConfigurationError(msg)
        return SQLiteLedger(url.database)
    if backend == "postgresql":
        return PostgresLedger(state_db)
    msg = (
        f"state_db '{redact_url(state_db)}' names a '{backend}' database; the ledger can use a "
        "PostgreSQL URL (postgresql://user:password@host:5432/database) or a SQLite file path."
    )
    raise ConfigurationError(msg)


# SQLite


_SQLITE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS confirmed_rows (
        scope TEXT NOT NULL,
        object TEXT NOT NULL,
        id TEXT NOT NULL,
        hash BLOB NOT NULL,
        confirmed_at REAL NOT NULL,
        PRIMARY KEY (scope, object, id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS accepted_events (
        scope TEXT NOT NULL,
        stream TEXT NOT NULL,
        key TEXT NOT NULL,
        accepted_at REAL NOT NULL,
        PRIMARY KEY (scope, stream, key)
    ) WITHOUT ROWID
    """,
)


class SQLiteLedger(Ledger):
    """A SQLite file, shared safely by runs on one machine (WAL, waiting on each other's locks).

    The file and a folder made for it are readable by their owner only: profile ids are
    personal data.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"SQLite file '{path}'"
        self._lock = threading.Lock()
        try:
            _owner_only_file(path)
            # Two runs may share the file: WAL lets one read while the other writes, and the
            # timeout makes a writer wait for the other's transaction instead of failing.
            self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            verdict = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            with self._db:
                for statement in _SQLITE_SCHEMA:
                    self._db.execute(statement)
        except (sqlite3.DatabaseError, OSError) as exc:
            msg = (
                f"state_db '{path}' cannot be used as the ledger ({exc}). If it is damaged, "
                "move it away or delete it: the next run then re-sends every profile once."
            )
            raise ConfigurationError(msg) from None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]:
        marks = ",".join("?" * len(ids))
        query = (
            "SELECT id, hash FROM confirmed_rows "  # noqa: S608 - only placeholders
            f"WHERE scope = ? AND object = ? AND id IN ({marks})"
        )
        with self._lock:
            return dict(self._db.execute(query, (scope, object, *ids)).fetchall())

    def _save_row_hashes(self, scope: str, object: str, rows: list[tuple[str, bytes]]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO confirmed_rows VALUES (?, ?, ?, ?, ?)",
                ((scope, object, row_id, digest, now) for row_id, digest in rows),
            )

    def _forget_rows(self, scope: str, object: str, ids: Sequence[str]) -> None:
        marks = ",".join("?" * len(ids))
        statement = (
            "DELETE FROM confirmed_rows "  # noqa: S608 - only placeholders
            f"WHERE scope = ? AND object = ? AND id IN ({marks})"
        )
        with self._lock, self._db:
            self._db.execute(statement, (scope, object, *ids))

    def _accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]:
        marks = ",".join("?" * len(keys))
        query = (
            "SELECT key FROM accepted_events "  # noqa: S608 - only placeholders
            f"WHERE scope = ? AND stream = ? AND key IN ({marks})"
        )
        with self._lock:
            return {key for (key,) in self._db.execute(query, (scope, stream, *keys))}

    def _add_accepted_events(self, scope: str, stream: str, keys: list[str]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO accepted_events VALUES (?, ?, ?, ?)",
                ((scope, stream, key, now) for key in keys),
            )


def _owner_only_file(path: str) -> None:
    """Create ``path`` (and a missing folder) readable by the owner only; tighten an old file."""
    # Only folders made here are 0700: an existing one (the working directory) is the user's.
    # os.makedirs gives its mode to the last folder only, so each missing one is made here.
    missing = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # another run made it a moment ago
            pass
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and os.fstat(fd).st_uid == os.geteuid():
            # A file from an earlier version, created under the usual umask.
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


# PostgreSQL (through SQLAlchemy)


#: Table name -> its definition, made when missing. The keys lead with the id: a lookup of
#: thousands of ids (``id = ANY(array)``) is then an index search per id whatever the planner's
#: statistics say. With the scope first, a table that grew since its last ANALYZE was filtered
#: row by row against the whole array: seconds per batch.
_PG_TABLES = {
    "confirmed_rows": """
    CREATE TABLE IF NOT EXISTS confirmed_rows (
        scope TEXT NOT NULL,
        object TEXT NOT NULL,
        id TEXT NOT NULL,
        hash BYTEA NOT NULL,
        confirmed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (id, scope, object)
    )
    """,
    "accepted_events": """
    CREATE TABLE IF NOT EXISTS accepted_events (
        scope TEXT NOT NULL,
        stream TEXT NOT NULL,
        key TEXT NOT NULL,
        accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (key, scope, stream)
    )
    """,
}
#: Serialises table creation between runs starting at once: two concurrent CREATE TABLE IF NOT
#: EXISTS can otherwise both try to create the table, and one fails.
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
    INSERT INTO accepted_events (scope, stream, key, accepted_at)
    SELECT :scope, :stream, key, now() FROM unnest(CAST(:keys AS text[])) AS batch(key)
    ON CONFLICT (scope, stream, key) DO NOTHING
"""

#: How long one ledger operation keeps retrying a lost connection (a server restart or a
#: failover takes seconds) before the run stops.
PG_RETRY_SECONDS = 15.0


class PostgresLedger(Ledger):
    """A PostgreSQL database, reached through SQLAlchemy with psycopg 3.

    Each thread takes its own pooled connection, so the watcher's confirms and the reading
    thread's lookups do not wait on each other. A connection lost mid-run (restart, failover) is
    replaced and the operation retried for :data:`PG_RETRY_SECONDS`; past that the run stops
    with :class:`LedgerUnavailable`.
    """

    chunk_size = 5000

    def __init__(self, state_db: str, *, connect_timeout: int = 10) -> None:
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
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK}
                )
                # Only missing tables are created: CREATE needs a right on the schema that a
                # user given ready-made tables (PostgreSQL 15 grants none on public) may lack.
                for table, statement in _PG_TABLES.items():
                    found = conn.execute(sqlalchemy.text("SELECT to_regclass(:t)"), {"t": table})
                    if found.scalar() is None:
                        conn.execute(sqlalchemy.text(statement))
        except ImportError as exc:
            msg = (
                f"state_db is a PostgreSQL URL, but its driver is not installed ({exc}). "
                f"Install the PostgreSQL extra: {EXTRA_HINT}."
            )
            raise ConfigurationError(msg) from None
        except sqlalchemy.exc.DBAPIError as exc:
            self._engine.dispose()
            raise ConfigurationError(self._connect_message(exc)) from None

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
        if "does not exist" in lowered:
            return (
                f"state_db: PostgreSQL at {self.host} answered: {reason}. Create the database "
                "and user, or fix their names in state_db."
            )
        if "permission denied" in lowered:
            return (
                f"state_db: user '{self._user}' may not create the ledger's tables on "
                f"PostgreSQL at {self.host} ({reason}). Grant it CREATE on the database's schema, "
                "or create the tables confirmed_rows and accepted_events for it."
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

    def _run(self, what: str, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in a transaction, retrying a lost connection for a while."""
        from sqlalchemy.exc import DBAPIError

        deadline = time.monotonic() + PG_RETRY_SECONDS
        pause = 0.2
        while True:
            try:
                with self._engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                retryable = exc.connection_invalidated or _is_transient(exc)
                if not retryable or time.monotonic() + pause > deadline:
                    msg = (
                        f"The ledger (state_db, {self.description}) failed while {what}: "
                        f"{self._reason(exc)}. Rows Userpilot confirmed before this are recorded; "
                        "once the database is back, rerun from the last STATE."
                    )
                    raise LedgerUnavailable(msg) from None
                logger.warning(
                    "The ledger at %s did not answer while %s (%s); retrying in %.1f s.",
                    self.host,
                    what,
                    self._reason(exc),
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, 3.0)

    def _row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]:
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "ids": list(ids)}
        rows = self._run(
            "looking up unchanged rows",
            lambda conn: conn.execute(text(_PG_LOOKUP_ROWS), params).fetchall(),
        )
        return {row_id: bytes(digest) for row_id, digest in rows}

    def _save_row_hashes(self, scope: str, object: str, rows: list[tuple[str, bytes]]) -> None:
        from sqlalchemy import text

        def save(conn: Any) -> None:
            for chunk in _chunks(rows, self.chunk_size):
                params = {
                    "scope": scope,
                    "object": object,
                    "ids": [row_id for row_id, _ in chunk],
                    "hashes": [digest for _, digest in chunk],
                }
                conn.execute(text(_PG_SAVE_ROWS), params)

        self._run("recording confirmed rows", save)

    def _forget_rows(self, scope: str, object: str, ids: Sequence[str]) -> None:
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "ids": list(ids)}
        self._run(
            "removing deleted profiles", lambda conn: conn.execute(text(_PG_FORGET_ROWS), params)
        )

    def _accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]:
        from sqlalchemy import text

        params = {"scope": scope, "stream": stream, "keys": list(keys)}
        rows = self._run(
            "looking up accepted events",
            lambda conn: conn.execute(text(_PG_LOOKUP_EVENTS), params).fetchall(),
        )
        return {key for (key,) in rows}

    def _add_accepted_events(self, scope: str, stream: str, keys: list[str]) -> None:
        from sqlalchemy import text

        def add(conn: Any) -> None:
            for chunk in _chunks(keys, self.chunk_size):
                params = {"scope": scope, "stream": stream, "keys": list(chunk)}
                conn.execute(text(_PG_ADD_EVENTS), params)

        self._run("recording accepted events", add)


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
