"""The ledger in a SQLite file: the default ``state_db`` (``.target-userpilot/state.db``).

For a machine whose disk outlives the run. Runs on one machine share the file safely: WAL lets
one read while another writes, and a writer waits for another's transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from target_userpilot.errors import ConfigurationError, LedgerMissing, LedgerUnavailable
from target_userpilot.ledger.schema import (
    VERSION_TABLE,
    apply_pending,
    check_readable,
    check_version,
    latest_version,
)
from target_userpilot.ledger.store import Dialect, Ledger, Rows, Statement

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override

logger = logging.getLogger("target_userpilot")

#: A list of ids is one parameter, a JSON array read as a table: any number of ids, one
#: statement. Moments are epoch seconds, as every time column here.
SQLITE = Dialect(
    one_of="{column} IN (SELECT value FROM json_each(:{param}))",
    strings=lambda values: json.dumps(list(values)),
    moment=":{param}",
    epoch="{column}",
)


#: How long a run waits for another's hold on the file: its transaction, or its switch to WAL.
BUSY_SECONDS = 60
#: Between two tries of the switch to WAL while another connection makes it.
WAL_RETRY_SECONDS = 0.05


def use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL, waiting out another run that switches it at the same moment.

    The busy timeout covers a transaction of another connection, not a switch of the journal
    mode that meets another's (two runs opening a new or older ledger at once): SQLite answers
    "database is locked" at once there. That answer is tried again until ``BUSY_SECONDS``, as
    the timeout would; any other error, or one past that time, goes on.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_SECONDS)


class _SQLiteChange:
    """A migration's view of the file's open transaction."""

    backend = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.notices: list[str] = []

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params or {}).fetchall()

    def notice(self, sentence: str) -> None:
        self.notices.append(sentence)


def _sqlite_version(db: sqlite3.Connection) -> int | None:
    """The file's schema version; None before versions existed (or for a new file)."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_schema'"
    ).fetchone()
    if found is None:
        return None
    return int(db.execute("SELECT coalesce(max(version), 0) FROM ledger_schema").fetchone()[0])


class SQLiteLedger(Ledger):
    """A SQLite file, shared safely by runs on one machine (WAL, waiting on each other's locks).

    The file and a folder made for it are readable by their owner only: profile ids are
    personal data.
    """

    dialect = SQLITE

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        self.description = f"SQLite file '{path}'"
        self._lock = threading.Lock()
        if read_only:
            self._db = _open_read_only(path)
            try:
                self.version = self._readable_version()
            except BaseException:
                self._db.close()
                raise
            return
        try:
            _owner_only_file(path)
            # Two runs may share the file: WAL lets one read while the other writes, and the
            # timeout makes a writer wait for the other's transaction instead of failing.
            self._db = sqlite3.connect(path, timeout=BUSY_SECONDS, check_same_thread=False)
            use_wal(self._db)
            verdict = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            notices = self._upgrade()
        except (sqlite3.DatabaseError, OSError) as exc:
            msg = (
                f"state_db '{path}' cannot be used as the ledger ({exc}). If it is damaged, "
                "move it away or delete it: the next run then re-sends every profile once."
            )
            raise ConfigurationError(msg) from None
        for sentence in notices:
            logger.warning("%s (state_db %s)", sentence, self.description)
        self.version = latest_version()

    def _readable_version(self) -> int:
        """A reader's check: the file's schema version, or a refusal if it holds no ledger."""
        try:
            version = _sqlite_version(self._db)
            legacy = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'confirmed_rows'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            msg = (
                f"state_db '{self.path}' cannot be read as a ledger ({exc}). Check that it is "
                "the ledger's SQLite file and that this user may read it. Nothing was changed."
            )
            raise ConfigurationError(msg) from None
        return check_readable(version, self.description, legacy=legacy is not None)

    def _upgrade(self) -> list[str]:
        """Apply the migrations this file lacks, holding its write lock (BEGIN IMMEDIATE)."""
        change = _SQLiteChange(self._db)
        if _sqlite_version(self._db) == latest_version():
            return []
        # The write lock first, then the version again: a run that upgraded the file while
        # this one waited leaves nothing to do.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            current = _sqlite_version(self._db)
            if current is None:
                self._db.execute(VERSION_TABLE)
            check_version(current or 0, self.description)
            apply_pending(change, current or 0)
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise
        return change.notices

    @contextmanager
    def _using(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a failure becomes :class:`LedgerUnavailable`.

        As with PostgreSQL, a ledger that fails mid-run (a full disk, an I/O error, a file
        damaged or locked past the timeout) ends the run with a sentence and exit 9, not a
        traceback. The file was checked when opened, so nothing is retried here.
        """
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                msg = (
                    f"The ledger (state_db, {self.description}) failed while {what}: {exc}. "
                    "Rows Userpilot confirmed before this are recorded; check the file and the "
                    "free space on its disk, then rerun from the last STATE."
                )
                raise LedgerUnavailable(msg) from None

    @override
    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @override
    def _query(self, what: str, sql: str, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        with self._using(what) as db:
            return db.execute(sql, params).fetchall()

    @override
    def _execute(self, what: str, steps: Sequence[Statement | Rows]) -> int:
        changed = 0
        with self._using(what) as db, db:
            for step in steps:
                if isinstance(step, Rows):
                    shared = tuple(step.shared.values())
                    cursor = db.executemany(
                        _insert(step), ((*shared, *values) for values in step.values)
                    )
                else:
                    cursor = db.execute(*step)
                changed += max(cursor.rowcount, 0)
        return changed


def _insert(rows: Rows) -> str:
    """One row's ``INSERT``, its values in the order of ``rows.shared``, then ``rows.columns``
    (moments go in as the epoch seconds they are)."""
    columns = [*rows.shared, *rows.columns]
    marks = ", ".join("?" * len(columns))
    table, names = rows.table, ", ".join(columns)  # names of this package, never input
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) {rows.conflict}"  # noqa: S608


def _open_read_only(path: str) -> sqlite3.Connection:
    """Open an existing file for reading only: no file, folder or table is ever made.

    A read-only URI (``mode=ro``), so nothing this connection does can write the file. A file
    in WAL mode still gets SQLite's own ``-wal`` and ``-shm`` beside it if a run left none:
    they are how a reader sees a consistent ledger while a run writes it.
    """
    if not os.path.exists(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        msg = (
            f"state_db '{path}' holds no ledger: there is no such file{where}. Nothing was created."
        )
        raise LedgerMissing(msg)
    if os.path.isdir(path):
        msg = f"state_db '{path}' holds no ledger: it is a folder, not a SQLite file."
        raise LedgerMissing(msg)
    try:
        return sqlite3.connect(
            Path(path).absolute().as_uri() + "?mode=ro",
            uri=True,
            timeout=BUSY_SECONDS,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        msg = f"state_db '{path}' cannot be opened for reading ({exc}). Check its permissions."
        raise ConfigurationError(msg) from None


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
