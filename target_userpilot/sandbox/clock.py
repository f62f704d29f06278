"""The sandbox's clock: the run's clock for schedules, wall time only for what clients read.

Any :class:`target_userpilot.clock.Clock` drives it (the real one by default): a test hands the
sandbox the simulated clock its lanes wait on, and jobs then run at their rate in simulated
time, so a 10,000-row job at 1,800 rows a minute ends in milliseconds of real time.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from target_userpilot.clock import REAL_CLOCK
from target_userpilot.clock import Clock as Source


class Clock:
    """The source's time with an origin, so figures read as seconds since the sandbox started."""

    def __init__(self, source: Source = REAL_CLOCK) -> None:
        #: What tells the time (and what a wait for the sandbox's jobs waits on).
        self.source = source
        self.restart()

    def restart(self) -> None:
        """Make now the origin (on `Sandbox.start`)."""
        self.origin = self.source.now()
        self.wall_origin = time.time()

    def now(self) -> float:
        """Monotonic seconds: schedules must not jump when the wall clock is set."""
        return self.source.now()

    def since_start(self, moment: float | None) -> float | None:
        """Seconds from the origin to `moment`, rounded for reports; None stays None."""
        return None if moment is None else round(moment - self.origin, 4)

    def iso(self, moment: float) -> str:
        """`moment` as the UTC ISO 8601 timestamp Userpilot prints, in milliseconds."""
        wall = self.wall_origin + (moment - self.origin)
        stamp = datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")
