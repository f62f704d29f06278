"""What every lane shares: its threads, the failure that stopped it, and how it stops.

A lane is outbound work on threads of its own (bulk jobs, deletion requests, events). The run
drives every lane the same way, and a stop reaches them all the same way, in two phases:

1. :meth:`Lane.stop`: take no new work. Called on every lane at once, before any is waited
   for, so no lane sends anything new while another one finishes.
2. :meth:`Lane.join`: wait until the work in flight has ended (a job in flight is followed to
   its end, so its STATE can go out), and the threads with it.

:meth:`Lane.abandon` (a second signal) ends every wait at once: nothing more is awaited, and a
request still in flight is left to Userpilot. A lane's thread never raises into another thread:
its failure is kept (:meth:`Lane.raise_error`), the waiting threads are woken, and the run is
told through ``on_failure``.

Each lane keeps only what differs: its work loop, what it hands out, and what "busy" and
"idle" mean for it. Its pace lives in :mod:`target_userpilot.lanes.pace`.

Every wait of a lane's threads (and of a thread waiting for a lane) goes through the lane's
:class:`~target_userpilot.clock.Clock`, the one its pace runs on, and is on an event or a
condition that a stop sets or notifies: a wait for work, for another lane or for a pace ends
at once when the lane stops, never after a polling tick. A test hands the pace a simulated clock
and the lane runs in simulated time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from target_userpilot.clock import REAL_CLOCK, Clock, wait_until


class Abandoned(Exception):
    """The lane was abandoned while its thread waited: the thread ends without a failure."""


class Lane:
    """Threads, failure capture, stop and join: the part every lane shares."""

    def __init__(
        self,
        *,
        clock: Clock = REAL_CLOCK,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        #: What every wait of the lane is waited on (its pace's).
        self.clock = clock
        #: Guards the lane's own state; every wait of the lane's threads for work is on it, so a
        #: stop or a failure wakes them all.
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        #: Phase one of a stop: take no new work (read under ``_cond``).
        self._stopping = False
        #: Set with ``_stopping``: ends the waits for a pace or for another client's job.
        self._stop_event = threading.Event()
        #: Stop at once: every wait ends, nothing in flight is awaited.
        self._abandon = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = 0
        #: Told of the lane's failure (once, from the lane's thread): the run's one stop path.
        self._on_failure = on_failure

    # The run's side

    @property
    def busy(self) -> bool:
        """True while work of ours is in flight (or, for events, waiting)."""
        raise NotImplementedError

    def wait_idle(self) -> None:
        """Block until all work given to the lane is durable; raise what stopped it."""
        raise NotImplementedError

    def raise_error(self) -> None:
        """Raise the failure that stopped the lane, if any (cheap: called per record)."""
        if self._error is not None:
            raise self._error

    @property
    def failed(self) -> BaseException | None:
        """The failure that stopped the lane, if any."""
        return self._error

    @property
    def stopping(self) -> bool:
        """True once the lane was told to take no new work."""
        return self._stopping

    def stop(self, *, send_sealed: bool = False) -> None:
        """Phase one of a stop: take no new work; the work in flight goes on.

        ``send_sealed``: work already handed over whole before the stop (a sealed batch) may
        still go; lanes whose work cannot be undone or takes long ignore it.
        """
        self._stop_event.set()  # first: a thread about to start new work checks it last
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stopped(send_sealed=send_sealed)

    def join(self, timeout: float | None = None) -> bool:
        """Phase two: wait until the lane's threads end; False if they still run at the deadline.

        Without a ``timeout``, returns as soon as the lane is abandoned: a thread stuck in a
        request is left to end on its own (it is a daemon thread).
        """
        with self._cond:
            # Each thread's end notifies, and so does the abandonment (through stop()).
            return wait_until(
                self.clock,
                self._cond,
                lambda: not self._running,
                timeout,
                give_up=lambda: timeout is None and self._abandon.is_set(),
            )

    @property
    def abandoned(self) -> bool:
        """True once the lane was told to stop at once."""
        return self._abandon.is_set()

    def settle(self, *, send_sealed: bool = False) -> None:
        """Take no new work, and wait for the work in flight to end (both phases, this lane)."""
        self.stop(send_sealed=send_sealed)
        self.join()

    def abandon(self) -> None:
        """Stop at once: every wait of the lane ends; what is in flight is left to Userpilot."""
        self._abandon.set()
        self.stop()

    def close(self, *, grace: float = 5.0) -> None:
        """Abandon the lane, give its threads ``grace`` seconds to end, release what it holds."""
        self.abandon()
        self.join(timeout=grace)
        self._release()

    # The lane's side

    def _start(self, work: Callable[[], None], name: str) -> None:
        """Run ``work`` on a thread of the lane; whatever it raises is the lane's failure."""
        with self._cond:
            self._running += 1
        thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Abandoned:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept for the run, never raised here
            self._fail(exc)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        """Keep the lane's first failure, wake every waiting thread and tell the run."""
        with self._cond:
            first = self._error is None
            if first:
                self._error = exc
            self._cond.notify_all()
        if first:
            self._failed(exc)
            if self._on_failure is not None:
                self._on_failure(exc)

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` (a pace) before new work; raise :class:`Abandoned` on a stop.

        New work waits on the stop, not only on abandonment: after a stop nothing new starts.
        """
        if self.clock.wait(self._stop_event, max(0.0, seconds)):
            raise Abandoned

    # Hooks

    def _stopped(self, *, send_sealed: bool) -> None:
        """After :meth:`stop`: tell whatever feeds the lane (nothing by default)."""

    def _failed(self, exc: BaseException) -> None:
        """After the lane's first failure, before the run is told (nothing by default)."""

    def _release(self) -> None:
        """After :meth:`close`: release files and connections (nothing by default)."""
