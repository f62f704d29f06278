"""Disk, ledger and network failures end a run with one sentence and their exit code.

Each failure is real where the machine allows it: a spool file whose descriptor is ``/dev/full``
(the kernel answers ENOSPC), a SQLite connection that fails one statement, a proxy on loopback
that answers 407, and CA variables naming files that do not exist. The run is the real target
as a subprocess; a few lines run first (``PRELUDE``) to put the fault in place.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.errors import ConfigurationError, exit_code
from target_userpilot.sandbox import Sandbox
from target_userpilot.userpilot.client import UserpilotClient

from support.messages import API_KEY, encode_messages, record, schema, users_messages
from support.runner import RunTarget, TargetRun

#: Runs before the target: FULL_PREFIX makes the spool files of that prefix write to /dev/full;
#: FAIL_SQL makes the SQLite statements containing it fail as on a full disk.
PRELUDE = """
import os, sqlite3, sys, tempfile

full_prefix = os.environ.get("FULL_PREFIX")
if full_prefix:
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, prefix=None, **kwargs):
        fd, path = real_mkstemp(*args, prefix=prefix, **kwargs)
        if prefix and prefix.startswith(full_prefix):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, path

    tempfile.mkstemp = mkstemp

fail_sql = os.environ.get("FAIL_SQL")
if fail_sql:
    real_connect = sqlite3.connect

    class Failing:
        def __init__(self, db):
            self._db = db

        def __getattr__(self, name):
            return getattr(self._db, name)

        def __enter__(self):
            self._db.__enter__()
            return self

        def __exit__(self, *exc):
            return self._db.__exit__(*exc)

        def execute(self, sql, *args):
            if fail_sql in sql:
                raise sqlite3.OperationalError("database or disk is full")
            return self._db.execute(sql, *args)

        def executemany(self, sql, *args):
            if fail_sql in sql:
                raise sqlite3.OperationalError("database or disk is full")
            return self._db.executemany(sql, *args)

    sqlite3.connect = lambda *args, **kwargs: Failing(real_connect(*args, **kwargs))

from target_userpilot.target import TargetUserpilot
TargetUserpilot.cli()
"""

CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without CA or proxy variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (*CA_VARIABLES, *PROXY_VARIABLES)}
    env.update(extra)
    return env


def _run(config: dict[str, Any], messages: Any, tmp_path: Path, env: dict[str, str]) -> TargetRun:
    config_path = tmp_path / "failure-config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE, "--config", str(config_path)],
        input=encode_messages(messages),
        capture_output=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    return TargetRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _stopped(stderr: str) -> str:
    """The one 'target-userpilot stopped:' sentence, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0].split("target-userpilot stopped: ", 1)[1]


# A full disk under the spool folder


@pytest.mark.parametrize("n_users", [20, 3000], ids=["at-seal", "while-adding-rows"])
def test_no_space_left_for_a_batch_names_the_spool_folder_and_exits_13(
    n_users: int, sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    env = _environment(TMPDIR=str(spool), FULL_PREFIX="target-userpilot-")

    run = _run(config, users_messages(n_users, state_every=10), tmp_path, env)

    assert run.returncode == 13, run.stderr[-3000:]
    sentence = _stopped(run.stderr)
    assert f"No space left in {spool}" in sentence
    assert "TMPDIR" in sentence
    assert run.states == []
    assert sandbox.profiles("users") == {}


def test_no_space_left_for_the_events_spool_names_the_folder_and_exits_13(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    env = _environment(TMPDIR=str(spool), FULL_PREFIX="userpilot-events-")
    events = {"event_id": {"type": "string"}, "user_id": {"type": "string"}}
    messages = [
        schema("events", {**events, "event_name": {"type": "string"}}, ["event_id"]),
        record("events", {"event_id": "e-1", "user_id": "1", "event_name": "signed_up"}),
    ]

    run = _run({**config, "state_db": str(tmp_path / "ledger.db")}, messages, tmp_path, env)

    assert run.returncode == 13, run.stderr[-3000:]
    sentence = _stopped(run.stderr)
    assert f"No space left in {spool}" in sentence
    assert "events waiting to be sent" in sentence
    assert sandbox.events() == []


# The ledger failing mid-run


@pytest.mark.parametrize(
    "statement",
    ["SELECT id, hash FROM confirmed_rows", "INSERT INTO confirmed_rows"],
    ids=["lookup-at-seal", "record-after-the-job"],
)
def test_a_sqlite_ledger_failing_mid_run_exits_9_like_postgresql(
    statement: str, sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    ledger = tmp_path / "state.db"
    config = {**config, "skip_unchanged": True, "state_db": str(ledger)}

    run = _run(config, users_messages(30), tmp_path, _environment(FAIL_SQL=statement))

    assert run.returncode == 9, run.stderr[-3000:]
    sentence = _stopped(run.stderr)
    assert sentence.startswith(f"The ledger (state_db, SQLite file '{ledger}') failed while")
    assert "database or disk is full" in sentence
    assert "rerun from the last STATE" in sentence


# CA bundles named in the environment


@pytest.mark.parametrize("variable", CA_VARIABLES)
def test_a_ca_variable_naming_nothing_stops_with_exit_2_before_any_input(
    variable: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"api_url": "https://userpilot.test", "api_key": API_KEY}))
    # stdin stays open and silent: only a check made before reading any input can end the run.
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(**{variable: str(missing)}),
        cwd=tmp_path,
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 2, stderr.decode()[-3000:]
    sentence = _stopped(stderr.decode())
    assert sentence.startswith(f"{variable} names '{missing}'")


def test_an_existing_ca_bundle_and_a_plain_http_sandbox_are_not_refused(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not checked here: only that it exists\n")
    env = {"REQUESTS_CA_BUNDLE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "missing")}

    # SSL_CERT_DIR is not the variable in effect, and the sandbox is plain http:// anyway.
    run = run_target(config, users_messages(3), tmp_path=tmp_path, env=env)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 3


# A proxy that wants credentials


class _Proxy407:
    """A loopback proxy that answers every request, CONNECT included, with 407."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with connection:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                self.requests.append(head.decode("latin-1").split("\r\n", 1)[0])
                connection.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def proxy_407() -> Iterator[_Proxy407]:
    proxy = _Proxy407()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("credentials", "says"),
    [("proxy-user:proxy-s3cret@", "refused the user name and password"), ("", "gives none")],
)
def test_a_proxy_answering_407_is_a_configuration_error_tried_once(
    credentials: str, says: str, proxy_407: _Proxy407, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy_407.url(credentials))
    client = UserpilotClient("https://userpilot.test", API_KEY)

    with pytest.raises(ConfigurationError) as refused:
        client.list_jobs()

    message = str(refused.value)
    assert exit_code(refused.value) == 2
    assert "HTTP 407" in message
    assert says in message
    assert "HTTPS_PROXY" in message
    assert "proxy-user" not in message
    assert "proxy-s3cret" not in message
    assert [line.rsplit(" ", 1)[0] for line in proxy_407.requests] == ["CONNECT userpilot.test:443"]


def test_a_run_behind_a_proxy_refusing_its_credentials_stops_with_exit_2(
    proxy_407: _Proxy407, tmp_path: Path
) -> None:
    config = {"api_url": "https://userpilot.test", "api_key": API_KEY}
    env = _environment(HTTPS_PROXY=proxy_407.url("proxy-user:proxy-s3cret@"))

    run = _run(config, users_messages(5, state_every=5), tmp_path, env)

    assert run.returncode == 2, run.stderr[-3000:]
    sentence = _stopped(run.stderr)
    assert "HTTPS_PROXY" in sentence
    assert "proxy-s3cret" not in run.stderr
    assert "proxy-user" not in run.stderr
    assert len(proxy_407.requests) == 1  # not retried as a transient failure
    assert run.states == []
