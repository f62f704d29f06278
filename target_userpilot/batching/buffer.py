"""The rows between the sinks and the job lane: one open batch per object, and when each goes up.

Batches belong to Userpilot objects, not to streams: every stream that loads users feeds the one
open users batch, in input order, so rows for one profile reach Userpilot in the order the tap sent
them whatever stream they came from (and a schema change needs no flush to keep that order).

When a batch goes up (the rule the README explains):
- when it reaches ``batch_size_rows``, or the next row would pass ``max_file_bytes``;
- when no job of ours runs and its oldest row has waited ``batch_wait_seconds``: then the open
  batch holding the run's oldest row goes first (it is the one STATE waits for);
- at end of input, oldest first.
Events for the Import API (``events_api: import``) are a third object with batches of their own,
with one more rule: Userpilot needs the user first, so an events batch never goes before a users
batch holding rows received before its events, nor before one holding a user its events name,
whatever the order of the streams (that users batch goes first instead). Which users batch holds
which user is :class:`~target_userpilot.batching.pending.PendingUsers`' to know, shared with
the events lane.
A full batch is sealed at once; at most one sealed batch waits for the lane, and only then does the
reading thread block. Input faster than Userpilot therefore fills batches to the limits while a job
runs, and input slower than Userpilot never leaves it idle while rows wait.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

from target_userpilot.batching.batch import BatchFile, SealedBatch
from target_userpilot.batching.pending import PendingUsers
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.clock import REAL_CLOCK, Clock
from target_userpilot.records.routing import EVENTS, USERS


class BatchBuffer:
    """Open batches per object, and the sealed batches waiting for the job lane."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        *,
        max_rows: int,
        max_bytes: int,
        wait_seconds: float,
        spool_dir: str | None = None,
        pending: PendingUsers | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self._checkpoints = checkpoints
        #: Times ``wait_seconds`` (the job lane's clock), and every wait here.
        self.clock = clock
        #: The users of every users batch not yet durable (events wait for them).
        self.pending = pending if pending is not None else PendingUsers()
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self.wait_seconds = wait_seconds
        self._spool_dir = spool_dir
        # A plain lock: add() takes it once per record, and an RLock costs more. add() takes
        # the lock itself, not through the condition's own (Python-level) __enter__.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._open: dict[str, tuple[BatchFile, int, float]] = {}
        self._ready: deque[SealedBatch] = deque()
        self._ended = False
        self._stopped = False
        self._error: BaseException | None = None
        #: Rows per object in batches the run stopped before they went up (the summary's).
        self.unsent: Counter[str] = Counter()

    # The reading thread

    def add(
        self,
        object: str,
        stream: str,
        row_id: str,
        line: bytes,
        seq: int,
        *,
        user_id: str | None = None,
    ) -> None:
        """Add one encoded row of record ``seq`` (an event for the Import API names its
        ``user_id``); blocks only while a sealed batch already waits."""
        with self._lock:
            entry = self._open.get(object)
            if entry is not None and not entry[0].fits(row_id, line):
                self._seal(object)
                entry = None
            if entry is None:
                batch = BatchFile(
                    object,
                    stream,
                    max_rows=self._max_rows,
                    max_bytes=self._max_bytes,
                    spool_dir=self._spool_dir,
                    hold=self._checkpoints.hold(seq, kind=object),
                )
                entry = self._open[object] = (batch, seq, self.clock.now())
                self._cond.notify_all()  # the lane may be idle, timing the oldest row
            batch = entry[0]
            batch.add(row_id, line, stream, user_id=user_id)
            batch.last_seq = seq
            if object == USERS:
                self.pending.note(batch.hold, row_id)
            if batch.full:
                self._seal(object)

    def supersede(self, object: str, row_id: str) -> bool:
        """A deletion of ``row_id`` arrived: leave its rows in the open batch out; True if any.

        Only the open batch: a sealed batch is already on its way, and Userpilot's daily
        deletion run erases what it upserts anyway.
        """
        with self._cond:
            entry = self._open.get(object)
            return entry is not None and entry[0].supersede(row_id)

    def flush(self, object: str) -> None:
        """Seal the open batch of ``object`` now: a full-table version ended (mirror deletes)."""
        with self._cond:
            if object in self._open and not self._stopped:
                self._seal(object)

    def durable(self, batch: SealedBatch) -> None:
        """The job holding ``batch`` completed (or it was empty): events of its users may go."""
        self.pending.done(batch.hold)

    def end_input(self) -> None:
        """No more rows: every open batch goes up, oldest first."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    # The lane's worker thread

    def take(self) -> SealedBatch | None:
        """The next batch for an idle lane; None once input ended and all went up, or on stop.

        Blocks while there is nothing to send: no sealed batch waits, and no open batch has waited
        ``wait_seconds`` since its oldest row.
        """
        with self._cond:
            while self._error is None:
                oldest = min(self._open.items(), key=lambda item: item[1][1], default=None)
                waited = 0.0 if oldest is None else self.clock.now() - oldest[1][2]
                aged = oldest is not None and not self._stopped
                aged = aged and (self._ended or waited >= self.wait_seconds)
                if (
                    aged
                    and oldest is not None
                    and (not self._ready or oldest[1][1] < _first_seq(self._ready[0]))
                ):
                    # The open batch holding the oldest row goes before a sealed but younger
                    # one: it is the batch STATE waits for.
                    self._seal(oldest[0], wait=False, front=True)
                if self._ready and self._ready[0].object == EVENTS and not self._users_first():
                    continue  # the events could not go after their users: left for the rerun
                if self._ready:
                    # Sealed batches go up even when the run is stopping: they hold only
                    # records from before the failure, and their STATE can still go out.
                    batch = self._ready.popleft()
                    self._cond.notify_all()
                    return batch
                if self._stopped or (oldest is None and self._ended):
                    return None
                self.clock.wait(self._cond, None if oldest is None else self.wait_seconds - waited)
            return None

    def _users_first(self) -> bool:
        """Put the oldest users batch in front of the next events batch while a users batch
        holds rows received before its last event or a user its events name; False when that
        batch is still open and the run is stopping (the events batch is then dropped, its hold
        kept: the rerun sends both in order).

        Only the oldest users batch may move ahead: users batches keep their order among
        themselves (last write wins). Called with the lock held, when the first ready batch is
        an events batch; no job of ours runs then, so every users row not yet in Userpilot is
        in a batch here.
        """
        events = self._ready[0]
        sealed = [batch for batch in self._ready if batch.object == USERS]
        entry = self._open.get(USERS)
        due = any(self._needed(events, b.hold, _first_seq(b)) for b in sealed)
        due = due or (entry is not None and self._needed(events, entry[0].hold, entry[1]))
        if not due:
            return True
        if sealed:
            self._ready.remove(sealed[0])
            self._ready.appendleft(sealed[0])
            return True
        if self._stopped:
            dropped = self._ready.popleft()
            self.unsent[dropped.object] += dropped.rows
            dropped.discard()
            return False
        self._seal(USERS, wait=False, front=True)
        return True

    def _needed(self, events: SealedBatch, hold: object, first_seq: int) -> bool:
        """Whether the users batch of ``hold`` must be in Userpilot before ``events`` goes."""
        return first_seq < events.last_seq or self.pending.holds_any(hold, events.users)

    def fail(self, error: BaseException) -> None:
        """The lane stopped with ``error``: a reading thread waiting for room raises it."""
        with self._cond:
            self._error = error
            self._stopped = True
            self._cond.notify_all()

    def stop(self) -> None:
        """The run is stopping: seal nothing more; ``take`` gives what is sealed, then None."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def discard(self) -> None:
        """Remove every batch file not sent (they hold personal data)."""
        with self._cond:
            self._stopped = True
            for batch, _, _ in self._open.values():
                self.unsent[batch.object] += batch.rows
                batch.discard()
            self._open.clear()
            while self._ready:
                sealed = self._ready.popleft()
                self.unsent[sealed.object] += sealed.rows
                sealed.discard()
            self._cond.notify_all()

    def _seal(self, object: str, *, wait: bool = True, front: bool = False) -> None:
        """Seal the open batch of ``object`` and queue it; the caller holds the lock.

        The reading thread (``wait``) blocks while a sealed batch already waits for the lane, so
        at most one batch waits on disk beside the open ones: memory and disk stay flat.
        """
        batch, _, _ = self._open.pop(object)
        sealed = batch.seal()  # removes its file if it fails (a full disk)
        try:
            while wait and self._ready and not self._stopped:
                self.clock.wait(self._cond)
        except BaseException:  # a signal while waiting: leave no file with personal data
            sealed.discard()
            raise
        if self._error is not None:
            sealed.discard()
            raise self._error
        if front:
            self._ready.appendleft(sealed)
        else:
            self._ready.append(sealed)
        self._cond.notify_all()


def _first_seq(batch: SealedBatch) -> int:
    return batch.hold.first_seq if batch.hold is not None else -1
