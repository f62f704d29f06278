"""The test suite's layers and its fixtures, each defined once under one name.

Layers, one folder each, marked by folder (``-m unit``, ``-m integration``, ``-m e2e``):

- ``unit/``: pure code, milliseconds a test. Opening a network connection or starting a
  process there fails the test, so the layer stays what it says.
- ``integration/``: the sandbox over real loopback HTTP, the target in this process
  (``run_target``).
- ``e2e/``: the target as a process where the process is the subject (signals, kill -9, stdin
  and stdout pipes, exits before any input, the interpreter's own options), the console
  scripts, Meltano, tap-postgres. A test anywhere that needs a PostgreSQL server (``postgres``,
  ``own_postgres``, or a ``state_db`` on PostgreSQL) is end to end too: one body covers both
  ledgers, the server's run is e2e.

Helpers (messages, runners, polling, simulated time, HTTP doubles, PostgreSQL, Meltano) live
in ``support/``.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from target_userpilot.sandbox import Sandbox

from support import pg
from support.http_doubles import TimedSession
from support.messages import API_KEY
from support.runner import RunTarget, TargetRun, run_in_process, run_process
from support.secrets import KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import meltano_venv  # a script module (scripts/meltano_venv.py), importable once on the path

LAYERS = ("unit", "integration", "e2e")
#: Fixtures that start a PostgreSQL server, which makes a test end to end wherever it lives.
POSTGRES_FIXTURES = {"postgres", "own_postgres", "postgres_state_db"}


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--target-as-process``: ``run_target`` too runs the target as a process, to compare."""
    parser.addoption(
        "--target-as-process",
        action="store_true",
        help="run_target runs the target as a process, like run_target_process: to check that "
        "the in-process runs hide nothing, and to measure what they save",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the layer markers (``--strict-markers`` would refuse undeclared ones)."""
    for layer, what in (
        ("unit", "pure code: no sockets, no processes, milliseconds"),
        ("integration", "the sandbox over loopback HTTP, the target in process"),
        ("e2e", "processes, signals, Meltano, tap-postgres, PostgreSQL servers"),
    ):
        config.addinivalue_line("markers", f"{layer}: {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer: its folder's, or e2e when it needs PostgreSQL."""
    tests = Path(__file__).parent
    for item in items:
        try:
            folder = item.path.relative_to(tests).parts[0]
        except ValueError:
            continue
        if folder not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in one of {LAYERS}")
        if _needs_postgres(item):
            folder = "e2e"
        item.add_marker(getattr(pytest.mark, folder))


def _needs_postgres(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if names & POSTGRES_FIXTURES:
        return True
    callspec = getattr(item, "callspec", None)
    return (
        "state_db" in names
        and callspec is not None
        and (callspec.params.get("state_db") == "postgresql")
    )


# The unit layer's guard


class NotUnit(AssertionError):
    """A unit test reached for the network or a process."""


@pytest.fixture(autouse=True)
def _unit_stays_pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the unit layer, connecting a socket or starting a process fails the test."""
    if request.node.get_closest_marker("unit") is None:
        return

    def connect(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        raise NotUnit(
            f"{request.node.nodeid} opened a network connection: it belongs in tests/integration"
        )

    def popen(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        raise NotUnit(f"{request.node.nodeid} started a process: it belongs in tests/e2e")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)


# Sandboxes: one name per kind, and the settings that point at them


def _serving(**options: Any) -> Iterator[Sandbox]:
    """A sandbox with ``options``, served for as long as the fixture lives."""
    with Sandbox(**options) as sb:
        yield sb


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox on a free loopback port, jobs completing instantly."""
    yield from _serving(port=0, api_key=API_KEY, rows_per_minute=0)


@pytest.fixture
def config(sandbox: Sandbox) -> dict[str, Any]:
    """Target settings pointing at ``sandbox``."""
    return {"api_url": sandbox.url, "api_key": API_KEY}


@pytest.fixture
def quick_poll_config(sandbox: Sandbox) -> dict[str, Any]:
    """``config`` with a pace of 600,000 rows a minute: the first status poll of a job comes
    after 0.2 s instead of the second a real 1,800 rows a minute would suggest."""
    return {"api_url": sandbox.url, "api_key": API_KEY, "rows_per_minute": 600_000}


@pytest.fixture
def mirror_config(config: dict[str, Any], state_db: str) -> dict[str, Any]:
    """``config`` with mirror deletes on: ``hard_delete`` and a ``state_db``."""
    return {**config, "hard_delete": True, "state_db": state_db}


@pytest.fixture
def default_sandbox() -> Iterator[Sandbox]:
    """A sandbox with ``userpilot-sandbox``'s own defaults: paced jobs, the deletion interval."""
    yield from _serving(api_key=API_KEY)


@pytest.fixture
def timed_jobs_sandbox() -> Iterator[Sandbox]:
    """Jobs take a while, as they would (100 rows about 0.1 s); track limit 6,000 a minute."""
    yield from _serving(port=0, api_key=API_KEY, rows_per_minute=60_000, events_per_minute=6000)


@pytest.fixture
def no_track_sandbox() -> Iterator[Sandbox]:
    """Jobs take a while (100 rows about 0.1 s); the track API admits one request a minute."""
    yield from _serving(port=0, api_key=API_KEY, rows_per_minute=60_000, events_per_minute=1)


@pytest.fixture
def deletion_paced_sandbox() -> Iterator[Sandbox]:
    """Instant jobs; deletion requests admitted every 0.2 s, so pacing tests stay short."""
    yield from _serving(port=0, api_key=API_KEY, rows_per_minute=0, delete_interval=0.2)


@pytest.fixture
def no_deletion_interval_sandbox() -> Iterator[Sandbox]:
    """``default_sandbox`` without the deletion interval, for tests about other rules."""
    yield from _serving(api_key=API_KEY, delete_interval=0)


@pytest.fixture
def keeping_sandbox() -> Iterator[Sandbox]:
    """Instant jobs, keeping the file of every upload, to compare with a dry run's files."""
    yield from _serving(port=0, api_key=API_KEY, rows_per_minute=0, keep_uploads=True)


@pytest.fixture
def keyed_sandbox() -> Iterator[Sandbox]:
    """Instant jobs, with a key shaped like a real Userpilot key (``support.secrets.KEY``)."""
    yield from _serving(port=0, api_key=KEY, rows_per_minute=0)


# Calling the sandbox and the client directly


@pytest.fixture
def api() -> Iterator[requests.Session]:
    """A client with the sandbox's key, for its /v1 calls."""
    with TimedSession() as session:
        session.headers["Authorization"] = f"Token {API_KEY}"
        yield session


@pytest.fixture
def anon() -> Iterator[requests.Session]:
    """A client without a key: the sandbox's admin calls, and /v1 calls that must be refused."""
    with TimedSession() as session:
        yield session


@pytest.fixture
def batch_file(tmp_path: Path) -> str:
    """A users batch file of two rows, as the job lane uploads one."""
    path = tmp_path / "batch.ndjson"
    path.write_text(
        '{"user_id":"u-1","metadata":{"plan":"pro"}}\n{"user_id":"u-2","metadata":{}}\n'
    )
    return str(path)


# Running the target


def _runs_in(folder: Path, runner: Callable[..., TargetRun]) -> RunTarget:
    """``runner`` (``run_in_process`` or ``run_process``) in ``folder``, the test's own, unless
    a run names another."""

    def run(
        config: dict[str, Any],
        messages: Iterable[dict[str, Any] | str],
        *,
        tmp_path: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        args: list[str] | None = None,
    ) -> TargetRun:
        return runner(
            config,
            messages,
            tmp_path=folder if tmp_path is None else tmp_path,
            env=env,
            timeout=timeout,
            args=args,
        )

    return run


@pytest.fixture
def run_target(tmp_path: Path, request: pytest.FixtureRequest) -> RunTarget:
    """Run the real target in this process on a list of messages (see ``support/runner.py``)."""
    runner = run_process if request.config.getoption("--target-as-process") else run_in_process
    return _runs_in(tmp_path, runner)


@pytest.fixture
def run_target_process(tmp_path: Path) -> RunTarget:
    """Run the real target as a process (``python -m target_userpilot``) on a list of messages."""
    return _runs_in(tmp_path, run_process)


# Meltano


@pytest.fixture(scope="session")
def meltano() -> Path:
    """The pinned Meltano's command (``.venv/meltano``), installed on first use."""
    return meltano_venv.ensure()


# PostgreSQL


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PostgresServer]:
    """A PostgreSQL server shared by the session's tests (each test uses a schema of its own)."""
    pg.require()
    server = pg.PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def own_postgres() -> Iterator[pg.PostgresServer]:
    """A PostgreSQL server for one test that stops or restarts it."""
    pg.require()
    server = pg.PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_state_db(postgres: pg.PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``state_db`` URL on the session's PostgreSQL, its tables in a schema of this test's own."""
    yield from _schema_of_its_own(postgres, request)


@pytest.fixture
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ``state_db``: a SQLite file, or (parametrised ``"postgresql"``) a PostgreSQL schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield str(tmp_path / "state.db")
        return
    yield from _schema_of_its_own(request.getfixturevalue("postgres"), request)


def _schema_of_its_own(server: pg.PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    name = f"t_{digest}"
    server.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    yield f"{server.url}?options=-csearch_path%3D{name}"
    server.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
