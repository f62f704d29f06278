"""Users with an upsert not yet in a completed job: what an event of theirs waits for.

Userpilot needs a user before its events. The events stream may come before the users stream
(tap-csv sends files in the order configured), so an event waits for every users batch that holds
its user, not only for the users rows received before it. The buffer notes each users row under
its batch as it arrives; the job lane says when a batch's job completed; the events lane (track
mode) and the buffer (import files) ask. Each batch is known by its STATE hold, which follows it
from open to sealed to a job (a batch split on 413 keeps it on its second half, which goes last).

One lock, held only for dictionary work and never while calling anything else (a waiter's clock
aside): the buffer and the lanes call in with their own locks held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable

from target_userpilot.clock import REAL_CLOCK, Clock, wait_until


class PendingUsers:
    """Per users batch not yet durable, the user ids it holds; and per user, those batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ids: dict[Hashable, set[str]] = {}
        self._batches: dict[str, list[Hashable]] = {}

    def note(self, batch: Hashable, user_id: str) -> None:
        """A users row of ``user_id`` went into ``batch`` (the buffer, once per row).

        Runs for every users row: the lock is taken directly, and no list is made for a user
        that has one.
        """
        with self._lock:
            ids = self._ids.get(batch)
            if ids is None:
                ids = self._ids[batch] = set()
            if user_id in ids:
                return
            ids.add(user_id)
            batches = self._batches.get(user_id)
            if batches is None:
                self._batches[user_id] = [batch]
            else:
                batches.append(batch)

    def done(self, batch: Hashable | None) -> None:
        """The job holding ``batch`` completed (or the batch was empty): its users exist."""
        if batch is None:
            return
        with self._cond:
            for user_id in self._ids.pop(batch, ()):
                batches = self._batches[user_id]
                batches.remove(batch)
                if not batches:
                    del self._batches[user_id]
            self._cond.notify_all()

    def of(self, user_id: str) -> tuple[Hashable, ...]:
        """The batches holding an upsert of ``user_id`` that is not yet in Userpilot."""
        with self._cond:
            return tuple(self._batches.get(user_id, ()))

    def wait_done(
        self,
        batches: Collection[Hashable],
        timeout: float | None = None,
        *,
        clock: Clock = REAL_CLOCK,
        give_up: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait until every one of ``batches`` is done: True. False once ``timeout`` s passed on
        ``clock``, or ``give_up()`` is true (asked again whenever a batch is done or
        :meth:`wake` is called)."""
        with self._cond:
            return wait_until(
                clock,
                self._cond,
                lambda: self._ids.keys().isdisjoint(batches),
                timeout,
                give_up=give_up,
            )

    def wake(self) -> None:
        """Wake every :meth:`wait_done`, to ask its ``give_up`` again (a lane stops)."""
        with self._cond:
            self._cond.notify_all()

    def holds_any(self, batch: Hashable, user_ids: Collection[str]) -> bool:
        """Whether ``batch`` holds a row of one of ``user_ids``."""
        with self._cond:
            ids = self._ids.get(batch)
            if not ids or not user_ids:
                return False
            small, large = (ids, user_ids) if len(ids) < len(user_ids) else (user_ids, ids)
            return any(user_id in large for user_id in small)

    def __len__(self) -> int:
        """Users batches not yet durable (tests and DEBUG)."""
        with self._cond:
            return len(self._ids)
