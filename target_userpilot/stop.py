"""How a run stops: one path for a stop signal and for a lane's failure, on a thread of its own.

A signal handler runs on the main thread wherever it happens to be, maybe holding a lock the
stop needs; a lane fails on its own thread. Neither acts there: each only notes what happened
and wakes the stop thread (through a pipe, which a signal handler may write to safely), which
then stops the run through the run's own callbacks:

- the first stop (a signal, or a lane's failure): ``stop(reason)``, which tells every lane to
  take no new work and wakes the reading thread, which raises ``reason`` where it checks;
- a second signal: ``abandon()``, which ends every wait at once.

Signals that arrive within ``DUPLICATE_SIGNAL_SECONDS`` of the one before are one stop sent
twice (Ctrl-C reaches the whole process group, and an orchestrator such as Meltano forwards its
own SIGTERM milliseconds later): they count once, and the first one names the stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable

from target_userpilot.errors import Terminated

logger = logging.getLogger("target_userpilot")

#: Signals closer together than this are one stop: an orchestrator forwarding the signal the
#: OS already delivered does so within milliseconds; a person pressing Ctrl-C again to stop at
#: once does not.
DUPLICATE_SIGNAL_SECONDS = 0.5


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunStop:
    """Decides when and why the run stops; never raises into another thread."""

    def __init__(
        self,
        *,
        stop: Callable[[BaseException, str | None], None],
        abandon: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        window: float = DUPLICATE_SIGNAL_SECONDS,
    ) -> None:
        self._stop = stop
        self._abandon = abandon
        self._clock = clock
        self.window = window
        #: Why the run stops (the first signal's Terminated, or the first failure), once it does.
        self.reason: BaseException | None = None
        #: Signals counted (duplicates within the window count once).
        self.signals = 0
        #: True once a second signal said: stop at once.
        self.abandoned = False
        self._last_signal_at = -float("inf")
        self._last_signal = ""
        # (signal number or failure, when); appended by a signal handler or a lane's thread.
        self._events: deque[tuple[int | BaseException, float]] = deque()
        self._lock = threading.Lock()
        #: Held while acting on what was noted: one signal or failure at a time.
        self._acting = threading.Lock()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._watch, name="userpilot-stop", daemon=True)
        self._thread.start()

    # Noting what happened (any thread, the signal handler included)

    def signal(self, signum: int) -> None:
        """A stop signal arrived (signal handler, main thread): note it, take no lock."""
        self._events.append((signum, self._clock()))
        fd = self._write
        if fd >= 0:
            try:
                os.write(fd, b"s")
            except OSError:
                pass  # the pipe is full: the stop thread is awake and will find it

    def failed(self, error: BaseException) -> None:
        """A lane failed (its own thread): the run stops with ``error``."""
        self._events.append((error, self._clock()))
        with self._lock:
            if self._write >= 0:
                try:
                    os.write(self._write, b"f")
                except OSError:
                    pass

    def stop_now(self, reason: BaseException) -> bool:
        """The reading thread met ``reason``: the run stops with it, unless it already stops.

        Returns True if this is the first stop (the caller's error is the run's reason).
        """
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
        self._stop(reason, None)
        return True

    def close(self) -> None:
        """End the stop thread (main thread, once the run is closed)."""
        with self._lock:
            fd, self._write = self._write, -1
        if fd >= 0:
            os.close(fd)  # the stop thread reads the end of the pipe and returns
        self._thread.join(timeout=1)
        if not self._thread.is_alive():
            os.close(self._read)

    # The stop thread

    def act_now(self) -> None:
        """Act at once on what was noted and not acted on yet (a thread that holds no lock).

        The end of input may be read just after a signal arrived and before the stop thread
        woke: the run then still stops as it would have while reading.
        """
        with self._acting:
            while self._events:
                what, at = self._events.popleft()
                try:
                    if isinstance(what, BaseException):
                        self._on_failure(what)
                    else:
                        self._on_signal(what, at)
                except Exception:
                    logger.debug("Stopping the run failed", exc_info=True)

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            self.act_now()
            if not data:
                return

    def _on_failure(self, error: BaseException) -> None:
        with self._lock:
            if self.reason is not None:
                return  # the first failure (or signal) is the one reported
            self.reason = error
        self._stop(error, None)

    def _on_signal(self, signum: int, at: float) -> None:
        name = signal_name(signum)
        if at - self._last_signal_at < self.window:
            logger.info(
                "Received %s %.0f ms after %s: the same stop sent twice (an orchestrator "
                "forwarding it), counted once.",
                name,
                (at - self._last_signal_at) * 1000,
                self._last_signal,
            )
            return
        self._last_signal_at, self._last_signal = at, name
        self.signals += 1
        with self._lock:
            first = self.reason is None
            if first:
                msg = (
                    f"Received {name}, so the run stopped before all of its input was loaded. "
                    "STATE was written up to the last record Userpilot confirmed; rerun from it "
                    "to load the rest."
                )
                self.reason = Terminated(msg)
            reason = self.reason
        assert reason is not None
        if first:
            self._stop(reason, name)
            return
        # The run already stops (a first signal, or a failure): this one means at once.
        self.abandoned = True
        logger.warning(
            "Received %s while stopping: stopping at once; the work in flight is left to "
            "Userpilot and its STATE does not go out.",
            name,
        )
        self._abandon()
