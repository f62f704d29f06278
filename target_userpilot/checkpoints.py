"""STATE release: a STATE message goes out only when everything before it is in Userpilot.

Every record gets a sequence number as it arrives. Every batch that is not yet durable (still
open in a sink, being uploaded, or in a job that has not completed) holds the sequence number of
its first record. A STATE that arrived after record ``n`` may be written once no hold is at or
below ``n``: every record before it is then in a completed job, rejected, or ignored.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class Checkpoints:
    """Holds STATE messages until the data before them is durable, then writes the latest."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._holds: dict[int, int] = {}
        self._tokens = itertools.count()
        self._states: deque[tuple[int, dict[str, Any]]] = deque()
        self.next_seq = 0
        self.written = 0

    def record(self) -> int:
        """Number the next record (called for every record, on the reading thread only)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def hold(self, first_seq: int) -> int:
        """Open a hold for a batch whose first record is ``first_seq``; returns its token."""
        with self._lock:
            token = next(self._tokens)
            self._holds[token] = first_seq
            return token

    def release(self, token: int | None) -> None:
        """The batch behind ``token`` is durable (or empty): write any STATE it was holding back."""
        if token is None:
            return
        with self._lock:
            self._holds.pop(token, None)
            self._write_ready()

    def add_state(self, state: dict[str, Any]) -> None:
        """A STATE message arrived: it covers every record numbered so far."""
        with self._lock:
            self._states.append((self.next_seq, state))
            self._write_ready()

    @property
    def pending(self) -> int:
        """STATE messages still held back."""
        return len(self._states)

    def _write_ready(self) -> None:
        floor = min(self._holds.values(), default=self.next_seq)
        latest = None
        while self._states and self._states[0][0] <= floor:
            latest = self._states.popleft()[1]
        if latest is not None:
            # Only the newest releasable STATE matters: it supersedes the ones before it.
            self._write(latest)
            self.written += 1
