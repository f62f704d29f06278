"""Lanes: each kind of outbound work with its own pace, and one protocol for the run to drive them.

The job lane (``jobs.py``) runs Userpilot's one bulk job at a time. Every lane makes work durable
and then releases that work's hold in :mod:`target_userpilot.checkpoints`, which alone writes
STATE. Transport retries stay in the client; pacing belongs to each lane.
"""

from __future__ import annotations

from typing import Protocol


class Lane(Protocol):
    """What the run needs of every lane."""

    @property
    def busy(self) -> bool:
        """True while work of ours is in flight."""
        ...

    def wait_idle(self) -> None:
        """Block until all work given to the lane is durable; raise what stopped it."""
        ...

    def raise_error(self) -> None:
        """Raise the failure that stopped the lane, if any (cheap: called per record)."""
        ...

    def settle(self, *, send_sealed: bool = False) -> None:
        """Take no new work, but let the work in flight end (its STATE can still go out)."""
        ...

    def close(self) -> None:
        """Stop at once and release threads and connections."""
        ...
