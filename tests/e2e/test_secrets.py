"""Secrets: the API key shows up nowhere, and goes nowhere but api_url.

Every run here logs at DEBUG and keeps every byte of stdout and stderr, through success,
retries, a refused key, another refusal, a failed job, SIGKILL and SIGTERM. The key is
distinctive, so a leak of it, of any 8 characters of it, or of it in base64 or URL encoding is
found wherever it hides. Which URLs are accepted and how a password is redacted, as pure code:
``tests/unit/test_redaction.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox
from target_userpilot.stop import DUPLICATE_SIGNAL_SECONDS

from support.messages import (
    USER_SCHEMA,
    encode_messages,
    record,
    schema,
    state,
    user,
    users_messages,
)
from support.secrets import KEY, PG_SECRET, assert_no_secret
from support.waiting import eventually

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

DEBUG = {"LOGLEVEL": "DEBUG", "TARGET_USERPILOT_LOGLEVEL": "DEBUG"}


class Captured:
    """A target subprocess whose stdout and stderr go, byte for byte, to files."""

    def __init__(
        self,
        tmp_path: Path,
        config: dict[str, Any] | None,
        messages: Iterable[dict[str, Any] | str],
        *,
        env: dict[str, str] | None = None,
        keep_stdin_open: bool = False,
        args: list[str] | None = None,
    ) -> None:
        command = [sys.executable, "-m", "target_userpilot", *(args or []), "--config"]
        if config is None:
            command.append("ENV")
        else:
            path = tmp_path / "config.json"
            path.write_text(json.dumps(config))
            command.append(str(path))
        self.out_path = tmp_path / "stdout.bin"
        self.err_path = tmp_path / "stderr.bin"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env={**os.environ, **DEBUG, **(env or {})},
                cwd=tmp_path,
            )
        data = encode_messages(messages) if messages else b""
        self._keep_open = keep_stdin_open
        threading.Thread(target=self._feed, args=(data,), daemon=True).start()

    def _feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            if not self._keep_open:
                self.proc.stdin.close()
        except OSError:
            pass

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    @property
    def output(self) -> bytes:
        return self.out_path.read_bytes() + self.err_path.read_bytes()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


def _config(sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    return {"api_url": sandbox.url, "api_key": KEY, "rows_per_minute": 600_000, **extra}


def test_key_never_appears_through_a_load_with_retries(
    keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    keyed_sandbox.set_faults(
        error_rate=0.15, rate_limit_rate=0.1, retry_after=0, drop_rate=0.1, seed=4
    )
    run = Captured(tmp_path, _config(keyed_sandbox, batch_size_rows=100), users_messages(400))

    assert run.wait() == 0, run.stderr[-3000:]
    assert len(keyed_sandbox.profiles("users")) == 400
    assert sum(keyed_sandbox.stats()["faults_injected"].values()) >= 3
    assert "retrying in" in run.stderr
    assert " DEBUG " in run.stderr  # the run did log at DEBUG
    assert_no_secret(run.output)


@pytest.mark.parametrize(
    "case",
    ["refused-key", "refused-upload-422", "failed-job", "forbidden-403"],
)
def test_key_never_appears_when_the_run_fails(
    case: str, keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    config = _config(keyed_sandbox)
    wrong = "upk-Wr0ngK3yQ8sLmN5bVc2xZa7"
    if case == "refused-key":
        config["api_key"] = wrong
    elif case == "refused-upload-422":
        keyed_sandbox.set_faults(refuse_uploads=422)
    elif case == "failed-job":
        keyed_sandbox.set_faults(fail_jobs=1)
    else:
        keyed_sandbox.set_faults(forbidden=True)
    run = Captured(tmp_path, config, users_messages(50))

    code = run.wait()
    assert code == {"refused-key": 3, "refused-upload-422": 8, "failed-job": 4}.get(case, 3)
    assert "target-userpilot stopped:" in run.stderr
    assert_no_secret(run.output)
    assert_no_secret(run.output, wrong)


def test_another_4xx_stops_with_userpilots_message_and_exit_8(
    keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    keyed_sandbox.set_faults(refuse_uploads=400)
    run = Captured(tmp_path, _config(keyed_sandbox), users_messages(50))

    assert run.wait() == 8
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert "(HTTP 400)" in stopped[0]
    assert "The sandbox refuses every upload (refuse_uploads fault)." in stopped[0]
    assert keyed_sandbox.stats()["upload_attempts"] == 1  # a 4xx is not retried


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_key_never_appears_when_the_run_is_killed(sig: signal.Signals, tmp_path: Path) -> None:
    with Sandbox(port=0, api_key=KEY, rows_per_minute=60_000) as sandbox:
        config = _config(sandbox, batch_size_rows=500, rows_per_minute=60_000)
        run = Captured(tmp_path, config, list(users_messages(3000, state_every=100)))
        eventually(lambda: sandbox.stats()["status_polls"] >= 1, 20, "a job in flight")
        run.proc.send_signal(sig)
        code = run.wait(timeout=20)

    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 10), run.stderr[-3000:]
    assert_no_secret(run.output)


def test_key_given_as_an_environment_variable_never_appears(
    keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    env = {
        "TARGET_USERPILOT_API_KEY": KEY,
        "TARGET_USERPILOT_API_URL": keyed_sandbox.url,
        "TARGET_USERPILOT_ROWS_PER_MINUTE": "600000",
    }
    run = Captured(tmp_path, None, users_messages(50), env=env)

    assert run.wait() == 0, run.stderr[-3000:]
    assert len(keyed_sandbox.profiles("users")) == 50
    assert_no_secret(run.output)


def test_an_api_key_of_the_wrong_type_is_not_printed(tmp_path: Path) -> None:
    run = Captured(
        tmp_path, {"api_url": "http://127.0.0.1:9", "api_key": [KEY]}, [], keep_stdin_open=True
    )
    assert run.wait(timeout=30) == 2
    assert_no_secret(run.output)


# The key goes to api_url only.


class _RecordingServer(ThreadingHTTPServer):
    """Answers every request with ``answer``; ``seen`` holds each method, path and headers."""

    daemon_threads = True

    def __init__(self, answer: tuple[int, dict[str, str]]) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.answer = answer
        self.seen: list[tuple[str, str, dict[str, str]]] = []


class _Recorder(BaseHTTPRequestHandler):
    """Answers as its :class:`_RecordingServer` says, and records what it was asked."""

    protocol_version = "HTTP/1.1"
    server: _RecordingServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        status, headers = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _serve

    @override
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _server(answer: tuple[int, dict[str, str]]) -> _RecordingServer:
    server = _RecordingServer(answer)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    return server


def test_a_redirect_is_not_followed_and_the_key_never_reaches_the_other_host(
    tmp_path: Path,
) -> None:
    elsewhere = _server((200, {}))
    other = f"http://127.0.0.1:{elsewhere.server_address[1]}"
    redirecting = _server((307, {"Location": f"{other}/v1/users/bulk_identify"}))
    try:
        config = {
            "api_url": f"http://127.0.0.1:{redirecting.server_address[1]}",
            "api_key": KEY,
        }
        run = Captured(tmp_path, config, users_messages(20))
        code = run.wait()
    finally:
        for server in (redirecting, elsewhere):
            server.shutdown()
            server.server_close()

    assert code == 8, run.stderr[-3000:]
    assert elsewhere.seen == []
    (method, path, headers), *_ = redirecting.seen
    assert (method, path) == ("POST", "/v1/users/bulk_identify")
    assert headers["Authorization"] == f"Token {KEY}"  # api_url itself does get the key
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert "redirect (HTTP 307)" in stopped[0]
    assert "does not follow redirects" in stopped[0]
    assert_no_secret(run.output)


def test_proxy_settings_from_the_environment_are_not_used(
    keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    """An HTTP proxy named in the environment would see the key in every request: the client
    ignores it (and .netrc), so the key goes straight to api_url."""
    proxy = _server((502, {}))
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    env = {name: proxy_url for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY")}
    try:
        run = Captured(tmp_path, _config(keyed_sandbox), users_messages(20), env=env)
        code = run.wait()
    finally:
        proxy.shutdown()
        proxy.server_close()

    assert code == 0, run.stderr[-3000:]
    assert proxy.seen == []
    assert len(keyed_sandbox.profiles("users")) == 20


@pytest.mark.parametrize(
    "api_url",
    [
        "http://analytex.userpilot.io",
        "http://10.1.2.3:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused_before_any_input_is_read(
    api_url: str, tmp_path: Path
) -> None:
    """stdin stays open and empty: a target that read its input first would block on it."""
    run = Captured(tmp_path, {"api_url": api_url, "api_key": KEY}, [], keep_stdin_open=True)

    assert run.wait(timeout=30) == 2, run.stderr[-3000:]
    assert run.out_path.read_bytes() == b""
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert "plain http://" in stopped[0]
    assert "Reader" not in run.stderr  # the SDK never started reading input
    assert_no_secret(run.output)


# Personal data on disk: batch files are temporary and go when the run ends, whatever the end.


def _spool(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    spool = tmp_path / "spool"
    spool.mkdir()
    return spool, {"TMPDIR": str(spool)}


@pytest.mark.parametrize("case", ["completed", "failed-job", "refused-upload", "sigterm"])
def test_no_batch_file_is_left_behind_by_a_run_that_uploaded_everything(
    case: str, keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    spool, env = _spool(tmp_path)
    if case == "failed-job":
        keyed_sandbox.set_faults(fail_jobs=1)
    elif case == "refused-upload":
        keyed_sandbox.set_faults(refuse_uploads=422)
    if case == "sigterm":
        keyed_sandbox.set_rows_per_minute(600)  # 20 s for the one job: it is left running
    run = Captured(tmp_path, _config(keyed_sandbox), list(users_messages(200)), env=env)
    if case == "sigterm":
        eventually(lambda: keyed_sandbox.stats()["status_polls"] >= 1, 20, "the job in flight")
        run.proc.send_signal(signal.SIGTERM)
        eventually(lambda: "waiting for the last job" in run.stderr, 10, "the first stop")
        time.sleep(DUPLICATE_SIGNAL_SECONDS)  # past the window of a forwarded duplicate
        run.proc.send_signal(signal.SIGTERM)  # and again: stop at once, leave the job
    code = run.wait()

    assert code == {"completed": 0, "failed-job": 4, "refused-upload": 8, "sigterm": 10}[case]
    assert sorted(p.name for p in spool.iterdir()) == []


def test_no_batch_file_is_left_behind_by_a_run_stopped_by_bad_input(
    keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    spool, env = _spool(tmp_path)
    messages: list[dict[str, Any] | str] = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(30)],
        state({"last": 29}),
        "{not json",
    ]
    run = Captured(tmp_path, _config(keyed_sandbox), messages, env=env)

    assert run.wait() == 7
    assert sorted(p.name for p in spool.iterdir()) == []


def _flags(check_connection: bool) -> list[str]:
    return ["--check-connection"] if check_connection else []


def _stopped(run: Captured) -> str:
    lines = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("state_db", "secrets", "says"),
    [
        # Unreadable as a URL at all: the port is not a number once the raw @ is read as the end.
        ("postgresql://ledger:p@ss:w/rd%x9Q@127.0.0.1:1/ledger", ["p@ss:w/rd%x9Q"], "%40"),
        # Readable, but SQLAlchemy would take everything after the first @ as the host.
        (f"postgresql://ledger:{PG_SECRET}@127.0.0.1:1/ledger", [PG_SECRET], "%40"),
        (
            "mysql://u:MyS3cretPw@127.0.0.1:1/db?password=Qu3ryS3cret",
            ["MyS3cretPw", "Qu3ryS3cret"],
            "names a 'mysql' database",
        ),
        (
            "foo+bar://u:MyS3cretPw@h:notaport/x?password=Qu3ryS3cret",
            ["MyS3cretPw", "Qu3ryS3cret"],
            "cannot be read as one",
        ),
        (
            "postgresql://ledger@127.0.0.1:1/ledger?password=Qu3ryS3cret",
            ["Qu3ryS3cret"],
            "could not connect to PostgreSQL at 127.0.0.1:1",
        ),
    ],
    ids=["raw-at-unparsable", "raw-at-parsable", "not-postgresql", "unparsable", "query-password"],
)
def test_a_state_db_password_never_appears_at_debug(
    state_db: str, secrets: list[str], says: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    config = {"api_url": sandbox.url, "api_key": KEY, "skip_unchanged": True, "state_db": state_db}
    run = Captured(tmp_path, config, [], keep_stdin_open=True)

    assert run.wait(timeout=180) == 2, run.stderr[-3000:]
    assert says in _stopped(run)
    assert " DEBUG " in run.stderr
    for secret in secrets:
        assert_no_secret(run.output, secret)
    assert sandbox.stats()["requests"] == 0


def test_a_short_password_leaves_the_drivers_words_whole(sandbox: Sandbox, tmp_path: Path) -> None:
    # psycopg2 is not installed: the message quotes the module, which holds the password "pg".
    state_db = "postgresql+psycopg2://ledger:pg@127.0.0.1:1/ledger"
    config = {"api_url": sandbox.url, "api_key": KEY, "skip_unchanged": True, "state_db": state_db}
    run = Captured(tmp_path, config, [], keep_stdin_open=True)

    assert run.wait(timeout=180) == 2, run.stderr[-3000:]
    stopped = _stopped(run)
    assert "No module named 'psycopg2'" in stopped
    assert "psyco***" not in run.stderr
    assert ":pg@" not in run.stderr


@pytest.mark.parametrize("check_connection", [False, True], ids=["run", "check-connection"])
def test_a_proxy_password_with_a_hash_is_a_configuration_error_that_hides_it(
    check_connection: bool, tmp_path: Path
) -> None:
    proxy = _server((502, {}))
    secret = "Pr0xy#S3cretPass"  # noqa: S105 - made up for the test
    env = {"HTTPS_PROXY": f"http://proxyuser:{secret}@127.0.0.1:{proxy.server_address[1]}"}
    config = {"api_url": "https://analytex.userpilot.io", "api_key": KEY}
    try:
        run = Captured(tmp_path, config, users_messages(5), env=env, args=_flags(check_connection))
        code = run.wait()
    finally:
        proxy.shutdown()
        proxy.server_close()

    assert code == 2, run.stderr[-3000:]
    stopped = _stopped(run)
    assert "The proxy in HTTPS_PROXY (http://proxyuser:***@127.0.0.1:" in stopped
    assert "%23" in stopped
    assert "does not answer like Userpilot" not in run.stderr
    assert proxy.seen == []
    assert_no_secret(run.output, secret)
    assert "S3cret" not in run.stderr and "Pr0xy" not in run.stderr


@pytest.mark.parametrize("check_connection", [False, True], ids=["run", "check-connection"])
def test_an_api_url_with_credentials_is_refused_without_showing_them(
    check_connection: bool, keyed_sandbox: Sandbox, tmp_path: Path
) -> None:
    secret = "ApiUrlS3cretPw"  # noqa: S105 - made up for the test
    port = keyed_sandbox.url.rsplit(":", 1)[1]
    config = {"api_url": f"http://someone:{secret}@127.0.0.1:{port}", "api_key": KEY}
    run = Captured(tmp_path, config, users_messages(5), args=_flags(check_connection))

    assert run.wait() == 2, run.stderr[-3000:]
    assert "holds a user name or password before the host" in _stopped(run)
    assert f"http://someone:***@127.0.0.1:{port}" in run.stderr
    assert "Connected to" not in run.stderr + run.out_path.read_text()
    assert_no_secret(run.output, secret)
    assert keyed_sandbox.stats()["requests"] == 0
