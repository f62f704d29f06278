"""HTTP transport to one Userpilot host: sessions, auth, proxies, CAs, and answers sorted.

One configuration (host, key, timeouts, proxies and CAs from the environment) serves every
thread; each thread gets its own ``requests.Session`` from it, since a session is not safe to
share between threads. Every answer is decoded here and every failure sorted into the error
types of ``errors.py``; whether to try again is the retry policy's call (``retry.py``), and
what to ask is the client's (``client.py``). Whoever builds the transport may be told of each
request as it ends (``observe``: the run's logs make it a METRIC record), by endpoint template.
"""

from __future__ import annotations

import email.utils
import io
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3

from target_userpilot.errors import (
    AuthenticationError,
    ConfigurationError,
    EventRefused,
    JobConflict,
    JobNotFound,
    PayloadTooLarge,
    RequestRefused,
    TransientError,
    UnexpectedAnswer,
    UserNotFound,
    UserpilotError,
)
from target_userpilot.privacy.redact import redact, redact_url
from target_userpilot.userpilot.hosts import (
    UNSENDABLE_KEY,
    check_api_key,
    check_api_url,
    is_loopback,
)

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override

ACCEPT = "application/json, text/plain, */*"
#: The version header Userpilot requires on its deletion and track endpoints.
API_VERSION = "2020-09-22"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The longest wait one Retry-After may impose, on the retry policy and the events' pace alike
#: (applied once, by ``parse_retry_after``).
MAX_RETRY_AFTER_SECONDS = 120.0
#: Statuses that say something about the request as a whole, never about one event's content.
#: (413 is about the content: a track request carries one event, so it is that event's size.)
NOT_EVENT_REFUSALS = frozenset({401, 403, 409, 429})
#: The Import API (``events_api: import``), and where an import job's status may be read, in
#: the order tried: Userpilot does not say, and /v1/background_jobs, as for bulk jobs, is the
#: strong inference. Whether it lists import jobs at GET /v1/imports is not said either.
IMPORTS_PATH = "/v1/imports"
IMPORT_STATUS_PATHS = ("/v1/background_jobs/", "/v1/imports/")
#: The list of bulk jobs, and where an import job may be listed, in the order looked at.
JOBS_PATH = "/v1/background_jobs"
IMPORT_LIST_PATHS = (JOBS_PATH, IMPORTS_PATH)
#: Told of each request as it ends: its method, its endpoint as a template (``endpoint_of``),
#: the HTTP status (None when no answer came) and the seconds from sending to the answer read.
RequestObserver = Callable[[str, str, "int | None", float], None]
#: How urllib3 reports a proxy that refused to open a tunnel for want of credentials.
_PROXY_REFUSED = re.compile(r"Tunnel connection failed: 407\b")


class _TokenAuth(requests.auth.AuthBase):
    """``Authorization: Token <key>`` on every request.

    An auth object, not a session header: with one set, requests never swaps in credentials
    from ``~/.netrc``, even though the session trusts the environment for proxies and CAs.
    """

    def __init__(self, api_key: str) -> None:
        self._header = f"Token {api_key}"

    @override
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    @override
    def __repr__(self) -> str:
        return "<Userpilot token>"  # never the key, whatever prints this object


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
        self._parts: list[io.BufferedIOBase] = [
            io.BytesIO(head),
            open(path, "rb"),  # noqa: SIM115
            io.BytesIO(tail),
        ]
        self._sizes = [len(head), os.path.getsize(path), len(tail)]
        self._length = sum(self._sizes)
        self._current = 0  # index of the part being read
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    @override
    def readable(self) -> bool:
        return True

    @override
    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
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

    @override
    def seekable(self) -> bool:
        return True

    @override
    def tell(self) -> int:
        return self._pos

    @override
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

    @override
    def close(self) -> None:
        for part in self._parts:
            part.close()
        super().close()


class Transport:
    """HTTP calls to one Userpilot host with one API key, from any thread."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        user_agent: str = "target-userpilot",
        observe: RequestObserver | None = None,
    ) -> None:
        self.api_url = check_api_url(api_url)
        self.timeout = timeout
        self._observe = observe
        #: 429 answers met so far, by every thread (what to do about one is the retry policy's
        #: call, and a pace's: ``retry.py``).
        self.rate_limited = 0
        self._auth: requests.auth.AuthBase = _TokenAuth(check_api_key(api_key))
        self._headers = {"Accept": ACCEPT, "User-Agent": user_agent}
        # The sandbox and other loopback hosts are never reached through a proxy: a proxy
        # cannot reach this machine's loopback, and plain http:// would show it the key.
        self._direct = is_loopback(urlsplit(self.api_url).hostname or "")
        if not self._direct:
            check_proxy(self.api_url)
        # Checked now, before any input is read: requests would find a missing bundle only at
        # the first request, with a traceback.
        self._verify = _ca_bundle_from_environment(urlsplit(self.api_url).scheme == "https")
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

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

    def send_file(self, endpoint: str, path: str, filename: str) -> Any:
        """POST the file at ``path`` to ``endpoint`` as multipart/form-data, streamed."""
        boundary = uuid.uuid4().hex
        multipart = _MultipartBody(path, filename, boundary)
        try:
            return self.request(
                "POST",
                endpoint,
                data=multipart,
                content_type=f"multipart/form-data; boundary={boundary}",
            )
        finally:
            multipart.close()

    def request(
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
        started = time.monotonic()
        status: int | None = None
        try:
            response = self._send(method, path, data, content_type, versioned=versioned)
            status = response.status_code
        finally:
            if self._observe is not None:
                self._observe(method, endpoint_of(path), status, time.monotonic() - started)
        return self._decode(method, path, response, events=events)

    def _send(
        self, method: str, path: str, data: Any, content_type: str | None, *, versioned: bool
    ) -> requests.Response:
        """Send one request and return the answer; a failure to get one, sorted."""
        headers: dict[str, str] = {}
        if data is not None and content_type:
            headers["Content-Type"] = content_type
        if versioned:
            headers["X-API-Version"] = API_VERSION
        if path == IMPORTS_PATH:
            headers["Accept"] = "application/json"  # what the Import API's page asks for
        # A fresh dict per call: requests fills it in from the environment. None: no proxy.
        proxies: dict[str, Any] = {"http": None, "https": None, "all": None} if self._direct else {}
        try:
            response = self._session.request(
                method,
                self.api_url + path,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,  # the key goes to api_url and nowhere else
                proxies=proxies,
                verify=self._verify,
            )
        except requests.exceptions.SSLError as exc:
            msg = (
                f"{method} {path}: the TLS connection to {urlsplit(self.api_url).hostname} "
                f"failed ({_short(exc)}). If a company proxy or firewall inspects TLS, point "
                "REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its CA certificate bundle"
            )
            raise TransientError(msg, reached_server=False) from None
        except requests.exceptions.ProxyError as exc:
            if _PROXY_REFUSED.search(str(exc)):
                raise self._proxy_refused() from None  # no retry can supply credentials
            msg = f"{method} {path}: connection failed ({_short(exc)})"
            raise TransientError(msg, reached_server=False) from None
        except requests.Timeout as exc:
            msg = f"{method} {path} timed out ({type(exc).__name__})"
            raise TransientError(msg, reached_server=_reached_server(exc)) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            msg = f"{method} {path}: connection failed ({_short(exc)})"
            raise TransientError(msg, reached_server=_reached_server(exc)) from None
        except requests.exceptions.InvalidHeader:
            raise ConfigurationError(UNSENDABLE_KEY) from None  # its text quotes the header
        except requests.exceptions.InvalidURL as exc:
            # Only a proxy from the environment gets here: api_url was checked at the start.
            msg = (
                f"{method} {path}: the proxy URL cannot be used ({_short(exc)}). Check "
                "HTTPS_PROXY / HTTP_PROXY / ALL_PROXY; percent-encode special characters in "
                "their user name and password."
            )
            raise ConfigurationError(msg) from None
        except requests.RequestException as exc:
            msg = f"{method} {path} failed: {type(exc).__name__} ({_short(exc)})"
            raise UserpilotError(msg) from None
        except (UnicodeError, ValueError):
            # http.client refuses a header it cannot encode or that holds a line break, and
            # quotes the header (the key) in its message: never let that text out.
            raise ConfigurationError(UNSENDABLE_KEY) from None
        return response

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
        if status in (404, 405) and method == "GET" and path == IMPORTS_PATH:
            # Userpilot does not say whether it lists import jobs there.
            raise JobNotFound(f"GET {path} answered HTTP {status}: no list of import jobs there")
        if status == 409 and (path.endswith("/bulk_identify") or path == IMPORTS_PATH):
            raise JobConflict(f"Another bulk job is running on the account (HTTP 409): {message}")
        if status == 413 and not events:
            raise PayloadTooLarge(
                f"Userpilot refused the request as too large (HTTP 413): {message}"
            )
        if status in TRANSIENT_STATUSES:
            retry_after = _retry_after(response)
            if status == 429:
                with self._lock:
                    self.rate_limited += 1
            raise TransientError(
                f"{method} {path} answered HTTP {status}", retry_after, status=status
            )
        if 300 <= status < 400:
            msg = (
                f"Userpilot answered {method} {path} with a redirect (HTTP {status}) to "
                f"{response.headers.get('Location', 'somewhere else')}; the target does not "
                "follow redirects with the API key. Set api_url to the final host."
            )
            raise UserpilotError(msg)
        if events and status == 404:
            # The status alone decides: Userpilot documents no wording for an unknown user, and
            # any 404 (a proxy's too) proves the event was not recorded.
            raise UserNotFound(f"Userpilot refused the event (HTTP 404): {message}")
        if events and 400 <= status < 500 and status not in NOT_EVENT_REFUSALS:
            why = " as too large" if status == 413 else ""
            raise EventRefused(f"Userpilot refused the event{why} (HTTP {status}): {message}")
        raise RequestRefused(f"Userpilot refused {method} {path} (HTTP {status}): {message}")

    def _proxy_refused(self) -> ConfigurationError:
        """The proxy answered 407: name the variable that holds its credentials, never them."""
        variable, value = _proxy_setting(urlsplit(self.api_url).scheme)
        if value and urlsplit(value).username:
            problem = f"refused the user name and password given in {variable}"
        else:
            problem = f"asks for a user name and password, and {variable} gives none"
        msg = (
            f"The proxy between this machine and Userpilot {problem} (HTTP 407 Proxy "
            f"Authentication Required). Set {variable} to http://USER:PASSWORD@HOST:PORT with "
            "the proxy's credentials (special characters percent-encoded), then rerun."
        )
        return ConfigurationError(msg)


def endpoint_of(path: str) -> str:
    """The endpoint ``path`` calls, as a template that names no job: a job's status at
    ``/v1/background_jobs/{id}`` or ``/v1/imports/{id}``; every other path is already one."""
    for prefix in IMPORT_STATUS_PATHS:
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + "{id}"
    return path


def check_proxy(api_url: str) -> None:
    """Raise :class:`ConfigurationError` when the environment's proxy for ``api_url`` is unusable.

    A password with ``#``, ``/``, ``?`` or ``@`` written raw makes urllib3 read part of it as the
    proxy's host. Every request would then fail with a message quoting the URL, and after its
    retries the run would blame Userpilot. Said once, before any input, it names the variable.
    """
    proxies = requests.utils.get_environ_proxies(api_url)
    proxy = requests.utils.select_proxy(api_url, proxies)
    if not proxy:
        return
    if "://" not in proxy:
        proxy = "http://" + proxy  # as requests reads a proxy without a scheme
    written_host = re.split(r"[:/?#]", proxy.split("://", 1)[-1].rpartition("@")[2], maxsplit=1)[0]
    try:
        parsed_host = urllib3.util.parse_url(proxy).host or ""
    except (ValueError, urllib3.exceptions.LocationParseError):
        parsed_host = ""
    if parsed_host and parsed_host.strip("[]").lower() == written_host.strip("[]").lower():
        return
    scheme = urlsplit(api_url).scheme
    names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
    variable = next((n for n in names if os.environ.get(n, "").strip()), "the proxy variable")
    msg = (
        f"The proxy in {variable} ({redact_url(proxy)}) cannot be read as a URL: its user name "
        "or password holds a character that must be percent-encoded (# as %23, @ as %40, / as "
        f"%2F, ? as %3F, : in the user name as %3A). Write it encoded in {variable}, or set "
        "NO_PROXY for this host if it needs no proxy."
    )
    raise ConfigurationError(msg)


def _ca_bundle_from_environment(check: bool) -> bool | str:
    """``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, when REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE are unset.

    requests reads its own two variables but verifies against certifi's bundle otherwise, so
    the OpenSSL variables that Python and most tools honour would be ignored without this.
    With ``check`` (an https:// host), the variable in effect must name something that exists.
    """
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = os.environ.get(variable)
        if value:
            if check:
                _check_ca_location(variable, value, os.path.exists(value))
            return True  # requests applies them itself
    for variable, exists in (("SSL_CERT_FILE", os.path.isfile), ("SSL_CERT_DIR", os.path.isdir)):
        value = os.environ.get(variable)
        if value:
            if check:
                _check_ca_location(variable, value, exists(value))
            return value
    return True


def _check_ca_location(variable: str, value: str, exists: bool) -> None:
    """A CA variable naming nothing is a configuration error, found before any input."""
    if exists:
        return
    kind = "folder" if variable == "SSL_CERT_DIR" else "file"
    msg = (
        f"{variable} names '{value}', which is not an existing {kind}, so Userpilot's TLS "
        f"certificate could not be checked. Point {variable} at your company's CA certificate "
        f"bundle (a PEM {kind}), or unset it to use the bundle that comes with the target."
    )
    raise ConfigurationError(msg)


def _proxy_setting(scheme: str) -> tuple[str, str]:
    """The environment variable naming the proxy for ``scheme`` URLs, and its value.

    The order requests (urllib) reads them in: lower case first, then upper, then ALL_PROXY.
    """
    for variable in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        value = os.environ.get(variable)
        if value:
            return variable, value
    return f"{scheme.upper()}_PROXY", ""


def _reached_server(exc: requests.RequestException) -> bool:
    """Whether a failed request may have arrived: not when connecting itself failed."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


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
    """The answer's Retry-After in seconds (see :func:`parse_retry_after`)."""
    return parse_retry_after(response.headers.get("Retry-After"), date=response.headers.get("Date"))


def parse_retry_after(
    value: str | None, *, date: str | None = None, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, capped at ``MAX_RETRY_AFTER_SECONDS``:
    the one parser, so one answer never makes a lane wait longer, whoever reads it.

    Either form of RFC 9110 (RFC 7231): delay-seconds, or an HTTP date (IMF-fixdate, and the
    obsolete forms ``email.utils`` reads). A date is measured against the answer's own ``Date``
    header when it has one, so a server clock that runs ahead or behind ours does not stretch
    the wait; otherwise against ``now``. A date in the past means now (0). Anything else
    (empty, text, NaN) is None: the policy's own backoff applies.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, date, now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _seconds_until(when: str, date: str | None, now: Callable[[], float]) -> float | None:
    """Seconds from the answer's ``Date`` (else ``now``) to the HTTP date ``when``."""
    retry_at = _http_date(when)
    if retry_at is None:
        return None
    answered = _http_date(date) if date else None
    return retry_at - (answered if answered is not None else now())


def _http_date(text: str) -> float | None:
    """An HTTP date as a POSIX timestamp; None when it is not one. No zone means GMT."""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _short(exc: Exception) -> str:
    """The operating system's reason (e.g. 'Connection refused') rather than urllib3's chain.

    Credentials in a proxy URL (``http://user:password@proxy``) are cut out.
    """
    text = redact(str(exc))
    reason = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if reason:
        return reason.group(1).strip()
    verify = re.search(r"certificate verify failed: ([^'\")\]]+)", text)
    if verify:
        return f"certificate verify failed: {verify.group(1).strip()}"
    return text if len(text) <= 200 else text[:200] + "..."
