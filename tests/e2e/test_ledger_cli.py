"""``userpilot-ledger`` only reads: the real console script, on SQLite and on real PostgreSQL.

A reader never makes a ledger where none is (a mistyped ``--state-db``, another SQLite file, an
empty database, a config without ``state_db``), never adds a table or migrates an older ledger,
and ends quietly when the reader of its output stops reading (``export | head -1``).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from target_userpilot.errors import LedgerUnavailable
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.postgres import _PgChange
from target_userpilot.ledger.schema import MIGRATIONS, VERSION_TABLE, SchemaChange, latest_version
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.sqlite import _SQLiteChange
from target_userpilot.ledger.store import SentJob

from support.pg import PASSWORD, PostgresServer

#: The console script pip installed beside this interpreter.
CLI = Path(sys.executable).with_name("userpilot-ledger")
SCOPE = account_scope("https://analytex.userpilot.io", "cli-test-key")
HASH = bytes(range(16))


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert CLI.exists(), f"{CLI} is missing: pip install -e . into this virtualenv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_USERPILOT_")}
    return subprocess.run(
        [str(CLI), *argv], capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )


@dataclass
class Place:
    """Where a ledger may be: the ``state_db`` string, and how to look inside without our code."""

    state_db: str
    server: PostgresServer | None = None
    schema: str = ""

    def tables(self) -> set[str]:
        """The tables there now (none for a file that does not exist)."""
        if self.server is None:
            if not os.path.exists(self.state_db):
                return set()
            with sqlite3.connect(f"{Path(self.state_db).as_uri()}?mode=ro", uri=True) as db:
                rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                return {name for (name,) in rows}
        listed = self.server.psql(
            "SELECT table_name FROM information_schema.tables "  # noqa: S608 - the test's schema
            f"WHERE table_schema = '{self.schema}'"
        )
        return set(listed.split())

    def versions(self) -> list[int]:
        """The migrations ``ledger_schema`` records."""
        if self.server is None:
            with sqlite3.connect(f"{Path(self.state_db).as_uri()}?mode=ro", uri=True) as db:
                rows = db.execute("SELECT version FROM ledger_schema ORDER BY version")
                return [version for (version,) in rows]
        query = f"SELECT version FROM {self.schema}.ledger_schema ORDER BY 1"  # noqa: S608
        listed = self.server.psql(query)
        return [int(v) for v in listed.split()]

    def make(self, version: int) -> None:
        """A ledger as the release whose newest migration was ``version`` left it, with one
        completed job sending user u1 when it has the history's tables."""
        if self.server is None:
            db = sqlite3.connect(self.state_db)
            db.execute("PRAGMA journal_mode=WAL")  # as the target makes it
            try:
                _migrate_to(_SQLiteChange(db), version)
                db.commit()
            finally:
                db.close()
            return
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            self.state_db.replace("postgresql:", "postgresql+psycopg:")
        )
        try:
            with engine.begin() as conn:
                _migrate_to(_PgChange(conn), version)
        finally:
            engine.dispose()


def _migrate_to(change: SchemaChange, version: int) -> None:
    change.execute(VERSION_TABLE)
    for step in MIGRATIONS[:version]:
        step.apply(change)
        change.execute(
            "INSERT INTO ledger_schema (version, summary, applied_at) VALUES (:v, :s, 0)",
            {"v": step.version, "s": step.summary},
        )
    if version >= 3:
        now = time.time()
        change.execute(
            "INSERT INTO sync_jobs VALUES "
            "(:scope, 'job-1', 'run-1', 'job', 'users', 'users', 1, :now, :now, 'completed')",
            {"scope": SCOPE, "now": now},
        )
        change.execute(
            "INSERT INTO sync_history VALUES (:scope, 'users', 'u1', :now, 'job-1', :hash)",
            {"scope": SCOPE, "now": now, "hash": HASH},
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """An empty place for a ledger: a file path, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield Place(str(tmp_path / "state.db"))
        return
    server = request.getfixturevalue("postgres")
    schema = "cli_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-40:].lower()
    server.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    yield Place(f"{server.url}?options=-csearch_path%3D{schema}", server, schema)
    server.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# An existing ledger: read as it is


def test_an_older_ledger_is_read_as_it_is_and_never_upgraded(place: Place, tmp_path: Path) -> None:
    place.make(3)  # the first release with the sync history
    before = place.tables()

    shown = _cli("--state-db", place.state_db, "history", "u1", cwd=tmp_path)
    exported = _cli("--state-db", place.state_db, "export", "--format", "jsonl", cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    assert "job-1" in shown.stdout and "completed" in shown.stdout
    assert exported.returncode == 0, exported.stderr
    assert '"state": "upserted"' in exported.stdout
    assert place.versions() == [1, 2, 3]
    assert place.tables() == before
    assert PASSWORD not in shown.stdout + shown.stderr + exported.stderr


def test_a_ledger_from_before_the_history_is_refused_with_how_to_upgrade_it(
    place: Place, tmp_path: Path
) -> None:
    place.make(2)
    before = place.tables()

    shown = _cli("--state-db", place.state_db, "accounts", cwd=tmp_path)

    assert shown.returncode == 2
    assert shown.stdout == ""
    assert "schema version 2, from a release before the sync history" in shown.stderr
    assert "Run target-userpilot once with this state_db to upgrade it" in shown.stderr
    assert place.versions() == [1, 2]
    assert place.tables() == before
    assert PASSWORD not in shown.stderr


def test_a_ledger_opened_read_only_refuses_every_write(place: Place) -> None:
    place.make(latest_version())
    refused = r"readonly|read-only"

    ledger = open_ledger(place.state_db, read_only=True)
    try:
        assert ledger.version == latest_version()
        assert [e.job_id for e in ledger.profile_history(SCOPE, "users", "u1")] == ["job-1"]
        with pytest.raises(LedgerUnavailable, match=refused):
            ledger.save_row_hashes(SCOPE, "users", [("u2", HASH)])
        with pytest.raises(LedgerUnavailable, match=refused):
            ledger.record_sent(SCOPE, SentJob("job-2", "run", "job", "users", "users", 1, 0), [], 3)
    finally:
        ledger.close()

    check = open_ledger(place.state_db, read_only=True)
    try:
        assert check.row_hashes(SCOPE, "users", ["u2"]) == {}
        assert [job.job_id for job in check.jobs(SCOPE, None, 10)] == ["job-1"]
    finally:
        check.close()


# Where there is no ledger: refused, nothing made


def test_a_mistyped_path_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    shown = _cli("--state-db", "ledgers/sate.db", "export", cwd=tmp_path)

    assert shown.returncode == 2
    assert shown.stdout == ""
    assert "state_db 'ledgers/sate.db' holds no ledger: there is no such file" in shown.stderr
    assert "It came from --state-db: check it for a typo." in shown.stderr
    assert not (tmp_path / "ledgers").exists()
    assert "Traceback" not in shown.stderr


def test_another_sqlite_file_is_refused_and_gets_no_table(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    content = other.read_bytes()
    folder = sorted(p.name for p in tmp_path.iterdir())

    shown = _cli("--state-db", str(other), "jobs", cwd=tmp_path)

    assert shown.returncode == 2
    assert "holds no target-userpilot ledger: none of its tables are there" in shown.stderr
    assert other.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == folder


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, but long enough to have a header of sixteen bytes\n")

    shown = _cli("--state-db", str(notes), "accounts", cwd=tmp_path)

    assert shown.returncode == 2
    assert "cannot be read as a ledger" in shown.stderr
    assert notes.read_text().startswith("not a database")
    assert "Traceback" not in shown.stderr


def test_an_empty_postgresql_database_is_refused_and_stays_empty(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    postgres.psql("DROP DATABASE IF EXISTS empty_ledger")
    postgres.psql("CREATE DATABASE empty_ledger")
    url = postgres.url.rsplit("/", 1)[0] + "/empty_ledger"
    try:
        shown = _cli("--state-db", url, "export", cwd=tmp_path)
        tables = postgres.psql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            database="empty_ledger",
        )
    finally:
        postgres.psql("DROP DATABASE IF EXISTS empty_ledger")

    assert shown.returncode == 2
    assert shown.stdout == ""
    assert "PostgreSQL database 'empty_ledger'" in shown.stderr
    assert "holds no target-userpilot ledger" in shown.stderr
    assert tables == "0"
    assert PASSWORD not in shown.stderr


def test_a_mistyped_postgresql_database_is_refused_and_not_created(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.url.rsplit("/", 1)[0] + "/legder"

    shown = _cli("--state-db", url, "accounts", cwd=tmp_path)

    assert shown.returncode == 2
    assert "There is no ledger there: check the database and user names" in shown.stderr
    assert "legder" not in postgres.psql("SELECT datname FROM pg_database").split()
    assert PASSWORD not in shown.stderr


def test_a_config_without_state_db_makes_no_ledger_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"api_key": "cli-test-key"}')

    shown = _cli("--config", "config.json", "accounts", cwd=tmp_path)

    assert shown.returncode == 2
    assert "state_db '.target-userpilot/state.db' holds no ledger" in shown.stderr
    assert "No state_db was given" in shown.stderr
    assert not (tmp_path / ".target-userpilot").exists()


def test_a_config_without_state_db_reads_the_default_ledger_where_it_exists(tmp_path: Path) -> None:
    (tmp_path / ".target-userpilot").mkdir()
    Place(str(tmp_path / ".target-userpilot" / "state.db")).make(latest_version())
    (tmp_path / "config.json").write_text('{"api_key": "cli-test-key"}')

    shown = _cli("--config", "config.json", "accounts", cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].split() == [*SCOPE.split(), "1"]


# Output cut short by its reader


def test_an_export_piped_into_head_ends_quietly_with_exit_141(place: Place, tmp_path: Path) -> None:
    place.make(latest_version())
    ledger = open_ledger(place.state_db)
    try:
        ids = [f"user-{i:05d}" for i in range(3000)]  # far more than a pipe's buffer holds
        job = SentJob("job-big", "run-big", "job", "users", "users", len(ids), time.time())
        ledger.record_sent(SCOPE, job, [(i, HASH) for i in ids], keep=3)
    finally:
        ledger.close()
    command = f"{shlex.quote(str(CLI))} --state-db {shlex.quote(place.state_db)} export | head -1"

    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )

    assert piped.stdout.splitlines() == [
        "account,object,id,state,sent_at,ended_at,job_id,run_id,row_hash,"
        "stream,event_key,event_name,event_time"
    ]
    assert piped.stderr == ""
    assert piped.returncode == 141


def _write(place: Place, sqlite: str, postgresql: str) -> None:
    """One statement into the ledger as an older release would have run it, our code aside."""
    if place.server is None:
        with sqlite3.connect(place.state_db) as db:
            db.execute(sqlite)
        return
    place.server.psql(f"SET search_path TO {place.schema}; {postgresql}")


def test_a_ledger_from_before_runs_upgrades_keeping_its_events_and_unsettled_import_file(
    place: Place, tmp_path: Path
) -> None:
    """Migration 7 only adds: the keys and the import file of release 6 stay, without users."""
    place.make(6)
    for statement in (
        "INSERT INTO import_jobs VALUES ('acct', 'f-old', 'run-old', 'accepted', 'job:old', "
        "1, 10, NULL)",
        "INSERT INTO import_keys VALUES ('acct', 'f-old', 'events', 'k-old')",
    ):
        _write(place, statement, statement)
    _write(
        place,
        "INSERT INTO accepted_events VALUES ('acct', 'events', 'k-0', 5, 'Signed up')",
        "INSERT INTO accepted_events VALUES ('acct', 'events', 'k-0', now(), 'Signed up')",
    )

    ledger = open_ledger(place.state_db)  # a run of this release opens it: upgraded
    try:
        ledger.settle_import("acct", "f-old", "completed", 20.0)  # the rerun settles the file
        events = ledger.event_entries("acct")
    finally:
        ledger.close()
    runs = _cli("--state-db", place.state_db, "runs", cwd=tmp_path)
    exported = _cli("--state-db", place.state_db, "export", "--object", "events", cwd=tmp_path)

    assert place.versions() == [1, 2, 3, 4, 5, 6, 7]
    assert [(e.key, e.name, e.user_id, e.outcome, e.job_id) for e in events] == [
        ("k-0", "Signed up", None, None, None),
        ("k-old", None, None, "imported", "job:old"),
    ]
    assert runs.returncode == 0, runs.stderr
    assert runs.stdout == "No runs.\n"
    assert exported.returncode == 0, exported.stderr
    assert [line.split(",")[3] for line in exported.stdout.splitlines()[1:]] == [
        "event accepted",
        "event imported",
    ]
