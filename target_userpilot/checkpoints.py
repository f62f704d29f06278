"""STATE: the one place that holds STATE messages back and writes them.

Every record gets a sequence number as it arrives. Every piece of work that is not yet durable (a
batch still open, waiting, uploading or in a job that has not completed; a deletion request or
an event not yet accepted) holds the sequence number of its first record. A STATE that arrived
after record ``n`` may be written once no hold is at or below ``n``: every record before it is then
durable in Userpilot, rejected, or ignored. Lanes release the holds of what they made durable;
nothing else writes STATE.

A dry run writes no STATE at all (:func:`hold_back`): nothing it does is durable in Userpilot, and
a bookmark moved past records that were only previewed would make the next real run skip them.

Two locks: the holds and the queued STATE messages are dictionary work under one, which is never
held while anything else runs, so opening or releasing a hold never waits for stdout or the
ledger; the STATE going out (the ledger's record of what it covers, then stdout) is written under
the other, one at a time and newest last: a STATE found already superseded by a newer one that
went out is not written.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from target_userpilot.clock import REAL_CLOCK, Clock, wait_until
from target_userpilot.errors import StateUndeliverable

logger = logging.getLogger("target_userpilot")


@dataclass(eq=False)
class Hold:
    """Work that is not durable yet, holding back every STATE after its first record."""

    first_seq: int
    token: int = field(default=-1, repr=False)
    #: What the work is (``users``, ``companies``, ``events``...), for :meth:`wait_durable`.
    kind: str | None = None


class Checkpoints:
    """Holds STATE messages until the data before them is durable, then writes the latest."""

    def __init__(self, write: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._write = write or _write_stdout
        # A condition, so that a lane can wait for other work to become durable (events wait
        # for the users rows before them). Held for dictionary work only.
        self._lock = threading.Condition()
        #: Held while a STATE goes out: one at a time, in order.
        self._writing = threading.Lock()
        self._holds: dict[int, Hold] = {}
        self._tokens = itertools.count()
        #: Held-back STATE messages: (records numbered before it, its number, its value).
        self._states: deque[tuple[int, int, Any]] = deque()
        #: The number of the newest STATE written.
        self._delivered = 0
        self._error: StateUndeliverable | None = None
        self.next_seq = 0
        self.written = 0
        #: Called, one STATE at a time, with a STATE's record number before that STATE is
        #: written: what a rerun from it will never send again must be recorded first (mirror
        #: deletes). Raising keeps the STATE back.
        self.before_write: Callable[[int], None] | None = None
        #: STATE messages that arrived (a dry run reports how many it held back).
        self.received = 0

    def record(self) -> int:
        """Number the next record (called for every record, on the reading thread only)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def hold(self, first_seq: int, kind: str | None = None) -> Hold:
        """Open a hold for work whose first record is ``first_seq``; ``kind`` names the work."""
        with self._lock:
            hold = Hold(first_seq, next(self._tokens), kind)
            self._holds[hold.token] = hold
            return hold

    def release(self, hold: Hold | None) -> None:
        """The work behind ``hold`` is durable (or empty): write any STATE it was holding back."""
        if hold is None:
            return
        with self._lock:
            self._holds.pop(hold.token, None)
            ready = self._newest_ready()
            self._lock.notify_all()
        self._deliver(ready)

    def add_state(self, value: Any) -> None:
        """A STATE message arrived: it covers every record numbered so far."""
        with self._lock:
            self.received += 1
            self._states.append((self.next_seq, self.received, value))
            ready = self._newest_ready()
        self._deliver(ready)

    def wait_durable(
        self,
        kind: str,
        seq: int,
        timeout: float | None = None,
        *,
        clock: Clock = REAL_CLOCK,
        give_up: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait until all work of ``kind`` numbered below ``seq`` is durable: True. False once
        ``timeout`` s passed on ``clock``, or ``give_up()`` is true (asked again whenever a
        hold is released or :meth:`wake` is called)."""
        with self._lock:
            return wait_until(
                clock, self._lock, lambda: self._floor(kind) >= seq, timeout, give_up=give_up
            )

    def wake(self) -> None:
        """Wake every :meth:`wait_durable`, to ask its ``give_up`` again (a lane stops)."""
        with self._lock:
            self._lock.notify_all()

    def durable_floor(self, kind: str) -> int:
        """Every record of ``kind``'s work numbered below this is durable (mirror deletes)."""
        with self._lock:
            return self._floor(kind)

    def _floor(self, kind: str | None = None) -> int:
        """Every record numbered below this is durable; with ``kind``, only work of that kind
        counts (every ``users`` row below ``_floor("users")`` is in a completed job)."""
        held = (h.first_seq for h in self._holds.values() if kind is None or h.kind == kind)
        return min(held, default=self.next_seq)

    @property
    def held(self) -> int:
        """Work not durable yet (holds open): 0 once everything received is in Userpilot."""
        with self._lock:
            return len(self._holds)

    @property
    def pending(self) -> int:
        """STATE messages still held back."""
        with self._lock:
            return len(self._states)

    def raise_error(self) -> None:
        """Raise the failure to deliver STATE, if one happened (checked by the reading thread)."""
        if self._error is not None:
            raise self._error

    def _newest_ready(self) -> tuple[int, int, Any] | None:
        """The newest STATE whose records are all durable (under the lock); it supersedes the
        ones before it. It stays queued until it is written."""
        if self._error is not None:
            return None
        floor = self._floor()
        ready = None
        for state in self._states:
            if state[0] > floor:
                break
            ready = state
        return ready

    def _deliver(self, ready: tuple[int, int, Any] | None) -> None:
        """Write ``ready`` unless a newer STATE already went out; outside the holds' lock."""
        if ready is None:
            return
        seq, number, value = ready
        with self._writing:
            if number <= self._delivered or self._error is not None:
                return  # a newer STATE went out meanwhile: it covers this one's records
            if self.before_write is not None:
                # Raises rather than write a STATE whose records the ledger does not hold.
                self.before_write(seq)
            try:
                self._write(value)
            except (OSError, ValueError) as exc:
                self._error = _undeliverable(exc)
                return
            self._delivered = number
            self.written += 1
            with self._lock:
                while self._states and self._states[0][1] <= number:
                    self._states.popleft()


def _write_stdout(value: Any) -> None:
    """Write one STATE message to stdout, where Meltano or the next process reads it."""
    out = sys.stdout
    if out is None:
        raise OSError("standard output is closed")
    out.write(json.dumps(value) + "\n")
    out.flush()
    logger.debug("Wrote STATE after its records were confirmed by Userpilot.")


def hold_back(value: Any) -> None:
    """A dry run's STATE: never written, since nothing the dry run did is durable in Userpilot.

    Under Meltano (or any pipeline that keeps the target's last STATE), a STATE from a dry run
    would move the bookmark, and the next real run would skip every record only previewed.
    """
    del value


def check_stdout() -> None:
    """Refuse to start when stdout is closed: no STATE could ever be delivered."""
    try:
        if sys.stdout is None:
            raise OSError("standard output is closed")
        os.fstat(sys.stdout.fileno())
    except (OSError, ValueError) as exc:
        raise _undeliverable(exc) from None


def _undeliverable(exc: BaseException) -> StateUndeliverable:
    # Later writes (and Python's own flush at exit) would fail the same way and print a
    # traceback: point stdout at the null device once the failure is known.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if sys.stdout is not None:
            os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    msg = (
        f"STATE could not be written to standard output ({reason}): whatever reads the "
        "target's output stopped reading. The records loaded so far are in Userpilot, but the "
        "bookmark was not delivered; rerun from the last STATE the pipeline saved."
    )
    return StateUndeliverable(msg)
