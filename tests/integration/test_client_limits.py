"""The client on its own against the sandbox: the retry policy's limits, reached quickly.

Whole runs under the same faults, as processes: ``tests/e2e/test_faults.py``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import requests

from target_userpilot.errors import TransientError
from target_userpilot.retry import RetryPolicy
from target_userpilot.sandbox import Sandbox
from target_userpilot.userpilot.client import UserpilotClient

from support.messages import API_KEY

FAST = RetryPolicy(base_seconds=0.01, max_seconds=0.05, max_tries=5, poll_max_time=1.0)


def test_upload_is_tried_exactly_max_tries_times_then_raised(
    sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.set_faults(error_rate=1.0, only="upload")
    client = UserpilotClient(sandbox.url, API_KEY, retry=FAST, timeout=(2, 2))
    with pytest.raises(TransientError, match=r"failed 5 times .* HTTP 50[023]"):
        client.upload("users", batch_file, "users-x-00001.ndjson")
    stats = sandbox.stats()
    assert stats["upload_attempts"] == FAST.max_tries
    # Before each further try the client looks for a job with its filename, and finds none.
    assert stats["requests"] == FAST.max_tries + (FAST.max_tries - 1)
    assert stats["uploads"] == 0


def test_status_polls_give_up_after_poll_max_time(sandbox: Sandbox, batch_file: str) -> None:
    client = UserpilotClient(sandbox.url, API_KEY, retry=FAST, timeout=(2, 2))
    job = client.upload("users", batch_file, "users-x-00001.ndjson")
    sandbox.set_faults(status_error_rate=1.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="may still complete"):
        client.job_status(job["job_id"])
    # Polling ends after poll_max_time, not never; the slack is for a loaded machine.
    assert FAST.poll_max_time <= time.monotonic() - started < FAST.poll_max_time + 10
    assert sandbox.stats()["upload_attempts"] == 1


def test_every_request_has_a_connect_and_a_read_timeout(
    sandbox: Sandbox, batch_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, Any]] = []
    original = requests.Session.request

    def spy(
        self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        seen.append((f"{method} {url}", kwargs.get("timeout")))
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    # Two slow answers: the first upload times out and is looked up, then adopted.
    sandbox.set_faults(slow_rate=1.0, slow_seconds=1.5, only="upload")
    client = UserpilotClient(sandbox.url, API_KEY, retry=FAST, timeout=(3.0, 0.5))
    job = client.upload("users", batch_file, "users-x-00001.ndjson")
    sandbox.set_faults()
    client.job_status(job["job_id"])
    client.list_jobs()
    client.close()

    calls = {call.split(" ", 1)[0] + " " + call.split("/v1", 1)[1] for call, _ in seen}
    assert any(c.startswith("POST /users/bulk_identify") for c in calls)
    assert any(c.startswith("GET /background_jobs/") for c in calls)
    assert "GET /background_jobs" in calls
    assert all(timeout == (3.0, 0.5) for _, timeout in seen), seen


def test_a_refused_connection_is_retried_without_looking_for_a_job(batch_file: str) -> None:
    """Nothing reached the server, so there is no job to adopt: the error names the upload."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the block ends
    client = UserpilotClient(f"http://127.0.0.1:{port}", API_KEY, retry=FAST)

    with pytest.raises(TransientError) as failure:
        client.upload("users", batch_file, "users-x-00001.ndjson")
    client.close()

    assert "failed 5 times" in str(failure.value)
    assert "POST /v1/users/bulk_identify: connection failed" in str(failure.value)
    assert "background_jobs" not in str(failure.value)
