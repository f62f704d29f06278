"""`target-userpilot --check-connection`: a good key, a refused key, a wrong host, no host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import API_KEY, MELTANO_TEST_MESSAGES, encode_messages, record, schema
from support.runner import RunTarget

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override


def check_connection(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``target-userpilot --check-connection --config <file>``, as an operator runs it."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_USERPILOT_")}
    return subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--check-connection", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )


class _NotUserpilot(ThreadingHTTPServer):
    """Any web server that is not Userpilot's API: every path gets ``answer`` (a 404 page
    unless a test says otherwise), and ``paths`` records what was asked."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _NotFound)
        self.paths: list[str] = []
        self.answer = (404, b"<html><body><h1>404 Not Found</h1></body></html>")


class _NotFound(BaseHTTPRequestHandler):
    """Answers as its :class:`_NotUserpilot` server says."""

    server: _NotUserpilot

    def do_GET(self) -> None:
        status, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body[:1] in b"{[" else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.paths.append(self.path)

    @override
    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the target's output, not this server's."""


@pytest.fixture
def not_userpilot() -> Iterator[_NotUserpilot]:
    server = _NotUserpilot()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_good_key_is_confirmed_with_one_read_only_call(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    result = check_connection(config, tmp_path)

    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Connected to {sandbox.url}: the API key was accepted" in result.stdout
    stats = sandbox.stats()
    assert stats["requests"] == 1
    assert stats["upload_attempts"] == 0
    assert API_KEY not in result.stdout + result.stderr


def test_refused_key_exits_3_without_retrying(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config["api_key"] = "a-wrong-key-0451"
    result = check_connection(config, tmp_path)

    assert result.returncode == 3
    assert "Userpilot refused the API key (HTTP 401)" in result.stderr
    assert "api_url" in result.stderr
    assert sandbox.stats()["requests"] == 1
    assert "a-wrong-key-0451" not in result.stdout + result.stderr


def test_host_that_is_not_userpilots_api_exits_8(
    not_userpilot: _NotUserpilot, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{not_userpilot.server_address[1]}"
    result = check_connection({"api_url": url, "api_key": API_KEY}, tmp_path)

    assert result.returncode == 8, result.stderr[-2000:]
    assert f"{url} does not answer like Userpilot's API" in result.stderr
    assert "HTTP 404" in result.stderr
    assert not_userpilot.paths == ["/v1/background_jobs"]  # asked once, not retried


@pytest.mark.parametrize(
    "body", [b"<html><body>Welcome to nginx!</body></html>", b"{}", b'{"status": "ok"}']
)
def test_host_answering_200_without_a_job_list_is_not_userpilot(
    not_userpilot: _NotUserpilot, tmp_path: Path, body: bytes
) -> None:
    not_userpilot.answer = (200, body)
    url = f"http://127.0.0.1:{not_userpilot.server_address[1]}"
    result = check_connection({"api_url": url, "api_key": API_KEY}, tmp_path)

    assert result.returncode == 8, result.stderr[-2000:]
    assert f"{url} does not answer like Userpilot's API" in result.stderr
    assert "API key was accepted" not in result.stdout
    assert not_userpilot.paths == ["/v1/background_jobs"]


def test_unreachable_host_exits_9(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    url = f"http://127.0.0.1:{port}"
    result = check_connection({"api_url": url, "api_key": API_KEY}, tmp_path)

    assert result.returncode == 9, result.stderr[-2000:]
    assert f"Could not reach Userpilot at {url}" in result.stderr
    assert "Connection refused" in result.stderr
    assert "STATE" not in result.stderr  # a check has no STATE to speak of


def test_dry_run_needs_no_connection(tmp_path: Path) -> None:
    result = check_connection({"dry_run": True, "api_url": "http://127.0.0.1:9"}, tmp_path)

    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry_run is on" in result.stdout


def test_missing_key_is_a_configuration_error(tmp_path: Path) -> None:
    result = check_connection({"api_url": "http://127.0.0.1:9"}, tmp_path)

    assert result.returncode == 2
    assert "api_key is not set" in result.stderr


# Meltano's loader test (`meltano config test`): its parent shows none of the loader's output


def _loader_test_under_a_parent(config: dict[str, Any], tmp_path: Path, *, own_stderr: bool) -> str:
    """Run the target on Meltano's test stream, started by a Python parent as Meltano starts it:
    its output to the parent through one pipe (``own_stderr``), or on the parent's stderr.
    Returns what the parent itself wrote to its stderr (the test's pipe)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    test_stream = [
        schema("meltano_test_stream", {"id": {"type": "integer"}}, ["id"]),
        record("meltano_test_stream", {"id": 1, "name": "Meltano Test Record"}),
    ]
    output = "subprocess.PIPE, stderr=subprocess.STDOUT" if own_stderr else "subprocess.PIPE"
    parent = (
        "import subprocess, sys\n"
        f"child = subprocess.run([sys.executable, '-m', 'target_userpilot', '--config', "
        f"{str(path)!r}], input={encode_messages(test_stream)!r}, stdout={output})\n"
        "sys.stdout.write(str(child.returncode))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_USERPILOT_")}
    run = subprocess.run(
        [sys.executable, "-c", parent],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.stdout == "3", run.stderr[-3000:]
    return run.stderr


def test_a_refused_key_in_meltanos_loader_test_is_told_to_the_process_that_started_it(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config["api_key"] = "a-wrong-key-0452"

    told = _loader_test_under_a_parent(config, tmp_path, own_stderr=True)

    assert told.splitlines() == [
        "target-userpilot: Meltano's loader test failed: Userpilot refused the API key (HTTP "
        "401). Check api_key, and api_url for EU or Enterprise accounts (e.g. "
        "https://analytex-eu.userpilot.io)."
    ]
    assert sandbox.profiles("users") == {}


def test_a_loader_test_sharing_its_parents_stderr_says_its_reason_once(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config["api_key"] = "a-wrong-key-0453"

    told = _loader_test_under_a_parent(config, tmp_path, own_stderr=False)

    assert "target-userpilot stopped: Userpilot refused the API key (HTTP 401)" in told
    assert "Meltano's loader test failed" not in told
    assert "a-wrong-key-0453" not in told


def test_meltanos_loader_test_stream_fails_on_a_refused_key(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target_process: RunTarget
) -> None:
    # As a process: the reason also goes to the stderr of the process that started it (Meltano).
    config["api_key"] = "not-" + API_KEY

    run = run_target_process(config, MELTANO_TEST_MESSAGES, tmp_path=tmp_path)

    assert run.returncode == 3, run.stderr[-3000:]
    assert "Userpilot refused the API key" in run.stderr
    assert sandbox.profiles("users") == {}
    assert run.states == []
    assert API_KEY not in run.stderr
