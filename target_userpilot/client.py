"""HTTP client for Userpilot's bulk API: no Singer inside.

One ``requests.Session`` owns the connections, the headers and the key. The retry policy is
declared here once, next to the transport: which answers are worth another try, how long to wait
(``Retry-After`` first, jittered exponential backoff otherwise), and how many tries are enough.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import backoff
import requests
import urllib3

from target_userpilot.errors import (
    AuthenticationError,
    ConfigurationError,
    JobConflict,
    PayloadTooLarge,
    TransientError,
    UnexpectedAnswer,
    UserpilotError,
)

logger = logging.getLogger("target_userpilot.client")

ACCEPT = "application/json, text/plain, */*"
FINAL_STATUSES = frozenset({"completed", "failed"})
WAITING_STATUSES = frozenset({"queued", "validating", "processing", "pending_refresh"})
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
LOOPBACK_HOSTS = frozenset({"localhost", "::1"})


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried."""

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    max_tries: int = 8
    #: Status polls may wait out a longer outage: re-uploading is never the answer to one.
    poll_max_time: float = 300.0


def check_api_url(api_url: str) -> str:
    """Return ``api_url`` without a trailing slash, or raise :class:`ConfigurationError`.

    The key travels in a header, so it may only go over HTTPS; plain HTTP is allowed for
    loopback hosts, where the local sandbox runs.
    """
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in {"http", "https"} or not host:
        msg = f"api_url '{api_url}' is not an http(s) URL, e.g. https://analytex.userpilot.io."
        raise ConfigurationError(msg)
    if parts.scheme == "http" and not is_loopback(host):
        msg = (
            f"api_url '{api_url}' uses plain http:// for a non-loopback host; the API key would "
            "travel unencrypted. Use https://, e.g. https://analytex.userpilot.io."
        )
        raise ConfigurationError(msg)
    return api_url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ``localhost`` and ``::1``."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    octets = host.split(".")
    return len(octets) == 4 and octets[0] == "127" and all(o.isdigit() for o in octets)


def _wait_for(policy: RetryPolicy) -> Iterator[float]:
    """Backoff wait generator: the server's ``Retry-After`` when given, else full-jitter expo."""
    error = yield 0.0
    attempt = 0
    while True:
        ceiling = min(policy.max_seconds, policy.base_seconds * (2**attempt))
        attempt += 1
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            # Honour the server, with a little spread so many clients don't return in step.
            wait = min(retry_after, 120.0) + random.uniform(0, policy.base_seconds / 2)
        else:
            wait = random.uniform(policy.base_seconds / 4, ceiling)
        error = yield wait


def _log_retry(details: dict[str, Any]) -> None:
    error = details.get("exception")
    logger.warning(
        "Userpilot call failed (%s); try %d, retrying in %.1f s.",
        error,
        details["tries"],
        details["wait"],
    )


def _log_conflict(details: dict[str, Any]) -> None:
    logger.info(
        "Another bulk job holds the Userpilot account (HTTP 409); waiting %.1f s (%.0f s so far).",
        details["wait"],
        details["elapsed"],
    )


class _MultipartBody(io.RawIOBase):
    """A multipart/form-data body streamed from the batch file, with a known length.

    requests would read a file given through ``files=`` into memory whole; streaming keeps a
    50 MB upload from costing 50 MB of memory, and a known length avoids chunked encoding.
    """

    def __init__(self, path: str, filename: str, boundary: str) -> None:
        super().__init__()
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/x-ndjson\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self._parts = [io.BytesIO(head), open(path, "rb"), io.BytesIO(tail)]  # noqa: SIM115
        self._sizes = [len(head), os.path.getsize(path), len(tail)]
        self._length = sum(self._sizes)
        self._current = 0  # index of the part being read
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunks = []
        while self._current < len(self._parts) and (size < 0 or size > 0):
            chunk = self._parts[self._current].read(size if size > 0 else -1)
            if not chunk:
                self._current += 1
                continue
            chunks.append(chunk)
            if size > 0:
                size -= len(chunk)
        data = b"".join(chunks)
        self._pos += len(data)
        return data

    # Seeking: requests rewinds the body to prepare the request that a 307/308 points to, even
    # when it does not follow redirects; an unseekable body turned that into an
    # UnrewindableBodyError, and a redirect into a traceback instead of a clear message.

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += self._length
        self._pos = min(max(offset, 0), self._length)
        start = 0
        self._current = len(self._parts)
        for index, (part, size) in enumerate(zip(self._parts, self._sizes, strict=True)):
            part.seek(min(max(self._pos - start, 0), size))
            if self._pos < start + size and self._current == len(self._parts):
                self._current = index
            start += size
        return self._pos

    def close(self) -> None:
        for part in self._parts:
            part.close()
        super().close()


class UserpilotClient:
    """Talks to one Userpilot host (or the sandbox) with one API key."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        upload_format: str = "ndjson",
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        user_agent: str = "target-userpilot",
    ) -> None:
        self.api_url = check_api_url(api_url)
        self.upload_format = upload_format
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or .netrc credentials picked up silently
        self._session.headers.update(
            {"Authorization": f"Token {api_key}", "Accept": ACCEPT, "User-Agent": user_agent}
        )
        # The retry policy, declared once: uploads and lists get a bounded number of tries;
        # status polls may wait out a longer outage, because re-uploading is never the answer.
        self._retrying = self._transient_retry(max_tries=lambda: self.retry.max_tries)
        self._polling = self._transient_retry(max_time=lambda: self.retry.poll_max_time)

    def _transient_retry(self, **limits: Any) -> Any:
        """A backoff decorator for transient failures: Retry-After first, else jittered expo."""
        return backoff.on_exception(
            _wait_for,
            TransientError,
            jitter=None,
            on_backoff=_log_retry,
            logger=None,
            policy=self.retry,
            **limits,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # Public calls

    def upload(
        self, object: str, path: str, filename: str, *, conflict_wait: float = 7200.0
    ) -> dict[str, Any]:
        """Upload one batch file to ``/v1/<object>/bulk_identify`` and return the job object.

        A 409 means another job holds the account (ours are awaited before we upload, so it is
        another client's): it is waited out with jittered backoff for up to ``conflict_wait``
        seconds, then raised.

        A timeout or dropped connection after the file was sent is ambiguous: Userpilot may have
        created the job. Before trying again we look for a job with our (unique) filename and
        adopt it, so a flaky network never sends a batch twice or trips over our own job.
        """
        endpoint = f"/v1/{object}/bulk_identify"
        maybe_created = False

        def attempt() -> dict[str, Any]:
            nonlocal maybe_created
            if maybe_created and self.upload_format == "ndjson":
                existing = self.find_job(filename)
                if existing is not None:
                    logger.info(
                        "Found job %s from the interrupted upload of %s.",
                        existing.get("job_id"),
                        filename,
                    )
                    return existing
            try:
                return self._post_batch(endpoint, object, path, filename)
            except TransientError as exc:
                # A refused connection sent nothing: no job to look for before the next try.
                maybe_created = maybe_created or exc.reached_server
                raise

        waiting = backoff.on_exception(
            backoff.expo,
            JobConflict,
            max_time=conflict_wait,
            jitter=backoff.full_jitter,
            on_backoff=_log_conflict,
            logger=None,
            factor=2,
            max_value=30,
        )
        what = f"Uploading the {object} batch {filename}"
        return waiting(lambda: self._until_giving_up(self._retrying, attempt, what))()

    def job_status(self, job_id: str) -> dict[str, Any]:
        """The job object of ``job_id`` (retried on transient failures for a long while)."""
        path = f"/v1/background_jobs/{quote(str(job_id), safe='')}"
        what = (
            f"Reading the status of job {job_id} (it may still complete in Userpilot; "
            "nothing is uploaded again for it)"
        )
        return self._until_giving_up(self._polling, lambda: self._json("GET", path), what)

    def list_jobs(self) -> list[dict[str, Any]]:
        """One try at the account's bulk jobs; an answer that is no job list is an error."""
        return _job_list(self._json("GET", "/v1/background_jobs"))

    def find_job(self, filename: str) -> dict[str, Any] | None:
        """The job created from ``filename``, if Userpilot has one (or lists none we can read)."""
        try:
            jobs = self.list_jobs()
        except UnexpectedAnswer:
            return None
        for job in jobs:
            if job.get("filename") == filename:
                return job
        return None

    def _until_giving_up(self, retrying: Any, call: Any, what: str) -> Any:
        """Run ``call`` under the ``retrying`` policy; once it gives up, say so in a sentence.

        The last error alone ("answered HTTP 503") would not tell an operator that the target
        already tried for a while, or what to do next.
        """
        tries = 0
        started = time.monotonic()

        def counted() -> Any:
            nonlocal tries
            tries += 1
            return call()

        try:
            return retrying(counted)()
        except TransientError as exc:
            elapsed = time.monotonic() - started
            msg = (
                f"{what} failed {tries} times in {elapsed:.0f} s; the last try: {exc}. "
                "Userpilot or the network to it is failing: nothing after the last STATE was "
                "lost; check connectivity and Userpilot's status, then rerun."
            )
            raise TransientError(msg) from None

    # Transport

    def _post_batch(self, endpoint: str, object: str, path: str, filename: str) -> dict[str, Any]:
        if self.upload_format == "json":
            with open(path, "rb") as handle:
                body = (
                    b'{"'
                    + object.encode()
                    + b'":['
                    + b",".join(line.rstrip(b"\n") for line in handle if line.strip())
                    + b"]}"
                )
            return self._json("POST", endpoint, data=body, content_type="application/json")
        boundary = uuid.uuid4().hex
        body = _MultipartBody(path, filename, boundary)
        try:
            return self._json(
                "POST",
                endpoint,
                data=body,
                content_type=f"multipart/form-data; boundary={boundary}",
            )
        finally:
            body.close()

    def _json(
        self, method: str, path: str, *, data: Any = None, content_type: str | None = None
    ) -> Any:
        """One HTTP call, its answer decoded, its failure sorted into our error types."""
        headers = {"Content-Type": content_type} if content_type else None
        try:
            response = self._session.request(
                method,
                self.api_url + path,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,  # the key goes to api_url and nowhere else
            )
        except requests.Timeout as exc:
            msg = f"{method} {path} timed out ({type(exc).__name__})"
            raise TransientError(msg, reached_server=_reached_server(exc)) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            msg = f"{method} {path}: connection failed ({_short(exc)})"
            raise TransientError(msg, reached_server=_reached_server(exc)) from None
        except requests.RequestException as exc:
            msg = f"{method} {path} failed: {type(exc).__name__} ({_short(exc)})"
            raise UserpilotError(msg) from None
        return self._decode(method, path, response)

    def _decode(self, method: str, path: str, response: requests.Response) -> Any:
        status = response.status_code
        if status < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                msg = f"{method} {path} answered HTTP {status} without a JSON body"
                raise UnexpectedAnswer(msg) from None
        message = _error_message(response)
        if status in (401, 403):
            msg = (
                f"Userpilot refused the API key (HTTP {status}). Check api_key, and api_url for "
                "EU or Enterprise accounts (e.g. https://analytex-eu.userpilot.io)."
            )
            raise AuthenticationError(msg)
        if status == 409:
            raise JobConflict(f"Another bulk job is running on the account (HTTP 409): {message}")
        if status == 413:
            raise PayloadTooLarge(f"Userpilot refused the batch as too large (HTTP 413): {message}")
        if status in TRANSIENT_STATUSES:
            raise TransientError(f"{method} {path} answered HTTP {status}", _retry_after(response))
        if 300 <= status < 400:
            msg = (
                f"Userpilot answered {method} {path} with a redirect (HTTP {status}) to "
                f"{response.headers.get('Location', 'somewhere else')}; the target does not "
                "follow redirects with the API key. Set api_url to the final host."
            )
            raise UserpilotError(msg)
        raise UserpilotError(f"Userpilot refused {method} {path} (HTTP {status}): {message}")


def _reached_server(exc: requests.RequestException) -> bool:
    """Whether a failed request may have arrived: not when connecting itself failed."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _job_list(answer: Any) -> list[dict[str, Any]]:
    """The jobs of a list answer: a JSON array, or an object wrapping one (tolerated)."""
    jobs = answer
    if isinstance(answer, dict):
        jobs = answer.get("jobs", answer.get("data"))
    if not isinstance(jobs, list):
        msg = "GET /v1/background_jobs answered JSON that is not a list of jobs"
        raise UnexpectedAnswer(msg)
    return [job for job in jobs if isinstance(job, dict)]


def _error_message(response: requests.Response) -> str:
    """Userpilot's ``errors[].message`` texts, or a short excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason or ""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        messages = [
            str(e.get("message") or e.get("error") or e)
            for e in body["errors"]
            if isinstance(e, dict)
        ]
        if messages:
            return "; ".join(messages)
    return json.dumps(body)[:300]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _short(exc: Exception) -> str:
    """The operating system's reason (e.g. 'Connection refused') rather than urllib3's chain."""
    text = str(exc)
    reason = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if reason:
        return reason.group(1).strip()
    return text if len(text) <= 200 else text[:200] + "..."
