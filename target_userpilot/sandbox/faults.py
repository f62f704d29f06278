"""The failures the sandbox can inject, and the seeded dice that decide each request's fate.

Every fault is off by default. A test sets a `Faults` (replacing the previous one), and the
same seed gives the same sequence of failures for the same sequence of requests.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from target_userpilot.sandbox.wire import Reply, server_error

#: The endpoint families a fault set can be limited to (`Faults.endpoints`).
ENDPOINTS = ("bulk", "imports", "status", "list", "delete", "track")
FAULT_KINDS = (
    "drop",
    "error",
    "rate_limit",
    "slow",
    "status_error",
    "forbidden",
    "fail_job",
    "refuse",
    "scripted",
)

# Statuses with a meaning of their own (key refused, conflict, too large, rate limit): each has
# its own fault or rule, so `refuse_uploads` leaves them out.
_NOT_REFUSALS = frozenset({401, 403, 409, 413, 429})


def _check_share(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class Faults:
    """The failures the sandbox injects into `/v1` calls; every one is off by default.

    The error, rate-limit, drop and slow shares are slices of one random draw per request, so
    their shares add up exactly; `status_error_rate` is drawn separately, for status calls only.
    `refuse_uploads` (a 4xx status such as 400 or 422) answers every authorised upload with that
    status and Userpilot's error envelope, as Userpilot does for a request it will not take.

    Which calls the random faults and `forbidden` apply to: `endpoints`, a set of endpoint
    families ("bulk", "status", "list", "delete", "track"; None: every /v1 call), and the older
    `only` ("upload": bulk uploads, "status": job status and list calls; `forbidden` ignores
    it), both when both are set. A slow answer comes after the call's effect for bulk, delete
    and track (the client times out although Userpilot took the request), before it for the
    others. `fail_jobs`, `max_rows` and `refuse_uploads` concern bulk uploads; `max_bytes`
    limits bulk files and the JSON body of every call (413 above it).
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
    endpoints: frozenset[str] | None = None

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
        if self.endpoints is not None:
            # Lists arrive from JSON (the admin endpoint): keep a hashable, order-free set.
            object.__setattr__(self, "endpoints", _endpoint_set(self.endpoints))

    def selects(self, endpoint: str) -> bool:
        """Whether `endpoints` lets faults hit a call of this endpoint family."""
        return self.endpoints is None or endpoint in self.endpoints


def _endpoint_set(endpoints: Iterable[str]) -> frozenset[str]:
    if isinstance(endpoints, str) or not isinstance(endpoints, Iterable):
        raise ValueError(
            f"endpoints must be a list of endpoint families, got {endpoints!r}; "
            f"choose from {', '.join(ENDPOINTS)}"
        )
    chosen = frozenset(endpoints)
    unknown = sorted(str(name) for name in chosen - set(ENDPOINTS))
    if unknown:
        raise ValueError(
            f"endpoints has unknown families {', '.join(unknown)}; choose from "
            f"{', '.join(ENDPOINTS)}"
        )
    return chosen


def scripted_reply(status: int, retry_after: float | None) -> Reply:
    """The answer `Sandbox.answer_next` asks for, shaped as Userpilot (or a proxy) sends it.

    A 429 always says Retry-After (1 s unless told); a 5xx only when `retry_after` is given
    (a 503 so says the request was put off, not begun)."""
    if status >= 500:
        reply = server_error(status)
        return reply if retry_after is None else reply.retry_after(retry_after)
    if status == 429:
        reply = Reply.error(429, "rate_limited", "TOO_MANY_REQUESTS", "Too many requests")
        return reply.retry_after(1.0 if retry_after is None else retry_after)
    known = {
        401: ("unauthorized", "UNAUTHORIZED", "Invalid API key"),
        403: ("forbidden", "FORBIDDEN", "This API key is not allowed"),
        404: ("not_found", "NOT_FOUND", "Not found"),
        409: ("conflict", "JOB_IN_PROGRESS", "Another bulk job is in progress"),
        413: ("payload_too_large", "PAYLOAD_TOO_LARGE", "The request is too large"),
    }
    error, code, message = known.get(
        status,
        (
            "invalid_request",
            "REQUEST_REFUSED",
            f"The sandbox answers this call with HTTP {status} (answer_next).",
        ),
    )
    return Reply.error(status, error, code, message)


def check_script(endpoint: str, status: int, times: int, retry_after: float | None) -> None:
    """Refuse a scripted answer that makes no sense, before it is queued."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400 to 599), got {status!r}")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an integer >= 1, got {times!r}")
    if retry_after is None:
        return
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0:
        raise ValueError(f"retry_after must be a number of seconds >= 0, got {retry_after!r}")


class FaultDice:
    """The current `Faults` and the seeded generator that applies them, request by request,
    plus the answers scripted for the next calls of an endpoint."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.use(faults or Faults())
        self.scripts: dict[str, deque[tuple[int, float | None]]] = {
            name: deque() for name in ENDPOINTS
        }

    def script(self, endpoint: str, status: int, times: int, retry_after: float | None) -> None:
        """Answer the next `times` calls of `endpoint` with `status`, after those already
        scripted; a new fault set leaves them in place."""
        check_script(endpoint, status, times, retry_after)
        after = None if retry_after is None else float(retry_after)
        self.scripts[endpoint].extend([(status, after)] * times)

    def scripted(self, endpoint: str) -> Reply | None:
        """The scripted answer for this call, if one is waiting (it is used up)."""
        queue = self.scripts.get(endpoint)
        if not queue:
            return None
        status, retry_after = queue.popleft()
        return scripted_reply(status, retry_after)

    def use(self, faults: Faults) -> None:
        """Replace the fault set and restart its random sequence from its seed."""
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.fail_jobs_left = faults.fail_jobs

    def roll(self, endpoint: str, kind: str) -> str | None:
        """Pick at most one injected failure for a call of this endpoint family and kind."""
        faults = self.faults
        if not faults.selects(endpoint):
            return None
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

    def take_failed_job(self) -> bool:
        """Whether the job being accepted is one of the `fail_jobs` that must fail."""
        if self.fail_jobs_left > 0:
            self.fail_jobs_left -= 1
            return True
        return False

    def reply_for(self, fault: str | None) -> Reply | None:
        """The answer an injected failure gives instead of the endpoint's, if it gives one."""
        if fault == "drop":
            return Reply(drop=True)
        if fault == "error":
            return server_error(self.rng.choice((500, 502, 503)))
        if fault == "status_error":
            return server_error(500)
        if fault == "rate_limit":
            reply = Reply.error(429, "rate_limited", "TOO_MANY_REQUESTS", "Too many requests")
            return reply.retry_after(self.faults.retry_after)
        return None
