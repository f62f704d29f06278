"""Every lane's pace, in one place: when the next request may go, and what a job will take.

- :class:`JobPace`: what the job lane learns of Userpilot's processing rate. Userpilot's pages
  give 1,800 and 1,200 rows a minute; the real pace differs by account and by day. From the jobs
  completed in this run, a least-squares fit of ``seconds = fixed + rows / rate`` predicts when
  the next job will end, so its first status poll lands just after that moment.
  ``rows_per_minute`` is only the guess used until the first job has completed.
- :class:`DeletionPace`: one deletion request every ``interval`` seconds (Userpilot allows one
  every 2 s), measured from the answer to the previous one.
- :class:`EventPace`: track requests spread evenly under ``events_per_minute``, slower after a
  429. It alone decides when an event refused with 429 goes again (the client hands it to the
  retry policy), so one 429 never counts twice: not a pause in the sender on top of the pace's.

Each takes its :class:`~target_userpilot.clock.Clock` (the real one by default) and its numbers
as parameters, and its lane measures and waits on that same clock (a pace learned in simulated
seconds is followed in simulated seconds), so a test runs a lane at any pace, in simulated time.
The paces only say *when*; the lanes do the waiting, on the clock and their stop event, so a
stop ends any wait for new work (the job lane waits for its polls of the job in flight on its
abandon event: a second signal ends those).

What a job took is learned from our own clock first (:func:`job_seconds`): the polls prove
bounds, and Userpilot's own figures (an undocumented ``elapsed_time``, its timestamps) are used
only where they fall inside them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from target_userpilot.clock import REAL_CLOCK, Clock

logger = logging.getLogger("target_userpilot.events")

#: Jobs the fit remembers: recent ones say most about the pace now.
_REMEMBERED = 20

#: Userpilot's limit: one deletion request every 2 seconds per key.
DELETE_INTERVAL_SECONDS = 2.0

#: Share of ``events_per_minute`` actually used: the limit is counted over a sliding minute on
#: arrival, so requests spaced exactly at the limit trip it whenever the network delays one a
#: little less than the one a minute before.
HEADROOM = 0.98
#: A 429 multiplies the pace by this; the pace never falls below ``MIN_SHARE`` of the setting.
SLOW_DOWN = 0.8
MIN_SHARE = 0.25
#: Each accepted event gives back this share of the configured pace after a slow-down.
RECOVERY_SHARE = 0.01
#: Pause after a 429 that gave no Retry-After.
DEFAULT_RETRY_AFTER = 1.0
#: How often, at most, a slowed event pace is reported at WARNING.
WARN_EVERY_SECONDS = 30.0


class JobPace:
    """Predicts a job's duration from the jobs of this run that completed before it.

    The job lane measures every job, and waits for its polls, on :attr:`clock`.
    """

    def __init__(self, rows_per_minute: float, clock: Clock = REAL_CLOCK) -> None:
        self.clock = clock
        self._guess = max(float(rows_per_minute), 1.0) / 60.0
        self._jobs: deque[tuple[int, float]] = deque(maxlen=_REMEMBERED)
        self.rate = self._guess
        self.fixed = 0.0
        #: True once a job's duration was pinned down by our own polls (see ``JobWindow.tight``):
        #: until then every job is followed as the first one is, by its own progress.
        self.proven = False

    @property
    def observed(self) -> bool:
        """True once a completed job of this run has taught the pace."""
        return bool(self._jobs)

    def predict(self, rows: int) -> float:
        """Seconds from upload to completion expected for a job of ``rows`` rows."""
        return self.fixed + rows / self.rate

    def learn(self, rows: int, seconds: float, *, proven: bool = True) -> None:
        """A job of ``rows`` rows took ``seconds`` from upload to completion.

        ``proven``: our own polls pinned the duration down, rather than only capping it.
        """
        if rows <= 0 or seconds <= 0:
            return
        self._jobs.append((rows, seconds))
        self.rate, self.fixed = _fit(self._jobs)
        self.proven = self.proven or proven

    def rows_per_minute(self) -> float:
        """Userpilot's observed processing rate (the guess until a job completed)."""
        return self.rate * 60.0


def _fit(jobs: deque[tuple[int, float]]) -> tuple[float, float]:
    """``(rows per second, fixed seconds)`` fitting ``seconds = fixed + rows / rate``."""
    n = len(jobs)
    mean_rows = sum(r for r, _ in jobs) / n
    mean_secs = sum(s for _, s in jobs) / n
    spread = sum((r - mean_rows) ** 2 for r, _ in jobs)
    if n >= 2 and spread > 0:
        slope = sum((r - mean_rows) * (s - mean_secs) for r, s in jobs) / spread
        fixed = mean_secs - slope * mean_rows
        if slope > 0 and fixed >= 0:
            return 1.0 / slope, fixed
    # One job size only (or a fit that makes no physical sense): all time is per row.
    total_rows = sum(r for r, _ in jobs)
    total_secs = sum(s for _, s in jobs)
    return total_rows / total_secs, 0.0


class DeletionPace:
    """One deletion request every ``interval`` seconds, counted from the previous answer.

    From the answer, since the request itself cannot have reached Userpilot after it. Used by
    the deletion lane's one worker thread only.
    """

    def __init__(self, interval: float = DELETE_INTERVAL_SECONDS, clock: Clock = REAL_CLOCK):
        self.interval = float(interval)
        self.clock = clock
        self._next_at = -math.inf

    def delay(self) -> float:
        """Seconds until the next request may go (0 or less: now)."""
        return self._next_at - self.clock.now()

    def answered(self) -> None:
        """Userpilot answered a request (accepted or refused): the next waits ``interval``."""
        self._next_at = self.clock.now() + self.interval


class EventPace:
    """When the next track request may go: evenly spaced under the limit, slower after a 429.

    Thread-safe: the lane's dispatcher asks for slots while the client's threads report 429s.
    """

    def __init__(self, events_per_minute: float | None, clock: Clock = REAL_CLOCK) -> None:
        #: The configured pace; None: no pacing (dry run).
        self.limit = events_per_minute
        self.rate = events_per_minute
        self.rate_limited = 0
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._paused_until = 0.0
        self._last_warning = -math.inf

    def reserve(self) -> float:
        """Take the next slot; return when (on :attr:`clock`) the request may go."""
        with self._lock:
            now = self.clock.now()
            if self.rate is None:
                return max(now, self._paused_until)  # unpaced, but a 429's pause holds
            # No catching up after an idle spell: a burst is what the limit counts.
            slot = max(self._next, now, self._paused_until)
            self._next = slot + 60.0 / (self.rate * HEADROOM)
            return slot

    def recheck(self, slot: float) -> float | None:
        """A slot taken before a 429 arrived is paused too: a new slot after the pause, or
        None when ``slot`` still stands."""
        with self._lock:
            if self._paused_until <= slot:
                return None
        return self.reserve()

    def slow_down(self, retry_after: float | None) -> None:
        """Userpilot answered 429: pause for Retry-After, and slow the pace from now on."""
        with self._lock:
            self.rate_limited += 1
            now = self.clock.now()
            wait = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
            self._paused_until = max(self._paused_until, now + wait)
            if self.limit is not None and self.rate is not None:
                self.rate = max(self.limit * MIN_SHARE, self.rate * SLOW_DOWN)
            warn = now - self._last_warning >= WARN_EVERY_SECONDS
            if warn:
                self._last_warning = now
        if warn:
            logger.warning(
                "Userpilot limited the rate of events (HTTP 429, %d so far); pausing %.1f s and "
                "slowing to %s a minute. Another client may be using the same API key.",
                self.rate_limited,
                wait,
                "?" if self.rate is None else f"{self.rate:.0f}",
            )

    def after_rate_limit(self, retry_after: float | None) -> float:
        """Userpilot answered 429 to an event: slow down, and give the refused event a slot.

        Returns the seconds until that slot, which comes after the pause the 429 asked for.
        The retry policy waits this and nothing else (``retry.py``): one 429 is one pause and
        one slow-down, and the event sent again counts in the pace like any request.
        """
        self.slow_down(retry_after)
        return self.reserve() - self.clock.now()

    def accepted(self) -> None:
        """One event went through: win back some of the pace a 429 took."""
        with self._lock:
            if self.limit is not None and self.rate is not None and self.rate < self.limit:
                self.rate = min(self.limit, self.rate + self.limit * RECOVERY_SHARE)

    def per_minute(self) -> float | None:
        """The pace now, in events a minute (None: unpaced)."""
        return None if self.rate is None else self.rate * HEADROOM


@dataclass(frozen=True)
class JobWindow:
    """What our own clock proves about one completed job, in seconds after its upload's answer.

    The job was accepted before the upload was answered, was still running when the last poll
    that saw it unfinished was sent (``running_at``; 0 without one), and had ended when the
    poll that saw it final was answered (``answered_at``), which was sent at ``asked_at``.
    """

    running_at: float
    asked_at: float
    answered_at: float

    def admits(self, seconds: float) -> bool:
        """Whether a figure of Userpilot's for the job's duration says something we can use.

        It must lie inside the bounds, and before the moment the final poll was sent: a figure
        at or past that moment is what a clock counting up to the moment of asking would say
        (``elapsed_time`` as the time since creation), and learning it would make each job's
        prediction the previous one's notice delay longer.
        """
        return seconds > 0 and self.running_at <= seconds < self.asked_at

    @property
    def tight(self) -> bool:
        """Whether the polls pin the duration down to within a factor of two.

        A job first seen final by its first poll is only capped: a 10-row job seen done after
        a second says nothing of how fast a 3,000-row job will go, so it must not make the lane
        wait for the 3,000-row job as if it knew.
        """
        return self.running_at > 0 and self.running_at >= self.answered_at / 2


def job_seconds(window: JobWindow, figures: Iterable[float | None]) -> float:
    """How long a completed job took: the first of Userpilot's ``figures`` that ``window``
    admits, else the middle of what the polls prove.

    Userpilot does not document ``elapsed_time``; read in milliseconds, rounded to whole
    seconds or as the time since creation, one sample would teach a pace thousands of times
    too slow (or creep later job by job). Whatever the figures say, the result stays inside the
    bounds our own clock proved.
    """
    for figure in figures:
        if figure is not None and window.admits(figure):
            return figure
    return (window.running_at + window.answered_at) / 2


def reported_seconds(job: dict[str, Any]) -> tuple[float | None, float | None]:
    """Userpilot's own say on the job's duration: ``elapsed_time``, and end minus start.

    Neither is documented (units, rounding, what is counted), so :func:`job_seconds` uses them
    only inside what the polls prove.
    """
    elapsed = job.get("elapsed_time")
    if isinstance(elapsed, bool) or not isinstance(elapsed, int | float):
        elapsed = None
    start, end = _when(job.get("start_time")), _when(job.get("end_time"))
    stamped = end - start if start is not None and end is not None else None
    return elapsed, stamped


def _when(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def connections_for(events_per_minute: float | None) -> int:
    """Enough connections for the pace at a 500 ms round trip, between 2 and 8."""
    if events_per_minute is None:
        return 2
    return max(2, min(8, math.ceil(events_per_minute / 60 * 0.5)))
