"""A real PostgreSQL 15 for tests: its own cluster in a temporary folder, on loopback only.

The server binaries come from the machine (Debian's ``postgresql-15`` package puts them in
``/usr/lib/postgresql/15/bin``). Without them, or without the psycopg driver, the tests that need a
server are skipped, unless ``CI`` is set: there a missing server is a broken machine, not a
reason to pass. The fixtures (``postgres``, ``own_postgres``, ``state_db``) are in ``conftest.py``.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` user and every server command runs as that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(os.environ.get("TARGET_USERPILOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "ledger"
PASSWORD = "s3cret-Pg-pass-8e1d"  # noqa: S105 - a throwaway cluster's password
DATABASE = "ledger"


def missing() -> str | None:
    """What this machine lacks to run the PostgreSQL tests, or None when it has it all."""
    if importlib.util.find_spec("psycopg") is None:
        return "the psycopg driver is not installed (pip install -e '.[postgres]')"
    if not ((BIN / "initdb").exists() and (BIN / "pg_ctl").exists()):
        return f"PostgreSQL 15 server binaries not found in {BIN} (Debian package postgresql-15)"
    return None


def require() -> None:
    """Skip the calling test when PostgreSQL is absent; fail instead under CI."""
    msg = missing()
    if msg is None:
        return
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI must have it")
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One throwaway cluster: ``start``, ``stop``, ``url`` for the target, ``sql`` for checks."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pg-ledger-")))
    port: int = field(default_factory=_free_port)

    def __post_init__(self) -> None:
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        # Only root must hand the cluster over: PostgreSQL will not run as root.
        self._user = "postgres" if os.geteuid() == 0 else None
        self._initdb()

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for the test database, password included."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def url_with(self, *, password: str = PASSWORD, scheme: str = "postgresql") -> str:
        """The same URL with another password or driver scheme."""
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), user=self._user, capture_output=True, text=True, check=check, timeout=60
        )

    def _initdb(self) -> None:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        secret = self.folder / "pwfile"
        secret.write_text(PASSWORD + "\n")
        if self._user:
            os.chown(secret, pwd.getpwnam(self._user).pw_uid, -1)
        self._run(
            str(BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={secret}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        secret.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")
        databases = self.psql("SELECT datname FROM pg_database", database="postgres")
        if DATABASE not in databases.split():
            self.psql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def stop(self) -> None:
        """Stop the server at once (connections are cut, as in a crash or failover)."""
        self._run(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False
        )

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        """Run ``sql`` over the local socket and return its unaligned output."""
        done = self._run(
            str(BIN / "psql"),
            "-h",
            str(self.folder),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )
        return done.stdout.strip()

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


#: ``@BOTH_LEDGERS`` runs a test once on a SQLite ``state_db`` and once on PostgreSQL.
BOTH_LEDGERS = pytest.mark.parametrize("state_db", ["sqlite", "postgresql"], indirect=True)
