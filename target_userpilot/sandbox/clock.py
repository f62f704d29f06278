"""The sandbox's clock: monotonic seconds for schedules, wall time only for what clients read."""

from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    """Monotonic time with an origin, so figures read as seconds since the sandbox started."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Make now the origin (on `Sandbox.start`)."""
        self.origin = time.monotonic()
        self.wall_origin = time.time()

    @staticmethod
    def now() -> float:
        """Monotonic seconds: schedules must not jump when the wall clock is set."""
        return time.monotonic()

    def since_start(self, moment: float | None) -> float | None:
        """Seconds from the origin to `moment`, rounded for reports; None stays None."""
        return None if moment is None else round(moment - self.origin, 4)

    def iso(self, moment: float) -> str:
        """`moment` as the UTC ISO 8601 timestamp Userpilot prints, in milliseconds."""
        wall = self.wall_origin + (moment - self.origin)
        stamp = datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")
