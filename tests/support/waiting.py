"""Waiting for a condition by polling it, never by sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, failing the test at the deadline.

    ``check`` answers None (or anything falsy) until the condition holds, then the value the
    caller waits for, which ``eventually`` returns.

    The deadline is generous: polling returns as soon as the condition holds, and on two busy
    cores starting a process or a server can take seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
