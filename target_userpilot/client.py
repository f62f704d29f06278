"""HTTP client for Userpilot's API: bulk jobs, deletions and events; no Singer inside.

One configuration (host, key, timeouts, proxies and CAs from the environment) serves every
thread; each thread gets its own ``requests.Session`` from it, since a session is not safe to
share between threads. The retry policy is declared here once, next to the transport, in
``UserpilotClient.__init__``: which answers are worth another try, how long to wait
(``Retry-After`` first, jittered exponential backoff otherwise), and how many tries are enough.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import backoff
import requests
import requests.auth
import urllib3

from target_userpilot.errors import (
    AuthenticationError,
    ConfigurationError,
    EventRefused,
    JobConflict,
    JobNotFound,
    JobTimeout,
    PayloadTooLarge,
    TransientError,
    UnexpectedAnswer,
    UserpilotError,
)

logger = logging.getLogger("target_userpilot.client")

ACCEPT = "application/json, text/plain, */*"
#: The version header Userpilot requires on its deletion and track endpoints.
API_VERSION = "2020-09-22"
FINAL_STATUSES = frozenset({"completed", "failed"})
WAITING_STATUSES = frozenset({"queued", "validating", "processing", "pending_refresh"})
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that say something about the request as a whole, never about one event's content.
NOT_EVENT_REFUSALS = frozenset({401, 403, 409, 413, 429})
LOOPBACK_HOSTS = frozenset({"localhost", "::1"})
#: What a job's type says about its object, to tell users' jobs from companies' in the list.
JOB_TYPES = {"users": "users_bulk_identify", "companies": "companies_bulk_identify"}
#: The batches of ``events_api: import``: Import API files, uploaded to ``IMPORTS_PATH``.
EVENTS = "events"
IMPORTS_PATH = "/v1/imports"
#: Where an import job's status may be read, in the order tried: Userpilot does not say, and
#: following bulk jobs at /v1/background_jobs is the strong inference.
IMPORT_STATUS_PATHS = ("/v1/background_jobs/", "/v1/imports/")

UNSENDABLE_KEY = (
    "The API key cannot be sent as an HTTP header: it holds whitespace, a control character or "
    "a character outside printable ASCII (often a newline or space copied with it). Copy the "
    "key again from Userpilot (Settings > Environment) into api_key."
)


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: transient ones, status polls, and another client's job.

    Transient failures (429, 5xx, dropped connections, timeouts) get ``max_tries`` tries;
    status polls retry them, and answers that are no job, for up to ``poll_max_time`` seconds;
    409 is waited out for as long as the caller's ``conflict_wait``.
    """

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    max_tries: int = 8
    #: Status polls may wait out a longer outage: re-uploading is never the answer to one.
    poll_max_time: float = 300.0
    #: Longest pause between two uploads while another bulk job holds the account (409).
    conflict_max_seconds: float = 30.0


def deletion_body(object: str, ids: list[str]) -> bytes:
    """The JSON body of a deletion request: ``{"users": [ids]}`` (the dry run writes the same)."""
    return json.dumps({object: list(ids)}).encode()


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


def check_api_key(api_key: str) -> str:
    """Return ``api_key``, or raise :class:`ConfigurationError` if no HTTP header can carry it.

    http.client and requests quote a header they refuse in their error text, which would put
    the key in the output; refusing it here, without echoing it, keeps it out.
    """
    if any(not "\x21" <= char <= "\x7e" for char in api_key):
        raise ConfigurationError(UNSENDABLE_KEY)
    return api_key


class _TokenAuth(requests.auth.AuthBase):
    """``Authorization: Token <key>`` on every request.

    An auth object, not a session header: with one set, requests never swaps in credentials
    from ``~/.netrc``, even though the session trusts the environment for proxies and CAs.
    """

    def __init__(self, api_key: str) -> None:
        self._header = f"Token {api_key}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<Userpilot token>"  # never the key, whatever prints this object


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
    """Talks to one Userpilot host (or the sandbox) with one API key, from any thread."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        upload_format: str = "ndjson",
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        user_agent: str = "target-userpilot",
        on_rate_limited: Callable[[float | None], None] | None = None,
    ) -> None:
        self.api_url = check_api_url(api_url)
        self.upload_format = upload_format
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        #: Called with Retry-After (or None) on every 429, from the thread that met it, so a
        #: caller that paces its own requests (events, deletions) can slow down.
        self.on_rate_limited = on_rate_limited
        #: 429 answers met so far, by every thread.
        self.rate_limited = 0
        self._auth = _TokenAuth(check_api_key(api_key))
        self._headers = {"Accept": ACCEPT, "User-Agent": user_agent}
        # The sandbox and other loopback hosts are never reached through a proxy: a proxy
        # cannot reach this machine's loopback, and plain http:// would show it the key.
        self._direct = is_loopback(urlsplit(self.api_url).hostname or "")
        self._verify = _ca_bundle_from_environment()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        #: Import jobs we created, and where their status was found (see ``_import_status``).
        self._import_jobs: set[str] = set()
        self._import_status_path: str | None = None
        self._unfollowable_warned = False

        # The retry policy, declared once. Uploads, lists, deletions and events get a bounded
        # number of tries; status polls may wait out a longer outage (and answers that are no
        # job), because re-uploading is never the answer to a failed poll; another client's
        # job (409) is waited out for as long as the caller allows (`_conflicts`, below).
        self._retrying = self._backoff(TransientError, max_tries=lambda: self.retry.max_tries)
        self._polling = self._backoff(
            (TransientError, UnexpectedAnswer), max_time=lambda: self.retry.poll_max_time
        )

    def _backoff(self, errors: Any, **limits: Any) -> Any:
        """A backoff decorator for ``errors``: Retry-After first, else jittered expo."""
        return backoff.on_exception(
            _wait_for,
            errors,
            jitter=None,
            on_backoff=_log_retry,
            logger=None,
            policy=self.retry,
            **limits,
        )

    def _conflicts(self, conflict_wait: float) -> Any:
        """A backoff decorator that waits out another bulk job (409) for ``conflict_wait`` s."""
        return backoff.on_exception(
            backoff.expo,
            JobConflict,
            max_time=conflict_wait,
            jitter=backoff.full_jitter,
            on_backoff=_log_conflict,
            logger=None,
            factor=2,
            max_value=self.retry.conflict_max_seconds,
        )

    def close(self) -> None:
        """Close every thread's pooled connections."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    @property
    def _session(self) -> requests.Session:
        """This thread's session: requests.Session is not safe to share between threads."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth
            session.headers.update(self._headers)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    # Bulk jobs

    def upload(
        self, object: str, path: str, filename: str, *, conflict_wait: float = 7200.0
    ) -> dict[str, Any]:
        """Upload one batch file to ``/v1/<object>/bulk_identify`` and return the job object.

        An ``events`` batch (``events_api: import``) is an Import API file: it goes to
        ``/v1/imports``, always as a multipart NDJSON file, and its job is followed likewise.

        A 409 means another job holds the account (ours are awaited before we upload, so it is
        another client's): it is waited out with jittered backoff for up to ``conflict_wait``
        seconds, then :class:`JobTimeout` is raised.

        A timeout or dropped connection after the file was sent is ambiguous: Userpilot may have
        created the job. Before trying again we look for a job with our (unique) filename and
        adopt it, so a flaky network never sends a batch twice or trips over our own job. The
        same lookup follows an acceptance that names no job. JSON uploads carry no filename to
        look for: after a lost answer they are sent again, which upserts the same rows twice.
        """
        importing = object == EVENTS
        endpoint = IMPORTS_PATH if importing else f"/v1/{object}/bulk_identify"
        ndjson = importing or self.upload_format == "ndjson"
        maybe_created = False
        accepted_as: str | None = None  # what an acceptance that named no job held instead

        def attempt() -> dict[str, Any]:
            nonlocal maybe_created, accepted_as
            if accepted_as is not None:
                return self._adopt_unnamed(endpoint, filename, accepted_as, ndjson)
            if maybe_created and ndjson:
                existing = self.find_job(filename)
                if existing is not None:
                    logger.info(
                        "Found job %s from the interrupted upload of %s.",
                        existing["job_id"],
                        filename,
                    )
                    return existing
            elif maybe_created:
                logger.info(
                    "The answer to the JSON upload of %s was lost; JSON jobs carry no filename "
                    "to find them by, so the batch is sent again (its rows are upserted twice).",
                    filename,
                )
            try:
                answer = self._post_batch(endpoint, object, path, filename)
            except TransientError as exc:
                # A refused connection sent nothing: no job to look for before the next try.
                maybe_created = maybe_created or exc.reached_server
                raise
            except UnexpectedAnswer as exc:
                msg = (
                    f"{exc} The upload of {filename} was not repeated, since it may have "
                    "reached Userpilot; rerun from the last STATE once api_url answers as "
                    "Userpilot."
                )
                raise UnexpectedAnswer(msg) from None
            job = _job_object(answer)
            if job is not None:
                return job
            # Accepted, yet no job named: never sent again, only looked for (a lookup that
            # fails for a moment is retried as any transient failure).
            accepted_as = _describe(answer)
            return self._adopt_unnamed(endpoint, filename, accepted_as, ndjson)

        what = f"Uploading the {object} batch {filename}"
        try:
            job = self._conflicts(conflict_wait)(
                lambda: self._until_giving_up(self._retrying, attempt, what)
            )()
            if importing:
                with self._lock:
                    self._import_jobs.add(job["job_id"])
            return job
        except JobConflict:
            msg = (
                f"Another bulk job held the Userpilot account for over {conflict_wait:.0f} s, "
                f"so the batch file {filename} could not be uploaded within "
                "job_timeout_seconds. Check the running jobs in Userpilot (another client may "
                "be loading), or raise job_timeout_seconds."
            )
            raise JobTimeout(msg) from None

    def _adopt_unnamed(
        self, endpoint: str, filename: str, described: str, ndjson: bool
    ) -> dict[str, Any]:
        """An upload accepted without a job id: find its job by filename, or say why not."""
        if ndjson:
            job = self.find_job(filename)
            if job is not None:
                logger.info(
                    "Userpilot accepted %s with %s; following its job %s from the jobs list.",
                    filename,
                    described,
                    job["job_id"],
                )
                return job
            where = "and the jobs list shows no job for that file"
        else:
            where = "and a JSON upload has no filename to find its job by"
        msg = (
            f"POST {endpoint} accepted the batch {filename} with {described} instead of a job "
            f"object, {where}: the target cannot follow the job. Check Userpilot's background "
            "jobs and api_url (a proxy may be answering), then rerun from the last STATE."
        )
        raise UnexpectedAnswer(msg)

    def job_status(self, job_id: str) -> dict[str, Any]:
        """The job object of ``job_id``, its status in lower case.

        Transient failures and answers that are no job object are retried for a long while
        (``poll_max_time``): a poll changes nothing, and the job goes on meanwhile.
        """
        if job_id in self._import_jobs:
            return self._import_status(job_id)
        return self._poll(f"/v1/background_jobs/{quote(str(job_id), safe='')}", job_id)

    def _import_status(self, job_id: str) -> dict[str, Any]:
        """An import job's status, wherever Userpilot serves it (it does not say where).

        ``/v1/background_jobs/{id}`` first, as for bulk jobs, then ``/v1/imports/{id}``; the
        place that knew the job is used from then on. If neither knows it, the job cannot be
        followed: it counts as completed once accepted (as a track request does on its 202),
        marked ``followed: False``, with one WARNING per run. The next upload still waits out
        a running job through 409.
        """
        quoted = quote(str(job_id), safe="")
        places = [self._import_status_path] if self._import_status_path else IMPORT_STATUS_PATHS
        for place in places:
            try:
                job = self._poll(f"{place}{quoted}", job_id)
            except JobNotFound:
                if self._import_status_path is not None:
                    raise
                continue
            self._import_status_path = place
            return job
        if not self._unfollowable_warned:
            self._unfollowable_warned = True
            logger.warning(
                "Userpilot accepted import job %s but shows its status neither at "
                "/v1/background_jobs/{id} nor at /v1/imports/{id}, so import jobs cannot be "
                "followed: each counts as loaded once Userpilot accepted it, and the next "
                "upload waits out a running job (HTTP 409). A failed import would go "
                "unnoticed: check the imports in Userpilot.",
                job_id,
            )
        return {"job_id": job_id, "status": "completed", "followed": False}

    def _poll(self, path: str, job_id: str) -> dict[str, Any]:
        """One job's status at ``path``, retried for a long while (``poll_max_time``)."""

        def poll() -> dict[str, Any]:
            answer = self._request("GET", path)
            job = _job_object(answer)
            if job is None or "status" not in job:
                msg = f"GET {path} answered with {_describe(answer)}, not a job object"
                raise UnexpectedAnswer(msg)
            return job

        what = (
            f"Reading the status of job {job_id} (it may still complete in Userpilot; "
            "nothing is uploaded again for it)"
        )
        return self._until_giving_up(self._polling, poll, what)

    def list_jobs(self) -> list[dict[str, Any]]:
        """One try at the account's bulk jobs; an answer that is no job list is an error."""
        return _job_list(self._request("GET", "/v1/background_jobs"))

    def find_job(self, filename: str) -> dict[str, Any] | None:
        """The job created from ``filename``, if Userpilot has one (or lists none we can read)."""
        try:
            jobs = self.list_jobs()
        except UnexpectedAnswer:
            return None
        return next((job for job in jobs if job.get("filename") == filename), None)

    # Deletions and events

    def delete_profiles(self, object: str, ids: list[str]) -> dict[str, Any]:
        """Ask Userpilot to delete ``ids`` of ``object`` (``users`` or ``companies``).

        Returns Userpilot's answer (``{}`` when it sent no body). Deleting is idempotent, so
        every transient failure is retried; 413 raises :class:`PayloadTooLarge` for the caller
        to split the ids.
        """
        if object not in JOB_TYPES:
            raise ValueError(f"object must be 'users' or 'companies', not {object!r}")
        path = f"/v1/{object}"
        body = deletion_body(object, ids)
        what = f"Deleting {len(ids)} {object}"
        answer = self._until_giving_up(
            self._retrying, lambda: self._request("DELETE", path, data=body, versioned=True), what
        )
        if isinstance(answer, dict):
            return answer
        return {} if answer is None else {"message": answer}

    def track(self, user_id: str, event_name: str, metadata: dict[str, Any] | None) -> None:
        """Send one event to ``/v1/track``.

        Raises :class:`EventRefused` when Userpilot refuses this event (a 4xx about its
        content), so the caller rejects that record alone. Transient failures are retried; an
        event whose answer was lost may then count twice, as events are not idempotent.
        """
        event: dict[str, Any] = {"user_id": user_id, "event_name": event_name}
        if metadata is not None:
            event["metadata"] = metadata
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        self._until_giving_up(
            self._retrying,
            lambda: self._request("POST", "/v1/track", data=body, versioned=True, events=True),
            "Sending an event to /v1/track",
        )

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
        except (TransientError, UnexpectedAnswer) as exc:
            if isinstance(exc, UnexpectedAnswer) and retrying is not self._polling:
                raise  # not retried under this policy: the error speaks for itself
            elapsed = time.monotonic() - started
            if isinstance(exc, UnexpectedAnswer):
                msg = (
                    f"{what} failed {tries} times in {elapsed:.0f} s; the last answer: {exc}. "
                    "Something other than Userpilot's API answers (a proxy or another "
                    "service): nothing after the last STATE was lost; check api_url and any "
                    "proxy between this machine and Userpilot, then rerun."
                )
                raise UnexpectedAnswer(msg) from None
            msg = (
                f"{what} failed {tries} times in {elapsed:.0f} s; the last try: {exc}. "
                "Userpilot or the network to it is failing: nothing after the last STATE was "
                "lost; check connectivity and Userpilot's status, then rerun."
            )
            raise TransientError(msg) from None

    # Transport

    def _post_batch(self, endpoint: str, object: str, path: str, filename: str) -> Any:
        if self.upload_format == "json" and object != EVENTS:
            with open(path, "rb") as handle:
                body = (
                    b'{"'
                    + object.encode()
                    + b'":['
                    + b",".join(line.rstrip(b"\n") for line in handle if line.strip())
                    + b"]}"
                )
            return self._request("POST", endpoint, data=body, content_type="application/json")
        boundary = uuid.uuid4().hex
        multipart = _MultipartBody(path, filename, boundary)
        try:
            return self._request(
                "POST",
                endpoint,
                data=multipart,
                content_type=f"multipart/form-data; boundary={boundary}",
            )
        finally:
            multipart.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        content_type: str | None = "application/json",
        versioned: bool = False,
        events: bool = False,
    ) -> Any:
        """One HTTP call, its answer decoded, its failure sorted into our error types.

        ``versioned`` adds the X-API-Version header of the deletion and track endpoints;
        ``events`` makes a refusal of the request's content an :class:`EventRefused`.
        """
        headers: dict[str, str] = {}
        if data is not None and content_type:
            headers["Content-Type"] = content_type
        if versioned:
            headers["X-API-Version"] = API_VERSION
        if path == IMPORTS_PATH:
            headers["Accept"] = "application/json"  # what the Import API's page asks for
        try:
            response = self._session.request(
                method,
                self.api_url + path,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,  # the key goes to api_url and nowhere else
                # A fresh dict per call: requests fills it in from the environment.
                proxies={"http": None, "https": None, "all": None} if self._direct else {},
                verify=self._verify,
            )
        except requests.exceptions.SSLError as exc:
            msg = (
                f"{method} {path}: the TLS connection to {urlsplit(self.api_url).hostname} "
                f"failed ({_short(exc)}). If a company proxy or firewall inspects TLS, point "
                "REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its CA certificate bundle"
            )
            raise TransientError(msg, reached_server=False) from None
        except requests.Timeout as exc:
            msg = f"{method} {path} timed out ({type(exc).__name__})"
            raise TransientError(msg, reached_server=_reached_server(exc)) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            msg = f"{method} {path}: connection failed ({_short(exc)})"
            raise TransientError(msg, reached_server=_reached_server(exc)) from None
        except requests.exceptions.InvalidHeader:
            raise ConfigurationError(UNSENDABLE_KEY) from None  # its text quotes the header
        except requests.RequestException as exc:
            msg = f"{method} {path} failed: {type(exc).__name__} ({_short(exc)})"
            raise UserpilotError(msg) from None
        except (UnicodeError, ValueError):
            # http.client refuses a header it cannot encode or that holds a line break, and
            # quotes the header (the key) in its message: never let that text out.
            raise ConfigurationError(UNSENDABLE_KEY) from None
        return self._decode(method, path, response, events=events)

    def _decode(
        self, method: str, path: str, response: requests.Response, *, events: bool = False
    ) -> Any:
        status = response.status_code
        if status < 300:
            if not response.content.strip():
                return None
            try:
                return response.json()
            except ValueError:
                kind = response.headers.get("Content-Type", "").split(";")[0] or "a body"
                msg = (
                    f"{method} {path} answered HTTP {status} with {kind} that is not JSON: this "
                    "is not Userpilot's API (a proxy, a login page or another service "
                    "answered). Check api_url and any proxy between this machine and Userpilot."
                )
                raise UnexpectedAnswer(msg) from None
        message = _error_message(response)
        if status in (401, 403):
            msg = (
                f"Userpilot refused the API key (HTTP {status}). Check api_key, and api_url for "
                "EU or Enterprise accounts (e.g. https://analytex-eu.userpilot.io)."
            )
            raise AuthenticationError(msg)
        if status == 404 and method == "GET" and path.startswith(IMPORT_STATUS_PATHS):
            raise JobNotFound(f"GET {path} answered HTTP 404: {message}")
        if status == 409 and (path.endswith("/bulk_identify") or path == IMPORTS_PATH):
            raise JobConflict(f"Another bulk job is running on the account (HTTP 409): {message}")
        if status == 413:
            raise PayloadTooLarge(
                f"Userpilot refused the request as too large (HTTP 413): {message}"
            )
        if status in TRANSIENT_STATUSES:
            retry_after = _retry_after(response)
            if status == 429:
                self._note_rate_limit(retry_after)
            raise TransientError(f"{method} {path} answered HTTP {status}", retry_after)
        if 300 <= status < 400:
            msg = (
                f"Userpilot answered {method} {path} with a redirect (HTTP {status}) to "
                f"{response.headers.get('Location', 'somewhere else')}; the target does not "
                "follow redirects with the API key. Set api_url to the final host."
            )
            raise UserpilotError(msg)
        if events and 400 <= status < 500 and status not in NOT_EVENT_REFUSALS:
            raise EventRefused(f"Userpilot refused the event (HTTP {status}): {message}")
        raise UserpilotError(f"Userpilot refused {method} {path} (HTTP {status}): {message}")

    def _note_rate_limit(self, retry_after: float | None) -> None:
        with self._lock:
            self.rate_limited += 1
        if self.on_rate_limited is not None:
            self.on_rate_limited(retry_after)


def _ca_bundle_from_environment() -> bool | str:
    """``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, when REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE are unset.

    requests reads its own two variables but verifies against certifi's bundle otherwise, so
    the OpenSSL variables that Python and most tools honour would be ignored without this.
    """
    if os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"):
        return True  # requests applies them itself
    return os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR") or True


def _reached_server(exc: requests.RequestException) -> bool:
    """Whether a failed request may have arrived: not when connecting itself failed."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _job_object(answer: Any) -> dict[str, Any] | None:
    """A job object with ``job_id`` as a string and ``status`` in lower case; else None."""
    if not isinstance(answer, dict):
        return None
    job_id = answer.get("job_id")
    if isinstance(job_id, bool) or not isinstance(job_id, str | int) or str(job_id) == "":
        return None
    job = dict(answer)
    job["job_id"] = str(job_id)
    status = answer.get("status")
    if isinstance(status, str) and status.strip():
        job["status"] = status.strip().lower()
    else:
        job.pop("status", None)  # a missing or unreadable status is no status
    return job


def _describe(answer: Any) -> str:
    """What an answer that is not a job object holds, in words (never its values)."""
    if answer is None:
        return "an empty body"
    if isinstance(answer, list):
        return "a JSON array"
    if isinstance(answer, dict) and _job_object(answer) is None:
        return "a JSON object without a job_id"
    if isinstance(answer, dict):
        return "a JSON object without a status"
    if isinstance(answer, bool):
        return "a JSON boolean"
    return "a JSON string" if isinstance(answer, str) else "a JSON number"


def _job_list(answer: Any) -> list[dict[str, Any]]:
    """The jobs of a list answer: a JSON array, or an object wrapping one (tolerated)."""
    jobs = answer
    if isinstance(answer, dict):
        jobs = answer.get("jobs", answer.get("data"))
    if not isinstance(jobs, list):
        msg = "GET /v1/background_jobs answered JSON that is not a list of jobs"
        raise UnexpectedAnswer(msg)
    return [job for job in map(_job_object, jobs) if job is not None]


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
            return "; ".join(messages)[:300]
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
    """The operating system's reason (e.g. 'Connection refused') rather than urllib3's chain.

    Credentials in a proxy URL (``http://user:password@proxy``) are cut out.
    """
    text = re.sub(r"//[^/@\s'\"]+@", "//***@", str(exc))
    reason = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if reason:
        return reason.group(1).strip()
    verify = re.search(r"certificate verify failed: ([^'\")\]]+)", text)
    if verify:
        return f"certificate verify failed: {verify.group(1).strip()}"
    return text if len(text) <= 200 else text[:200] + "..."
