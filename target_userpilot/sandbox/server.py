"""A Userpilot-compatible bulk API served on loopback, with a clock-driven job lifecycle.

The real bulk API cannot be used for tests: it runs one job per account at 1,800 rows a
minute, and the failures a loader must survive (409 while another client's job runs, 413, 429,
dropped connections, timeouts after the upload already took effect, failed jobs) cannot be
provoked on demand. This module serves the same endpoints, answers in the same shapes and can
inject each of those failures, repeatably, from a seeded random generator.

Job state is never advanced by a background worker. Every HTTP request and every Python call
first brings the account up to date with the clock (`_Account._advance`): jobs whose end time
has passed become final and their rows are applied to the profiles, in upload order. A job's
whole life is therefore decided when it is accepted, which keeps the emulator deterministic
and free of timing races of its own.
"""

from __future__ import annotations

import contextlib
import copy
import email
import email.policy
import hmac
import ipaddress
import json
import logging
import random
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

log = logging.getLogger("target_userpilot.sandbox")

#: Per object: the identifier field of a row, the optional fields, and the job `type`.
OBJECTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "users": ("user_id", ("company_id", "metadata"), "users_bulk_identify"),
    "companies": ("company_id", ("metadata",), "companies_bulk_identify"),
}
FAULT_KINDS = (
    "drop",
    "error",
    "rate_limit",
    "slow",
    "status_error",
    "forbidden",
    "fail_job",
    "refuse",
)

# Phases before processing take this share of a job's duration each, but never longer than the
# cap: long jobs then spend almost all their time in `processing`, as real ones do.
_PHASE_SHARE = 0.05
_PHASE_CAP_SECONDS = 0.5
# Multipart framing around the file: allowed on top of max_bytes before the body is refused
# unread, so a file just under the limit is still parsed and measured exactly.
_MULTIPART_SLACK_BYTES = 64 * 1024
_ADMIN_BODY_LIMIT = 1024 * 1024
_IDLE_CONNECTION_SECONDS = 300
_JOB_ID_PREFIX = "bulk:jobs:NX-sandbox:"
# Requests remembered by `request_log`, oldest dropped first: enough for any test or benchmark
# run, bounded for a sandbox left running for days.
_REQUEST_LOG_LIMIT = 100_000


def require_loopback(host: str) -> None:
    """Refuse any host that is not loopback: the emulator accepts any upload and must never be
    reachable from another machine."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"userpilot-sandbox only listens on loopback (127.0.0.1, ::1 or localhost), "
            f"not on {host!r}. It accepts any upload without real security, so it must not be "
            f"reachable from other machines."
        )


def _errors_body(error: str, code: str, message: str, details: dict | None = None) -> bytes:
    """Userpilot's error envelope, so clients exercise the same error parsing as in production."""
    errors = [{"error": error, "error_code": code, "message": message, "details": details or {}}]
    return json.dumps({"errors": errors}).encode()


def _retry_after_header(seconds: float) -> str:
    """HTTP sends whole seconds; keep a fractional value only when the test asked for one."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


# Statuses with a meaning of their own (key refused, conflict, too large, rate limit): each has
# its own fault or rule, so `refuse_uploads` leaves them out.
_NOT_REFUSALS = frozenset({401, 403, 409, 413, 429})


@dataclass(frozen=True)
class Faults:
    """The failures the sandbox injects into `/v1` calls; every one is off by default.

    The error, rate-limit, drop and slow shares are slices of one random draw per request, so
    their shares add up exactly; `status_error_rate` is drawn separately, for status calls only.
    `refuse_uploads` (a 4xx status such as 400 or 422) answers every authorised upload with that
    status and Userpilot's error envelope, as Userpilot does for a request it will not take.
    """

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    status_error_rate: float = 0.0
    fail_jobs: int = 0
    max_rows: int = 10_000
    max_bytes: int = 50_000_000
    forbidden: bool = False
    refuse_uploads: int = 0
    only: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject nonsense early: a typo in a test's fault set should fail loudly, not pass."""
        for name in ("error_rate", "rate_limit_rate", "drop_rate", "slow_rate"):
            _check_share(name, getattr(self, name))
        _check_share("status_error_rate", self.status_error_rate)
        sliced = self.error_rate + self.rate_limit_rate + self.drop_rate + self.slow_rate
        if sliced > 1:
            raise ValueError(
                f"error_rate, rate_limit_rate, drop_rate and slow_rate share one draw per "
                f"request and must add up to at most 1, not {sliced:g}"
            )
        for name in ("retry_after", "slow_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        for name in ("fail_jobs", "max_rows", "max_bytes", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.forbidden, bool):
            raise ValueError(f"forbidden must be true or false, got {self.forbidden!r}")
        refuse = self.refuse_uploads
        if (
            isinstance(refuse, bool)
            or not isinstance(refuse, int)
            or not (refuse == 0 or (400 <= refuse < 500 and refuse not in _NOT_REFUSALS))
        ):
            raise ValueError(
                f"refuse_uploads must be 0 (off) or a 4xx status other than "
                f"{', '.join(map(str, sorted(_NOT_REFUSALS)))}, got {refuse!r}"
            )
        if self.only not in (None, "upload", "status"):
            raise ValueError(f"only must be 'upload', 'status' or null, got {self.only!r}")


def _check_share(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")


@dataclass
class _Job:
    """One bulk job. Its schedule is fixed on acceptance; `status` is set once it is final."""

    job_id: str
    object: str
    rows: list[dict]
    total_rows: int
    filename: str | None
    file_size: int
    accepted: float
    queued_end: float
    processing_start: float
    end: float
    will_fail: bool = False
    foreign: bool = False
    rows_base: int = 0  # rows already done at processing_start (non-zero after a reschedule)
    status: str | None = None
    polls: int = 0
    first_seen_final: float | None = None

    def phase(self, now: float) -> str:
        """The status at `now`, for a job that is not final yet."""
        if now < self.queued_end:
            return "queued"
        if now < self.processing_start:
            return "validating"
        return "processing"

    def rows_done(self, now: float) -> int:
        """Rows processed by `now`, growing linearly through the processing phase."""
        if self.status == "failed":
            return 0
        if self.status == "completed" or now >= self.end:
            return self.total_rows
        if now < self.processing_start:
            return 0
        span = self.end - self.processing_start
        share = (now - self.processing_start) / span if span > 0 else 1.0
        return self.rows_base + int((self.total_rows - self.rows_base) * share)


@dataclass
class _Request:
    """What the account needs from an HTTP request, so the account never touches sockets."""

    method: str
    path: str
    authorization: str | None
    content_type: str
    body: bytes | None  # None when it was larger than allowed and was drained unread


@dataclass
class _Reply:
    """What the handler should send; `drop` means close the connection without answering."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @classmethod
    def of_json(cls, status: int, document: Any) -> _Reply:
        return cls(status, json.dumps(document).encode())

    @classmethod
    def error(cls, status: int, error: str, code: str, message: str) -> _Reply:
        return cls(status, _errors_body(error, code, message))


class _Rejected(Exception):
    """An upload Userpilot would refuse; carries the HTTP answer to give."""

    def __init__(self, status: int, error: str, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = _Reply.error(status, error, code, message)


@dataclass
class _Upload:
    rows: list[dict]
    filename: str | None
    file_size: int
    data: bytes = b""  # the NDJSON file (or JSON body) as received, for `keep_uploads`


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _refuse_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's parser accepts them, Userpilot's would not."""
    raise ValueError(f"{name} is not valid JSON")


def _check_row(obj: str, row: Any, where: str) -> dict:
    """Validate one row as Userpilot does and return it; raise `_Rejected` naming the problem."""

    def invalid(problem: str) -> _Rejected:
        return _Rejected(400, "invalid_row", "VALIDATION_ERROR", f"{where}: {problem}")

    id_field, optional, _ = OBJECTS[obj]
    if not isinstance(row, dict):
        raise invalid(f"a row must be a JSON object, got {_json_type(row)}")
    unknown = sorted(set(row) - {id_field, *optional})
    if unknown:
        allowed = ", ".join((id_field, *optional))
        raise invalid(f"unknown field {unknown[0]!r} (a {obj[:-1]} row has {allowed})")
    if id_field not in row:
        raise invalid(f"{id_field} is missing")
    if not isinstance(row[id_field], str) or not row[id_field]:
        raise invalid(f"{id_field} must be a non-empty string, got {_json_type(row[id_field])}")
    if obj == "users" and row.get("company_id") is not None:
        company = row["company_id"]
        if not isinstance(company, str) or not company:
            raise invalid(f"company_id must be a non-empty string, got {_json_type(company)}")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise invalid(f"metadata must be an object, got {_json_type(metadata)}")
    for key, value in metadata.items():
        if isinstance(value, dict | list):
            raise invalid(
                f"metadata.{key} is {_json_type(value)}; metadata values must be strings, "
                f"numbers, booleans or null"
            )
    return row


def _file_part(content_type: str, body: bytes) -> tuple[str | None, bytes]:
    """Find the form field `file` in a multipart body, with the stdlib email parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n"
    message = email.message_from_bytes(
        head.encode("latin-1", "replace") + body, policy=email.policy.HTTP
    )
    if not message.is_multipart() or message.defects:
        raise _Rejected(
            400,
            "invalid_request",
            "BAD_REQUEST",
            "the multipart/form-data body could not be read (missing boundary or truncated)",
        )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename(), part.get_payload(decode=True) or b""
    raise _Rejected(
        400, "invalid_request", "BAD_REQUEST", "the multipart body has no form field named 'file'"
    )


def _too_large(message: str) -> _Rejected:
    return _Rejected(413, "payload_too_large", "PAYLOAD_TOO_LARGE", message)


def parse_upload(
    obj: str, content_type: str, body: bytes | None, max_rows: int, max_bytes: int
) -> _Upload:
    """Turn a bulk_identify body (JSON or multipart NDJSON) into validated rows.

    Size and row-count limits are checked before any row is validated, as a server that counts
    lines first would: a client splitting on 413 then never sees a 400 for the same batch.
    """
    if body is None:
        raise _too_large(f"the request body is larger than {max_bytes} bytes")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        filename, data = _file_part(content_type, body)
        if len(data) > max_bytes:
            raise _too_large(f"the file has {len(data)} bytes; the limit is {max_bytes}")
        numbered = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
        if len(numbered) > max_rows:
            raise _too_large(f"the file has {len(numbered)} rows; the limit is {max_rows}")
        rows = []
        for number, line in numbered:
            try:
                row = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
            except (UnicodeDecodeError, ValueError) as exc:
                raise _Rejected(
                    400, "invalid_row", "VALIDATION_ERROR", f"line {number}: not valid JSON ({exc})"
                ) from None
            rows.append(_check_row(obj, row, f"line {number}"))
        return _Upload(rows, filename, len(data), data)
    if media_type == "application/json" or media_type.endswith("+json"):
        if len(body) > max_bytes:
            raise _too_large(f"the body has {len(body)} bytes; the limit is {max_bytes}")
        try:
            document = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Rejected(
                400, "invalid_request", "BAD_REQUEST", f"the body is not valid JSON ({exc})"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get(obj), list):
            raise _Rejected(
                400,
                "invalid_request",
                "BAD_REQUEST",
                f'the body must be a JSON object with an array "{obj}"',
            )
        items = document[obj]
        if len(items) > max_rows:
            raise _too_large(f"the body has {len(items)} rows; the limit is {max_rows}")
        rows = [_check_row(obj, item, f"row {n}") for n, item in enumerate(items, 1)]
        return _Upload(rows, None, len(body), body)
    raise _Rejected(
        415,
        "unsupported_media_type",
        "UNSUPPORTED_MEDIA_TYPE",
        "send application/json or multipart/form-data with the NDJSON file in the field 'file'",
    )


def _merge(profiles: dict[str, dict], obj: str, row: dict) -> None:
    """Apply one row as Userpilot does: metadata merges, null removes, a company_id moves."""
    id_field = OBJECTS[obj][0]
    key = row[id_field]
    if obj == "users":
        profile = profiles.setdefault(key, {"user_id": key, "company_id": None, "metadata": {}})
        if row.get("company_id") is not None:
            profile["company_id"] = row["company_id"]
    else:
        profile = profiles.setdefault(key, {"company_id": key, "metadata": {}})
    for name, value in (row.get("metadata") or {}).items():
        if value is None:
            profile["metadata"].pop(name, None)
        else:
            profile["metadata"][name] = value


class _Account:
    """One Userpilot account: profiles, jobs, faults and statistics, guarded by one lock."""

    def __init__(
        self, api_key: str | None, rows_per_minute: float | None, keep_uploads: bool = False
    ) -> None:
        self.api_key = api_key
        self.keep_uploads = keep_uploads
        self.rows_per_minute = _check_rate(rows_per_minute)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.origin = time.monotonic()
        self.wall_origin = time.time()
        self.clear()

    def clear(self) -> None:
        """Forget profiles, jobs, statistics and faults (the caller holds the lock or is alone)."""
        self.profiles: dict[str, dict[str, dict]] = {obj: {} for obj in OBJECTS}
        self.uploads: list[bytes] = []  # accepted uploads' files, only with keep_uploads
        self.jobs: list[_Job] = []
        self.by_id: dict[str, _Job] = {}
        self.faults = Faults()
        self.rng = random.Random(self.faults.seed)
        self.fail_jobs_left = 0
        self.counts = dict.fromkeys(
            (
                "requests",
                "uploads",
                "upload_attempts",
                "status_polls",
                "conflicts_foreign",
                "conflicts_own",
                "rows_received",
            ),
            0,
        )
        self.rejected: dict[str, int] = {}
        self.faults_injected = dict.fromkeys(FAULT_KINDS, 0)
        self.request_log: list[dict] = []
        self.pending_holds: list[tuple[int, float]] = []  # (upload attempt, seconds)

    # --- the clock -------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Make every job whose end has passed final, applying completed jobs' rows in order."""
        pending = [job for job in self.jobs if job.status is None and job.end <= now]
        for job in sorted(pending, key=lambda j: j.end):
            job.status = "failed" if job.will_fail else "completed"
            if job.status == "completed":
                for row in job.rows:
                    _merge(self.profiles[job.object], job.object, row)
            job.rows = []  # applied or discarded: no reason to keep them in memory

    def _running(self, now: float, foreign: bool) -> _Job | None:
        return next((j for j in self.jobs if j.status is None and j.foreign == foreign), None)

    def _schedule(self, rows: int, now: float) -> tuple[float, float, float]:
        """Queued end, processing start and end for a job of `rows` accepted at `now`."""
        rate = self.rows_per_minute
        duration = rows / rate * 60 if rate else 0.0
        phase = min(duration * _PHASE_SHARE, _PHASE_CAP_SECONDS)
        return now + phase, now + 2 * phase, now + duration

    def set_rows_per_minute(self, rows_per_minute: float | None) -> None:
        """Change the rate; a running job finishes its remaining rows at the new rate."""
        rate = _check_rate(rows_per_minute)
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            self.rows_per_minute = rate
            for job in self.jobs:
                if job.status is not None or job.foreign:
                    continue
                done = job.rows_done(now)
                if not rate:
                    job.queued_end = min(job.queued_end, now)
                    job.processing_start = min(job.processing_start, now)
                    job.end = now
                    continue
                start = max(now, job.processing_start)
                job.rows_base = done
                job.processing_start = start
                job.end = start + (job.total_rows - done) / rate * 60

    def hold_foreign_job(self, seconds: float, at_upload: int | None = None) -> None:
        """Pretend another client's job occupies the account for `seconds` from now, or from
        the arrival of the `at_upload`-th upload attempt (which then meets it)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        if at_upload is not None and (
            isinstance(at_upload, bool) or not isinstance(at_upload, int) or at_upload < 1
        ):
            raise ValueError(f"at_upload must be an integer >= 1, got {at_upload!r}")
        with self.lock:
            if at_upload is not None and at_upload > self.counts["upload_attempts"]:
                self.pending_holds.append((at_upload, float(seconds)))
                return
            self._hold(float(seconds))

    def _hold(self, seconds: float) -> None:
        """Start or extend the foreign job (the caller holds the lock)."""
        now = time.monotonic()
        self._advance(now)
        held = self._running(now, foreign=True)
        if held is not None:
            held.end = max(held.end, now + seconds)
            return
        rows = max(1, round(seconds * (self.rows_per_minute or 1800) / 60))
        job = _Job(
            job_id=f"{_JOB_ID_PREFIX}{uuid.uuid4()}",
            object="users",
            rows=[],
            total_rows=rows,
            filename="other-client.ndjson",
            file_size=0,
            accepted=now,
            queued_end=now,
            processing_start=now,
            end=now + seconds,
            foreign=True,
        )
        self.jobs.append(job)
        self.by_id[job.job_id] = job

    # --- views -----------------------------------------------------------------------------

    def _iso(self, moment: float) -> str:
        wall = self.wall_origin + (moment - self.origin)
        stamp = datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")

    def _view(self, job: _Job, now: float) -> dict:
        """The job as the status endpoint shows it at `now`."""
        final = job.status is not None
        view = {
            "job_id": job.job_id,
            "status": job.status or job.phase(now),
            "type": OBJECTS[job.object][2],
            "filename": job.filename,
            "file_size": job.file_size,
            "total_rows": job.total_rows,
            "completed_rows": job.rows_done(now),
            "start_time": self._iso(job.accepted),
            "end_time": self._iso(job.end) if final else None,
            "elapsed_time": round((job.end if final else now) - job.accepted, 3),
            "links": "",
        }
        if job.status == "failed":
            view["links"] = f"/v1/background_jobs/{quote(job.job_id, safe='')}/errors"
            view["error"] = "the job failed while processing its rows (sandbox fail_jobs fault)"
        return view

    def _seen(self, job: _Job, now: float) -> None:
        """Note the first time a client was shown the job's final status."""
        if job.status is not None and job.first_seen_final is None:
            job.first_seen_final = now

    def profiles_copy(self, obj: str) -> dict[str, dict]:
        if obj not in OBJECTS:
            raise ValueError(f"profiles are kept for 'users' and 'companies', not {obj!r}")
        with self.lock:
            self._advance(time.monotonic())
            return copy.deepcopy(self.profiles[obj])

    def job_views(self) -> list[dict]:
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            return [self._view(job, now) for job in reversed(self.jobs)]

    def is_idle(self) -> tuple[bool, float | None]:
        """Whether no job runs, and otherwise when the next one ends by the clock."""
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            ends = [job.end for job in self.jobs if job.status is None]
        return (not ends, min(ends) if ends else None)

    def set_faults(self, faults: Faults) -> None:
        with self.lock:
            self._advance(time.monotonic())
            self.faults = faults
            self.rng = random.Random(faults.seed)
            self.fail_jobs_left = faults.fail_jobs

    def reset(self) -> None:
        with self.lock:
            self.clear()

    def stats(self) -> dict:
        """Counters plus per-job timings, relative to the sandbox's start in monotonic seconds."""
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            own = [job for job in self.jobs if not job.foreign]
            finished = [job for job in own if job.status is not None]

            def rel(moment: float | None) -> float | None:
                return None if moment is None else round(moment - self.origin, 4)

            timings = [
                {
                    "job_id": job.job_id,
                    "rows": job.total_rows,
                    "status": job.status or job.phase(now),
                    "accepted_at": rel(job.accepted),
                    "completed_at": rel(job.end) if job.status else None,
                    "first_seen_final_at": rel(job.first_seen_final),
                    "polls": job.polls,
                }
                for job in own
            ]
            busy_share = None
            if finished:
                span = max(job.end for job in finished) - min(job.accepted for job in finished)
                busy = sum(job.end - job.accepted for job in finished)
                busy_share = round(min(busy / span, 1.0), 4) if span > 0 else None
            delays = [
                job.first_seen_final - job.end
                for job in finished
                if job.first_seen_final is not None
            ]
            return {
                **self.counts,
                "jobs": len(own),
                "rows_per_minute": self.rows_per_minute,
                "rejected": dict(self.rejected),
                "faults_injected": dict(self.faults_injected),
                "job_timings": timings,
                "busy_share": busy_share,
                "notice_delay_avg": round(sum(delays) / len(delays), 4) if delays else None,
                "notice_delay_max": round(max(delays), 4) if delays else None,
                "polls_per_job_avg": (
                    round(sum(job.polls for job in finished) / len(finished), 3)
                    if finished
                    else None
                ),
            }

    # --- the /v1 API -----------------------------------------------------------------------

    def _roll_fault(self, kind: str) -> str | None:
        """Pick at most one injected failure for this call, from the seeded generator."""
        faults = self.faults
        if faults.only in (None, kind):
            draw = self.rng.random()
            edge = 0.0
            for name, share in (
                ("drop", faults.drop_rate),
                ("error", faults.error_rate),
                ("rate_limit", faults.rate_limit_rate),
                ("slow", faults.slow_rate),
            ):
                edge += share
                if draw < edge:
                    return name
        if kind == "status" and self.rng.random() < faults.status_error_rate:
            return "status_error"
        return None

    def _authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        return scheme.lower() == "token" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def serve_v1(self, request: _Request) -> _Reply:
        """Answer one `/v1` call: faults first, then the key, then the endpoint itself.

        Faults come before authentication because in production they happen in front of the
        API (proxies, rate limiters, the network), where no key has been checked yet.
        """
        route = _route_v1(request.method, request.path)
        kind = "upload" if route[0] == "upload" else "status"
        with self.lock:
            arrived = time.monotonic()
            self._advance(arrived)
            self.counts["requests"] += 1
            if route[0] == "upload":
                self.counts["upload_attempts"] += 1
                for hold in [
                    h for h in self.pending_holds if h[0] <= self.counts["upload_attempts"]
                ]:
                    self.pending_holds.remove(hold)
                    self._hold(hold[1])
            elif route[0] in ("status", "list"):
                self.counts["status_polls"] += 1
            faults = self.faults
            fault = self._roll_fault(kind)
            if fault:
                self.faults_injected[fault] += 1
            refusal = _fault_reply(fault, faults, self.rng)
            if refusal is None and faults.forbidden:
                self.faults_injected["forbidden"] += 1
                refusal = _Reply.error(403, "forbidden", "FORBIDDEN", "This API key is not allowed")
            if refusal is None and not self._authorized(request.authorization):
                refusal = _Reply.error(401, "unauthorized", "UNAUTHORIZED", "Invalid API key")
            if refusal is None and faults.refuse_uploads and route[0] == "upload":
                self.faults_injected["refuse"] += 1
                refusal = _Reply.error(
                    faults.refuse_uploads,
                    "invalid_request",
                    "REQUEST_REFUSED",
                    "The sandbox refuses every upload (refuse_uploads fault).",
                )
            if refusal is not None:
                self._log_request(arrived, request, fault, refusal)
        if refusal is not None:
            return refusal

        if fault == "slow" and route[0] != "upload":
            self.stopping.wait(faults.slow_seconds)
        reply = self._endpoint(route, request, faults)
        with self.lock:
            self._log_request(arrived, request, fault, reply)
        if fault == "slow" and route[0] == "upload":
            # The nasty realistic case: the job exists, but the client times out waiting.
            self.stopping.wait(faults.slow_seconds)
        return reply

    def _log_request(
        self, arrived: float, request: _Request, fault: str | None, reply: _Reply
    ) -> None:
        """Remember one /v1 call (the caller holds the lock): when, what, the answer, the fault."""
        if len(self.request_log) >= _REQUEST_LOG_LIMIT:
            del self.request_log[: _REQUEST_LOG_LIMIT // 10]
        self.request_log.append(
            {
                "at": round(arrived - self.origin, 4),
                "method": request.method,
                "path": request.path,
                "status": None if reply.drop else reply.status,
                "fault": fault,
            }
        )

    def requests_copy(self) -> list[dict]:
        with self.lock:
            return [dict(entry) for entry in self.request_log]

    def _endpoint(self, route: tuple[str, str], request: _Request, faults: Faults) -> _Reply:
        name, argument = route
        if name == "upload":
            return self._upload(argument, request, faults)
        if name in ("status", "errors"):
            return self._job_status(argument, errors_only=name == "errors")
        if name == "list":
            with self.lock:
                now = time.monotonic()
                self._advance(now)
                for job in self.jobs:
                    self._seen(job, now)
                return _Reply.of_json(200, [self._view(job, now) for job in reversed(self.jobs)])
        if name == "method":
            return _Reply.error(405, "method_not_allowed", "METHOD_NOT_ALLOWED", argument)
        return _Reply.error(404, "not_found", "NOT_FOUND", f"No route for {request.path}")

    def _job_status(self, job_id: str, errors_only: bool) -> _Reply:
        """One job's status (a poll), or the error report that a failed job's `links` names."""
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            job = self.by_id.get(job_id)
            if job is None:
                return _Reply.error(404, "not_found", "NOT_FOUND", f"No background job {job_id!r}")
            view = self._view(job, now)
            if errors_only:
                errors = [view["error"]] if "error" in view else []
                return _Reply.of_json(200, {"job_id": job.job_id, "errors": errors})
            job.polls += 1
            self._seen(job, now)
            return _Reply.of_json(200, view)

    def _upload(self, obj: str, request: _Request, faults: Faults) -> _Reply:
        """Validate outside the lock (it may take a while), then accept under it."""
        try:
            upload = parse_upload(
                obj, request.content_type, request.body, faults.max_rows, faults.max_bytes
            )
        except _Rejected as rejected:
            with self.lock:
                key = str(rejected.reply.status)
                self.rejected[key] = self.rejected.get(key, 0) + 1
            return rejected.reply
        if not upload.rows:
            with self.lock:
                self.rejected["400"] = self.rejected.get("400", 0) + 1
            return _Reply.error(400, "invalid_request", "BAD_REQUEST", "the upload holds no rows")
        with self.lock:
            now = time.monotonic()
            self._advance(now)
            if self._running(now, foreign=True) or self._running(now, foreign=False):
                foreign = self._running(now, foreign=True) is not None
                self.counts["conflicts_foreign" if foreign else "conflicts_own"] += 1
                return _Reply.error(
                    409, "conflict", "JOB_IN_PROGRESS", "Another bulk job is in progress"
                )
            will_fail = self.fail_jobs_left > 0
            if will_fail:
                self.fail_jobs_left -= 1
                self.faults_injected["fail_job"] += 1
            queued_end, processing_start, end = self._schedule(len(upload.rows), now)
            job = _Job(
                job_id=f"{_JOB_ID_PREFIX}{uuid.uuid4()}",
                object=obj,
                rows=upload.rows,
                total_rows=len(upload.rows),
                filename=upload.filename,
                file_size=upload.file_size,
                accepted=now,
                queued_end=queued_end,
                processing_start=processing_start,
                end=end,
                will_fail=will_fail,
            )
            self.jobs.append(job)
            self.by_id[job.job_id] = job
            self.counts["uploads"] += 1
            self.counts["rows_received"] += job.total_rows
            if self.keep_uploads:
                self.uploads.append(upload.data)
            # The submit answer is the job as accepted: always queued, even for instant jobs.
            view = self._view(job, now) | {"status": "queued", "completed_rows": 0}
            view["submitted_at"] = view["start_time"]
            return _Reply.of_json(202, view)

    def body_limit(self) -> int:
        """Bytes of a /v1 body worth keeping in memory; anything larger is drained and refused."""
        with self.lock:
            return self.faults.max_bytes + _MULTIPART_SLACK_BYTES


def _check_rate(rows_per_minute: float | None) -> float:
    rate = float(rows_per_minute or 0.0)
    if rate < 0:
        raise ValueError(f"rows_per_minute must be >= 0, got {rows_per_minute!r}")
    return rate


def _fault_reply(fault: str | None, faults: Faults, rng: random.Random) -> _Reply | None:
    """The answer an injected failure gives instead of the endpoint's, if it gives one."""
    if fault == "drop":
        return _Reply(drop=True)
    if fault == "error":
        return _server_error(rng.choice((500, 502, 503)))
    if fault == "status_error":
        return _server_error(500)
    if fault == "rate_limit":
        reply = _Reply.error(429, "rate_limited", "TOO_MANY_REQUESTS", "Too many requests")
        reply.headers["Retry-After"] = _retry_after_header(faults.retry_after)
        return reply
    return None


def _server_error(status: int) -> _Reply:
    """A 500 from the API itself is JSON; 502/503 come from a proxy in front of it, as HTML."""
    if status == 500:
        return _Reply.error(500, "internal_error", "INTERNAL_SERVER_ERROR", "Internal error")
    text = {502: "Bad Gateway", 503: "Service Unavailable"}[status]
    body = f"<html><body><h1>{status} {text}</h1></body></html>".encode()
    return _Reply(status, body, "text/html")


def _route_v1(method: str, path: str) -> tuple[str, str]:
    """Map a /v1 call to (endpoint, argument); the job id arrives percent-encoded."""
    parts = path.rstrip("/").split("/")[2:]  # drop "" and "v1"
    if len(parts) == 2 and parts[0] in OBJECTS and parts[1] == "bulk_identify":
        return ("upload", parts[0]) if method == "POST" else ("method", f"{path} takes POST")
    if parts and parts[0] == "background_jobs":
        if method != "GET":
            return ("method", f"{path} takes GET")
        if len(parts) == 1:
            return ("list", "")
        if len(parts) == 2:
            return ("status", unquote(parts[1]))
        if len(parts) == 3 and parts[2] == "errors":
            return ("errors", unquote(parts[1]))
    return ("unknown", "")


def _serve_admin(sandbox: Sandbox, request: _Request) -> _Reply:
    """The `/_sandbox/` endpoints: no auth and no faults, so tests can always see the truth."""
    path = request.path.rstrip("/")
    routes_get = {
        "/_sandbox/profiles/users": lambda: sandbox.profiles("users"),
        "/_sandbox/profiles/companies": lambda: sandbox.profiles("companies"),
        "/_sandbox/stats": sandbox.stats,
        "/_sandbox/jobs": sandbox.jobs,
        "/_sandbox/requests": sandbox.request_log,
    }
    if request.method == "GET" and path in routes_get:
        return _Reply.of_json(200, routes_get[path]())
    if request.method != "POST" or path not in (
        "/_sandbox/faults",
        "/_sandbox/reset",
        "/_sandbox/hold",
        "/_sandbox/rows_per_minute",
    ):
        return _Reply.error(
            404, "not_found", "NOT_FOUND", f"No sandbox route {request.method} {path}"
        )
    try:
        document = json.loads(request.body or b"{}") if request.body is not None else None
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")
        if path == "/_sandbox/faults":
            sandbox.set_faults(**document)
        elif path == "/_sandbox/reset":
            sandbox.reset()
        elif path == "/_sandbox/hold":
            sandbox.hold_foreign_job(float(document["seconds"]), document.get("at_upload"))
        else:
            sandbox.set_rows_per_minute(document["rows_per_minute"])
    except (ValueError, TypeError, KeyError) as exc:
        return _Reply.error(400, "invalid_request", "BAD_REQUEST", f"{path}: {exc}")
    return _Reply.of_json(200, {"ok": True})


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer carries Content-Length so connections are reused."""

    protocol_version = "HTTP/1.1"
    server_version = "userpilot-sandbox"
    sys_version = ""
    timeout = _IDLE_CONNECTION_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and
        # the client's delayed ACK add about 40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        is_api = path == "/v1" or path.startswith("/v1/")
        account = self.server.account
        try:
            body = self._read_body(account.body_limit() if is_api else _ADMIN_BODY_LIMIT)
        except (ValueError, OSError):
            self.close_connection = True
            self._send(_Reply.error(400, "invalid_request", "BAD_REQUEST", "unreadable body"))
            return
        request = _Request(
            method=self.command,
            path=path,
            authorization=self.headers.get("Authorization"),
            content_type=self.headers.get("Content-Type", ""),
            body=body,
        )
        try:
            if is_api:
                reply = account.serve_v1(request)
            elif path.startswith("/_sandbox/"):
                reply = _serve_admin(self.server.sandbox, request)
            else:
                reply = _Reply.error(404, "not_found", "NOT_FOUND", f"No route for {path}")
        except Exception:  # a sandbox bug must answer 500, not leave the client hanging
            log.exception("userpilot-sandbox failed on %s %s", self.command, path)
            reply = _server_error(500)
        self._send(reply)

    def _read_body(self, limit: int) -> bytes | None:
        """Read the whole body (keep-alive needs it consumed); drop it unstored past `limit`."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length <= limit:
            data = self.rfile.read(length)
            if len(data) < length:
                raise ValueError("body shorter than Content-Length")
            return data
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                raise ValueError("body shorter than Content-Length")
            remaining -= len(chunk)
        return None

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing the sandbox needs
                break
            chunk = self.rfile.read(size)
            self.rfile.readline(16)
            total += size
            if total <= limit:
                parts.append(chunk)
            else:
                parts = []
        return b"".join(parts) if total <= limit else None

    def _send(self, reply: _Reply) -> None:
        if reply.drop:
            # Request read, nothing answered: the client sees the connection close under it.
            self.close_connection = True
            log.info('%s "%s" dropped on purpose', self.client_address[0], self.requestline)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (for example a read timeout)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One INFO line per request: method, path and status only, never any header."""
        log.info('%s "%s" %s', self.client_address[0], self.requestline, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    """A threading server that knows its open connections, so `stop` can close idle ones."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.account = sandbox._account  # noqa: SLF001 - the server is the facade's own part
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup the sandbox neither needs nor
        # should make; bind the plain TCP way and record the address ourselves.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are routine here (timeouts are tested on purpose).
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Sandbox:
    """A Userpilot-compatible bulk API on loopback, with faults and inspection for tests.

    `rows_per_minute=0` (or None) makes jobs complete at once: they are final at the next
    request or call at the latest. Otherwise a job of N rows takes N / rows_per_minute minutes,
    of which the first 5% (at most 0.5 s) is `queued` and the next 5% `validating`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "sandbox-key",
        rows_per_minute: float | None = 0.0,
        keep_uploads: bool = False,
    ) -> None:
        require_loopback(host)
        self.host = host
        self.port = port
        self._account = _Account(api_key, rows_per_minute, keep_uploads)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        """Listen and serve in a daemon thread; port 0 picks a free port (see `url`)."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        server_class = _Server6 if ":" in self.host else _Server
        self._account.stopping.clear()
        self._account.origin = time.monotonic()
        self._account.wall_origin = time.time()
        self._server = server_class((self.host.strip("[]"), self.port), self)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop
            name=f"userpilot-sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        """Base URL to use as the target's `api_url`."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving, cut injected slow answers short and close kept-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._account.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def profiles(self, obj: str) -> dict[str, dict]:
        """Stored profiles of 'users' or 'companies', by id (deep copies, safe to modify)."""
        return self._account.profiles_copy(obj)

    def uploads(self) -> list[bytes]:
        """The file of every accepted upload, byte for byte, oldest first (the JSON body for
        JSON uploads). Needs `Sandbox(keep_uploads=True)`: uploads are not kept by default."""
        if not self._account.keep_uploads:
            raise RuntimeError("uploads are only kept with Sandbox(keep_uploads=True)")
        with self._account.lock:
            return list(self._account.uploads)

    def set_faults(self, **faults: Any) -> None:
        """Replace the fault set (see `Faults`); with no arguments, clear it."""
        self._account.set_faults(Faults(**faults))

    def set_rows_per_minute(self, rows_per_minute: float | None) -> None:
        """Change the processing rate (0 or None: instant); a running job adopts it too."""
        self._account.set_rows_per_minute(rows_per_minute)

    def hold_foreign_job(self, seconds: float, at_upload: int | None = None) -> None:
        """Let another client's job occupy the account for `seconds`: uploads get 409.

        With `at_upload=n` the hold starts when the n-th upload attempt arrives, so a test can
        put it in the middle of a run whatever the client's start-up time.
        """
        self._account.hold_foreign_job(seconds, at_upload)

    def reset(self) -> None:
        """Forget profiles, jobs, statistics, faults and any foreign hold."""
        self._account.reset()

    def stats(self) -> dict:
        """Counters and per-job timings, so tests and benchmarks can judge a client.

        Counters: `requests` (all /v1 calls), `upload_attempts`, `uploads` (accepted),
        `status_polls`, `conflicts_foreign` / `conflicts_own` (409s while another client's or one
        of our own jobs ran; a correct client causes no own conflicts), `jobs`, `rows_received`,
        `rejected` (per HTTP status) and `faults_injected` (per kind). `job_timings` lists per job
        `accepted_at`, `completed_at` (by the clock), `first_seen_final_at` (first status call
        that showed it final) and `polls`, in seconds since start. Derived: `busy_share`,
        `notice_delay_avg` / `notice_delay_max` and `polls_per_job_avg`; None until a job ended.
        """
        return self._account.stats()

    def jobs(self) -> list[dict]:
        """Every job, newest first, shaped as `GET /v1/background_jobs` shows them."""
        return self._account.job_views()

    def request_log(self) -> list[dict]:
        """Every `/v1` call, oldest first: `at` (seconds since start, on arrival), `method`,
        `path`, `status` (None for a dropped connection) and the injected `fault`, if any.

        Lets a test judge a client's timing, e.g. that a retry after a 429 waited Retry-After.
        """
        return self._account.requests_copy()

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until no job runs (ours or a foreign hold); False if `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            idle, next_end = self._account.is_idle()
            if idle:
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            # Sleep toward the next job's end, in short steps: the rate may change meanwhile.
            target = min(next_end if next_end is not None else now, deadline, now + 0.05)
            time.sleep(max(target - now, 0.001))
