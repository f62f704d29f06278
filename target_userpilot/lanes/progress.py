"""What the events lane tells the operator: how long its events take, and how far it has come.

At Userpilot's 600 a minute, 100,000 events take close to three hours. So when the first event
goes, one INFO line says how long the events received so far take at this pace; then at most
every 30 seconds, how many are sent, the rate reached and the time left; at the end of input,
what is left. The lane hands in its counts; this keeps only the times.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from target_userpilot.lanes.pace import EventPace
from target_userpilot.summary import count, duration

logger = logging.getLogger("target_userpilot.events")

#: How often, at most, the lane reports its progress at INFO.
PROGRESS_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class EventCounts:
    """The events lane's counts at one moment, taken under its lock."""

    received: int
    sent: int
    skipped: int
    refused: int
    #: Sent, skipped, refused or unconfirmed.
    done: int

    @property
    def left(self) -> int:
        """Events received and not finished (waiting, set aside or in flight)."""
        return self.received - self.done


class EventProgress:
    """The events lane's INFO lines: a first estimate, then progress at most every ``every`` s."""

    def __init__(self, pace: EventPace, every: float = PROGRESS_EVERY_SECONDS) -> None:
        self._pace = pace
        self._every = every
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last = 0.0
        self._sent_at_last = 0

    @property
    def started(self) -> bool:
        """True once the first event went."""
        return self._started is not None

    def start(self, counts: EventCounts) -> None:
        """The first event is about to go: say how long the events received so far take."""
        with self._lock:
            if self._started is not None:
                return
            self._started = self._last = self._pace.clock.now()
        rate = self._pace.per_minute()
        if rate is None:
            logger.info(
                "Dry run: writing %s (and any that follow).",
                count(counts.left, "event request body", "event request bodies"),
            )
            return
        logger.info(
            "Sending events to Userpilot, one request each, at up to %.0f a minute "
            "(events_per_minute): the %s received so far %s about %s at this pace.",
            rate,
            count(counts.left, "event"),
            "takes" if counts.left == 1 else "take",
            duration(counts.left / rate * 60),
        )

    def due(self, *, final: bool = False) -> bool:
        """Whether a progress line is due: once the first event went, at most every ``every``
        seconds, and at the end."""
        started = self._started is not None
        return started and (final or self._pace.clock.now() - self._last >= self._every)

    def report(self, counts: EventCounts) -> None:
        """One progress line: sent of received, the rate reached lately, the time left."""
        now = self._pace.clock.now()
        with self._lock:
            window = now - self._last
            recent = counts.sent - self._sent_at_last
            self._last, self._sent_at_last = now, counts.sent
            elapsed = now - (self._started or now)
        if window > 0 and recent:
            observed = recent / window * 60
        else:
            observed = counts.sent / elapsed * 60 if elapsed > 0 else 0.0
        rate = observed if observed > 0 else self._pace.per_minute() or 0.0
        left = counts.left
        eta = f", about {duration(left / rate * 60)} left" if rate > 0 and left else ""
        logger.info(
            "Events: %d of %d received sent (%d skipped as already sent, %d refused), "
            "%.0f a minute%s.",
            counts.sent,
            counts.received,
            counts.skipped,
            counts.refused,
            rate,
            eta,
        )

    def end_of_input(self, counts: EventCounts) -> None:
        """All input is read: how many events are left, and how long they take at this pace."""
        rate = self._pace.per_minute()
        if rate is None or counts.left < 1 or self._started is None:
            return  # not started: the first line will say it
        logger.info(
            "All input read: %s left to send, about %s at %.0f a minute.",
            count(counts.left, "event"),
            duration(counts.left / rate * 60),
            rate,
        )
