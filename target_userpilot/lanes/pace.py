"""What the job lane learns of Userpilot's pace: rows per second and a fixed time per job.

Userpilot's pages give 1,800 and 1,200 rows a minute; the real pace differs by account and by
day. From the jobs completed in this run, a least-squares fit of ``seconds = fixed + rows / rate``
predicts when the next job will end, so its first status poll lands just after that moment.
``rows_per_minute`` is only the guess used until the first job has completed.
"""

from __future__ import annotations

from collections import deque

#: Jobs the fit remembers: recent ones say most about the pace now.
_REMEMBERED = 20


class JobPace:
    """Predicts a job's duration from the jobs of this run that completed before it."""

    def __init__(self, rows_per_minute: float) -> None:
        self._guess = max(float(rows_per_minute), 1.0) / 60.0
        self._jobs: deque[tuple[int, float]] = deque(maxlen=_REMEMBERED)
        self.rate = self._guess
        self.fixed = 0.0

    @property
    def observed(self) -> bool:
        """True once a completed job of this run has taught the pace."""
        return bool(self._jobs)

    def predict(self, rows: int) -> float:
        """Seconds from upload to completion expected for a job of ``rows`` rows."""
        return self.fixed + rows / self.rate

    def learn(self, rows: int, seconds: float) -> None:
        """A job of ``rows`` rows took ``seconds`` from upload to completion."""
        if rows <= 0 or seconds <= 0:
            return
        self._jobs.append((rows, seconds))
        self.rate, self.fixed = _fit(self._jobs)

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
