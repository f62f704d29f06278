"""What the job lane learns of Userpilot's pace: rows per second and a fixed time per job.

Userpilot's pages give 1,800 and 1,200 rows a minute; the real pace differs by account and by
day. From the jobs completed in this run, a least-squares fit of ``seconds = fixed + rows / rate``
predicts when the next job will end, so its first status poll lands just after that moment.
``rows_per_minute`` is only the guess used until the first job has completed.

What a job took is learned from our own clock first (:func:`job_seconds`): the polls prove
bounds, and Userpilot's own figures (an undocumented ``elapsed_time``, its timestamps) are used
only where they fall inside them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

#: Jobs the fit remembers: recent ones say most about the pace now.
_REMEMBERED = 20


class JobPace:
    """Predicts a job's duration from the jobs of this run that completed before it."""

    def __init__(self, rows_per_minute: float) -> None:
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


def connections_for(events_per_minute: float | None) -> int:
    """Enough connections for the pace at a 500 ms round trip, between 2 and 8."""
    if events_per_minute is None:
        return 2
    return max(2, min(8, math.ceil(events_per_minute / 60 * 0.5)))
