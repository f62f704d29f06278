"""Shared test fixtures: a sandbox per test, and the real target run as a subprocess."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from target_userpilot.sandbox import Sandbox

T = TypeVar("T")

API_KEY = "sandbox-key-3f9c1e77"

USER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "company_id": {"type": ["string", "integer", "null"]},
        "plan": {"type": ["string", "null"]},
        "address": {
            "type": ["object", "null"],
            "properties": {"city": {"type": "string"}, "geo": {"type": "object"}},
        },
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "signed_up_at": {"type": ["string", "null"], "format": "date-time"},
        "score": {"type": ["number", "null"]},
        "active": {"type": ["boolean", "null"]},
    },
}
COMPANY_SCHEMA = {
    "type": "object",
    "properties": {
        "company_id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "employees": {"type": ["integer", "null"]},
    },
}


def schema(stream: str, properties: dict, key_properties: list[str] | None = None) -> dict:
    """A SCHEMA message."""
    body = properties if "properties" in properties else {"properties": properties}
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": body,
        "key_properties": key_properties or [],
    }


def record(stream: str, rec: dict) -> dict:
    """A RECORD message."""
    return {"type": "RECORD", "stream": stream, "record": rec}


def state(value: Any) -> dict:
    """A STATE message."""
    return {"type": "STATE", "value": value}


def user(i: int, **extra: Any) -> dict:
    """A plausible user record with id ``i``."""
    rec = {
        "id": i,
        "email": f"user{i}@example.com",
        "name": f"User {i}",
        "company_id": f"c-{i % 40}",
        "plan": "pro" if i % 3 else "free",
    }
    rec.update(extra)
    return rec


def users_messages(n: int, *, start: int = 0, state_every: int = 0) -> Iterator[dict]:
    """SCHEMA + ``n`` user records, with a STATE after every ``state_every`` records."""
    yield schema("users", USER_SCHEMA, ["id"])
    for i in range(start, start + n):
        yield record("users", user(i))
        if state_every and (i - start + 1) % state_every == 0:
            yield state({"bookmarks": {"users": i}})
    yield state({"bookmarks": {"users": start + n - 1, "done": True}})


def eventually(check: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, failing the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class TargetRun:
    """What one run of the target left behind."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def states(self) -> list[Any]:
        """STATE values written to stdout, in order."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def summary(self) -> dict:
        """The machine-readable end-of-run summary."""
        for line in self.stderr.splitlines():
            if line.startswith("TARGET_USERPILOT_SUMMARY "):
                return json.loads(line.split(" ", 1)[1])
        raise AssertionError("no summary line in stderr:\n" + self.stderr[-3000:])


def encode_messages(messages: Iterable[dict | str]) -> bytes:
    """Singer input: one JSON message per line (strings are passed through as raw lines)."""
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    return ("\n".join(lines) + "\n").encode()


def run_target(
    config: dict,
    messages: Iterable[dict | str],
    *,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    args: list[str] | None = None,
) -> TargetRun:
    """Run the real target (``python -m target_userpilot``) on ``messages``."""
    config_path = tmp_path / f"config-{os.getpid()}-{id(config)}.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path), *(args or [])],
        input=encode_messages(messages),
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
        check=False,
    )
    return TargetRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


class TargetProcess:
    """The real target as a subprocess whose input the test writes, STATE lines read as they come.

    ``messages`` given: a thread feeds them all and closes stdin (a tap writing as fast as the
    target reads). Otherwise the test writes with ``send`` and ends the input with ``close``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        tmp_path: Path,
        *,
        messages: Iterable[dict | str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        config_path = tmp_path / "process-config.json"
        config_path.write_text(json.dumps(config))
        self.stderr_path = tmp_path / "stderr.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
            cwd=tmp_path,
        )
        #: STATE values written so far, and when each was read (monotonic seconds).
        self.states: list[Any] = []
        self.state_times: list[float] = []
        self._lines: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if messages is not None:
            data = encode_messages(messages)
            threading.Thread(target=self._feed, args=(data,), daemon=True).start()

    def _feed(self, data: bytes) -> None:
        try:
            self.send_bytes(data)
            self.proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError):
            pass  # stopped before it read everything: that may be the point

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            value = json.loads(line)
            self.state_times.append(time.monotonic())
            self.states.append(value)
            self._lines.put(value)
        self._lines.put(_END)

    def send(self, messages: Iterable[dict | str]) -> None:
        """Write messages to the target's stdin now."""
        self.send_bytes(encode_messages(messages))

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next_state(self, timeout: float = 20) -> Any:
        """The next STATE value, or None at the end of output; fail at the deadline."""
        try:
            value = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no STATE line within {timeout} s")
        return None if value is _END else value

    def drain(self, timeout: float = 30) -> int:
        """Read the remaining STATE lines and wait for the exit code."""
        while self.next_state(timeout) is not None:
            pass
        code = self.proc.wait(timeout=timeout)
        self._stderr.close()
        return code

    def close(self, timeout: float = 60) -> int:
        """End the input and wait for the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.drain(timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        """Stop it at once (SIGKILL) if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._stderr.close()


_END = object()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox on a free loopback port, jobs completing instantly."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sb:
        yield sb


@pytest.fixture
def config(sandbox: Sandbox) -> dict:
    """Target settings pointing at the sandbox."""
    return {"api_url": sandbox.url, "api_key": API_KEY}
