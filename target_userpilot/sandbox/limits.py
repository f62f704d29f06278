"""Userpilot's request rate limits, as the sandbox enforces them: one deletion request per
interval, and a number of track requests per sliding minute. Each answers how long a refused
client must wait, for the 429's Retry-After.

Plain data without a lock of its own: the account calls them under its lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


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


class RealTimeRules:
    """Userpilot's rules for the deletion and track endpoints: one deletion request per
    `delete_interval`, at most `max_delete_ids` ids each, `events_per_minute` track requests,
    and whether an event's user must have a profile."""

    def __init__(
        self,
        delete_interval: float | None = 2.0,
        max_delete_ids: int | None = None,
        events_per_minute: float | None = 600,
        track_requires_user: bool = True,
    ) -> None:
        self.delete_pace = Interval(0.0)
        self.event_pace = PerMinute(0.0)
        self.max_delete_ids: int | None = None
        self.track_requires_user = True
        self.change(
            delete_interval=delete_interval,
            max_delete_ids=max_delete_ids,
            events_per_minute=events_per_minute,
            track_requires_user=track_requires_user,
        )

    def settings(self) -> dict[str, Any]:
        """The current settings, by the names `change` takes."""
        return {
            "delete_interval": self.delete_pace.seconds,
            "max_delete_ids": self.max_delete_ids,
            "events_per_minute": self.event_pace.limit,
            "track_requires_user": self.track_requires_user,
        }

    def change(self, **settings: Any) -> None:
        """Change the named settings, the others staying; requests already admitted count
        against the new limits. Every value is checked before any changes."""
        unknown = sorted(set(settings) - set(self.settings()))
        if unknown:
            raise TypeError(
                f"unknown limit {unknown[0]!r}; the limits are {', '.join(self.settings())}"
            )
        wanted = self.settings() | settings
        interval = check_seconds("delete_interval", wanted["delete_interval"])
        per_minute = check_per_minute("events_per_minute", wanted["events_per_minute"])
        max_ids = wanted["max_delete_ids"]
        if max_ids is not None and (
            isinstance(max_ids, bool) or not isinstance(max_ids, int) or max_ids < 1
        ):
            raise ValueError(f"max_delete_ids must be an integer >= 1 or null, got {max_ids!r}")
        requires_user = wanted["track_requires_user"]
        if not isinstance(requires_user, bool):
            raise ValueError(f"track_requires_user must be true or false, got {requires_user!r}")
        self.delete_pace.seconds = interval
        self.event_pace.limit = per_minute
        self.max_delete_ids = max_ids
        self.track_requires_user = requires_user

    def clear(self) -> None:
        """Forget the requests admitted so far (the settings stay)."""
        self.delete_pace.clear()
        self.event_pace.clear()
