"""Time for every wait of the run: the real clock, and a simulated one that tests run lanes on.

Every wait the target times itself goes through a :class:`Clock`: a pace's slot, a poll of
the job in flight, a retry's pause, the batch wait, a lane waiting for work or for another
lane, the ledger's reconnect. ``now()`` tells the time; ``wait(on, seconds)`` waits on ``on`` (a
``threading.Event``, or a ``threading.Condition`` the caller holds) for at most ``seconds`` and
returns what ``on.wait`` returns. Each wait is on an event or a condition that a stop sets or
notifies, so a stop ends it at once (the polls of the job in flight: a second signal).

Not through it: a request on the wire (``request_timeout_seconds``), a database's wait for
another's lock (SQLite's busy timeout), and the main thread's ``poll`` of its input
(``input/reader.py``), which a stop wakes through a pipe.

:data:`REAL_CLOCK` is ``time.monotonic`` and ``on.wait``. :class:`SimulatedClock` is for tests:
its time stands still while any thread that takes part works and jumps to the earliest deadline
once all of them wait, so a lane that polls every 30 s runs in milliseconds, and what the test
measures (a job's notice delay, polls per job, a pace) is in simulated seconds that a loaded
machine cannot stretch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger("target_userpilot")


class Waitable(Protocol):
    """What a wait waits on: a ``threading.Event``, or a ``threading.Condition`` held."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s; False when the time ran out."""
        ...


class Clock(Protocol):
    """Tells the time and waits: every wait of the run goes through one."""

    def now(self) -> float:
        """Seconds, only ever compared with each other (monotonic)."""
        ...

    def wait(self, on: Waitable, seconds: float | None = None) -> bool:
        """Wait on ``on`` for at most ``seconds`` (None: until it is set or notified); what
        ``on.wait`` returns: True when the event is set or the condition notified."""
        ...


class RealClock:
    """The clock of a run: ``time.monotonic``, and waits that are the event's or condition's."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, on: Waitable, seconds: float | None = None) -> bool:
        """``on.wait(seconds)`` (a negative time waits not at all)."""
        return on.wait(None if seconds is None else max(0.0, seconds))


#: The clock every part takes unless a test hands it another.
REAL_CLOCK: Clock = RealClock()


def wait_until(
    clock: Clock,
    cond: threading.Condition,
    done: Callable[[], bool],
    timeout: float | None = None,
    *,
    give_up: Callable[[], bool] | None = None,
) -> bool:
    """Wait on ``cond`` (held by the caller) until ``done()``: True. False once ``timeout`` s
    passed on ``clock``, or once ``give_up()`` is true; both are asked again whenever ``cond``
    is notified, so whoever changes what they read notifies it."""
    deadline = None if timeout is None else clock.now() + timeout
    while not done():
        if give_up is not None and give_up():
            return False
        left = None if deadline is None else deadline - clock.now()
        if left is not None and left <= 0:
            return False
        clock.wait(cond, left)
    return True


#: How long a waiter of the simulated clock first waits for real before it looks at the clock
#: again, and the longest it waits once nothing changes.
_FIRST_SLICE = 0.0005
_LAST_SLICE = 0.01


@dataclass(eq=False)
class _Wait:
    """One thread's wait on the simulated clock."""

    on: Any
    deadline: float
    #: An event's ``is_set`` (None for a condition).
    is_set: Any
    #: The condition was notified while this waiter waited: it is about to run.
    notified: bool = False


class SimulatedClock:
    """Simulated time: it stands still while a thread that takes part works, and jumps to the
    earliest deadline once every one of them waits.

    A thread takes part once it waits on this clock (or calls :meth:`take_part`); the thread
    that made the clock takes part from the start. While any of them is busy (running code, in
    an HTTP request, writing a file), simulated time stands still: work takes no simulated time.
    Once all of them wait, time jumps to the earliest deadline among their waits, and that wait
    returns as a real one would after that long. A wait ends early, as a real one does, when
    its event is set or its condition is notified: conditions waited on are watched (their
    ``notify`` is wrapped), so a notified thread counts as about to run, never as waiting.

    A thread that takes part and blocks on anything else (a lock, a semaphore, a sleep) looks
    busy for ever: after ``stall_seconds`` of real time without any change the clock advances
    anyway and counts it in :attr:`stalls`, so a test can prove every wait goes through it.
    Threads that only read the time (a sandbox answering requests) never take part.
    """

    def __init__(self, start: float = 0.0, *, stall_seconds: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._now = float(start)
        self._participants: set[threading.Thread] = {threading.current_thread()}
        self._waiting: dict[threading.Thread, _Wait] = {}
        #: Conditions whose ``notify`` tells this clock.
        self._watched: weakref.WeakSet[threading.Condition] = weakref.WeakSet()
        self._generation = 0
        self._changed_at = time.monotonic()
        self.stall_seconds = stall_seconds
        #: Times time advanced because a thread that takes part stayed busy ``stall_seconds``.
        self.stalls = 0

    def now(self) -> float:
        """Simulated seconds."""
        with self._lock:
            return self._now

    def wait(self, on: Waitable, seconds: float | None = None) -> bool:
        """Wait on ``on`` until it is set or notified, or until ``seconds`` of simulated time
        passed; the caller takes part from now on."""
        if seconds is not None and seconds <= 0:
            return on.wait(0)
        me = threading.current_thread()
        is_set = getattr(on, "is_set", None)
        with self._lock:
            deadline = math.inf if seconds is None else self._now + seconds
            entry = _Wait(on, deadline, is_set)
            self._participants.add(me)
            self._waiting[me] = entry
            self._changed()
            if isinstance(on, threading.Condition):
                self._watch(on)
        pause = _FIRST_SLICE
        seen = -1
        try:
            while True:
                if on.wait(pause):
                    return True
                with self._lock:
                    if entry.notified:
                        # Notified as its slice ran out: the condition's own wait may have
                        # missed it, so the caller looks again (a spurious wakeup at worst).
                        return True
                    if self._now >= entry.deadline:
                        return bool(is_set()) if is_set is not None else False
                    self._advance_if_all_wait()
                    pause = (
                        _FIRST_SLICE if seen != self._generation else min(pause * 2, _LAST_SLICE)
                    )
                    seen = self._generation
        finally:
            with self._lock:
                self._waiting.pop(me, None)
                self._changed()

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass for the caller (a tap's own pace, in a test)."""
        self.wait(threading.Event(), seconds)

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` now (a test with no thread waiting)."""
        with self._lock:
            self._now += max(0.0, seconds)
            self._changed()

    def take_part(self) -> None:
        """The calling thread takes part: time stands still while it works."""
        with self._lock:
            self._participants.add(threading.current_thread())
            self._changed()

    def leave(self) -> None:
        """The calling thread no longer takes part (it may block on anything)."""
        with self._lock:
            self._participants.discard(threading.current_thread())
            self._changed()

    # Inside, under the lock

    def _changed(self) -> None:
        self._generation += 1
        self._changed_at = time.monotonic()

    def _watch(self, cond: threading.Condition) -> None:
        """Wrap ``cond.notify`` (``notify_all`` calls it) so a notified waiter counts as about
        to run: time must not jump before it has run."""
        if cond in self._watched:
            return
        self._watched.add(cond)
        original = cond.notify

        def notify(n: int = 1) -> None:
            with self._lock:
                for entry in self._waiting.values():
                    if entry.on is cond:
                        entry.notified = True
                self._changed()
            original(n)

        # A method replaced on this one instance: mypy refuses assigning to a method.
        cond.notify = notify  # type: ignore[method-assign]

    def _advance_if_all_wait(self) -> None:
        """Jump to the earliest deadline when every thread that takes part waits."""
        self._participants = {t for t in self._participants if t.is_alive()}
        waits = list(self._waiting.values())
        earliest = min((w.deadline for w in waits), default=math.inf)
        if earliest == math.inf or earliest <= self._now:
            return
        if any(w.notified or (w.is_set is not None and w.is_set()) for w in waits):
            return  # a thread is about to run
        busy = [t.name for t in self._participants if t not in self._waiting]
        if busy:
            if time.monotonic() - self._changed_at < self.stall_seconds:
                return
            self.stalls += 1
            logger.warning(
                "Simulated clock: %s busy for %.0f s of real time; advancing anyway.",
                ", ".join(sorted(busy)),
                self.stall_seconds,
            )
        self._now = earliest
        self._changed()
