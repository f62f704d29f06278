"""Userpilot's request rate limits, as the sandbox enforces them: one deletion request per
interval, and a number of track requests per sliding minute. Each answers how long a refused
client must wait, for the 429's Retry-After.

Plain data without a lock of its own: the account calls them under its lock.
"""

from __future__ import annotations

import math
from collections import deque


def check_seconds(name: str, value: float | None) -> float:
    """A duration in seconds >= 0 (None counts as 0: no limit)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def check_per_minute(name: str, value: float | None) -> float:
    """A rate per minute >= 0 (None or 0: unlimited)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 (0 or null: unlimited), got {value!r}")
    return float(value)


def retry_after_seconds(wait: float) -> int:
    """Whole seconds, rounded up and at least 1, as HTTP's Retry-After sends them: a client
    that waits what it is told is then always let through."""
    return max(1, math.ceil(wait - 1e-9))


class Interval:
    """At most one request per `seconds` (0: no limit), measured between admitted requests.

    A refused request does not move the window: a client that waits Retry-After gets in.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.clear()

    def clear(self) -> None:
        """Forget the last admitted request."""
        self.last: float | None = None

    def admit(self, now: float) -> float | None:
        """Admit a request at `now` (None), or say how many seconds it must wait."""
        if self.seconds and self.last is not None and now - self.last < self.seconds:
            return self.last + self.seconds - now
        self.last = now
        return None


class PerMinute:
    """At most `limit` requests in any 60 seconds (0: no limit), over a sliding window."""

    WINDOW = 60.0

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.clear()

    def clear(self) -> None:
        """Forget every admitted request."""
        self.times: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Admit a request at `now` (None), or say how many seconds it must wait."""
        if not self.limit:
            return None
        while self.times and self.times[0] <= now - self.WINDOW:
            self.times.popleft()
        if len(self.times) >= self.limit:
            # The oldest request in the window must leave it before another fits.
            index = math.floor(len(self.times) - self.limit)
            return self.times[index] + self.WINDOW - now
        self.times.append(now)
        return None
