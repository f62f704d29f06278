"""target-userpilot: a Singer target that loads user and company profiles into Userpilot."""

from __future__ import annotations

__all__ = ["TargetUserpilot"]


def __getattr__(name: str):
    if name == "TargetUserpilot":
        from target_userpilot.target import TargetUserpilot

        return TargetUserpilot
    raise AttributeError(name)
