"""The deletion lane: ``hard_delete`` turns deleted source records into Userpilot deletion requests.

Userpilot's deletion API (``DELETE /v1/users``, ``DELETE /v1/companies``) is GDPR erasure: it
schedules the profile and its events for Userpilot's daily deletion run (02:00 UTC), and cannot
be undone. It is not a bulk job, so it runs beside the job lane, at its own pace
(:class:`~target_userpilot.lanes.pace.DeletionPace`): at most one request every 2 s, measured
from the answer to the previous request.

Ids gather per object while the lane waits for its pace, so one request names many. A request
names at most ``size`` ids: Userpilot documents no maximum, so the lane starts from
``FIRST_REQUEST_IDS`` and halves it on every 413 (``batching/halves.py``, as the job lane halves
a batch file), keeping the size that worked for the rest of the run. A request is durable once
Userpilot answers 202; then its hold is released, so a STATE after its records can go out. The
ids of one request are deleted together, so a request holds the sequence number of its first
record.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_userpilot.batching.halves import first_half
from target_userpilot.checkpoints import Checkpoints, Hold
from target_userpilot.errors import PayloadTooLarge, UserpilotError, WaitInterrupted
from target_userpilot.lanes.base import Abandoned, Lane
from target_userpilot.lanes.pace import DELETE_INTERVAL_SECONDS, DeletionPace
from target_userpilot.retry import Stop
from target_userpilot.summary import RunSummary, count

logger = logging.getLogger("target_userpilot.lane")

#: Ids in the first request; Userpilot documents no maximum, a 413 halves it.
FIRST_REQUEST_IDS = 1000
#: Full requests that may wait before the reading thread waits for the lane: memory stays flat.
MAX_WAITING_REQUESTS = 20
#: Deleted ids remembered per object for the upsert-after-delete warning; past this many the
#: warning is best effort, so memory does not grow with the input.
REMEMBERED_DELETIONS = 100_000


class Deleter(Protocol):
    """What the lane needs from a client: the real one, or the dry run's."""

    def delete_profiles(
        self, object: str, ids: list[str], *, stop: Stop | None = None
    ) -> dict[str, Any]:
        """Request the deletion; no retry once ``stop`` is set (``WaitInterrupted``)."""
        ...


class DeletionHistory(Protocol):
    """The ledger's memory of deletions (``memory/history.py``)."""

    def already_deleted(self, object: str, ids: list[str]) -> set[str]: ...

    def deletion_sent(self, object: str, ids: list[str], streams: str) -> str: ...

    def deletion_accepted(self, object: str, ids: list[str], request_id: str) -> None: ...


@dataclass(eq=False)
class _Request:
    """Ids of one object to delete in one request, and the records they came from."""

    object: str
    first_seq: int
    hold: Hold | None
    ids: dict[str, str] = field(default_factory=dict)  # id -> stream; ordered, no repeats
    records: Counter[str] = field(default_factory=Counter)  # per stream


class DeletionLane(Lane):
    """Sends deletion requests, paced, and releases their STATE once Userpilot accepted them."""

    def __init__(
        self,
        deleter: Deleter,
        checkpoints: Checkpoints,
        summary: RunSummary,
        *,
        pace: DeletionPace | None = None,
        interval: float = DELETE_INTERVAL_SECONDS,
        size: int = FIRST_REQUEST_IDS,
        mark_deleted: Callable[[str, Iterable[str]], None] | None = None,
        forget: Callable[[str, Iterable[str]], None] | None = None,
        accepted: Callable[[str, list[str]], None] | None = None,
        history: DeletionHistory | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        pace = pace if pace is not None else DeletionPace(interval)
        # The lane waits for its pace on the pace's clock.
        super().__init__(clock=pace.clock, on_failure=on_failure)
        self._deleter = deleter
        #: The ledger's memory: ids deleted in an earlier run are not requested again.
        self._history = history
        self._checkpoints = checkpoints
        self._summary = summary
        #: One request every ``interval`` seconds (``pace`` given: its own).
        self.pace = pace
        #: Ids per request: halved on 413, then kept for the rest of the run.
        self.size = size
        #: skip_unchanged: a deleted profile is marked at once (a later row of it in this run
        #: is sent), and leaves the ledger once per request, before the request goes out (a
        #: later run sends its rows): no ledger I/O per record on the reading thread.
        self._mark_deleted = mark_deleted
        self._forget = forget
        #: Mirror deletes: ids Userpilot accepted leave the ledger's versions (worker thread).
        self._accepted = accepted
        self._open: dict[str, _Request] = {}
        self._full: deque[_Request] = deque()
        #: Ids deleted in this run, per object: an upsert of one of them gets a warning.
        self._deleted: dict[str, set[str]] = {}
        self._in_flight = False
        self.requests = 0
        #: Ids of requests a stop cut short (the rest of them was never asked for).
        self._cut_short = 0

    # The reading thread

    def add(self, object: str, stream: str, row_id: str, seq: int) -> None:
        """Queue the deletion of ``row_id`` of ``object``, asked by record ``seq`` of ``stream``."""
        self.raise_error()
        if self._mark_deleted is not None:
            self._mark_deleted(object, (row_id,))
        with self._cond:
            deleted = self._deleted.setdefault(object, set())
            if len(deleted) < REMEMBERED_DELETIONS:
                deleted.add(row_id)
            request = self._open.get(object)
            if request is None:
                request = _Request(object, seq, self._checkpoints.hold(seq))
                self._open[object] = request
            request.ids[row_id] = stream
            request.records[stream] += 1
            if len(request.ids) >= self.size:
                del self._open[object]
                self._full.append(request)
                while (
                    len(self._full) > MAX_WAITING_REQUESTS
                    and self._error is None
                    and not self._stopping
                ):
                    self.clock.wait(self._cond)
            self._cond.notify_all()
            start = not self._threads and not self._stopping
        if start:
            self._start(self._work, "userpilot-deletion-lane")
        self.raise_error()

    def was_deleted(self, object: str, row_id: str) -> bool:
        """True when this run queued the deletion of ``row_id`` (reading thread only)."""
        deleted = self._deleted.get(object)
        return deleted is not None and row_id in deleted

    # What differs from the other lanes

    def unsent(self) -> int:
        """Ids whose deletion was never asked for: queued, or in a request a stop cut short."""
        with self._cond:
            queued = sum(len(r.ids) for r in [*self._full, *self._open.values()])
            return queued + self._cut_short

    @property
    def interval(self) -> float:
        """Seconds between two requests."""
        return self.pace.interval

    @override
    @property
    def busy(self) -> bool:
        """True while a deletion request is in flight."""
        return self._in_flight

    @override
    def wait_idle(self) -> None:
        """Block until every queued deletion was accepted by Userpilot; raise what stopped it.

        After a stop, only until the request in flight ended: the others are never sent.
        """
        with self._cond:
            while (
                self._error is None
                and not self._abandon.is_set()
                and (self._in_flight or (not self._stopping and (self._open or self._full)))
            ):
                self.clock.wait(self._cond)  # the worker, a failure and a stop notify
        self.raise_error()

    # ``send_sealed`` is ignored: even after an ordinary failure no further request goes out.
    # Erasure cannot be undone, and the rerun from the last STATE asks for these deletions again.

    # The worker thread

    def _work(self) -> None:
        while (request := self._take()) is not None:
            try:
                self._send(request)
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()

    def _take(self) -> _Request | None:
        """The request holding the oldest deletion, once the pace allows; None when stopping."""
        with self._cond:
            while not self._stopping:
                waiting = [*self._full, *self._open.values()]
                if waiting:
                    delay = self.pace.delay()
                    if delay <= 0:
                        request = min(waiting, key=lambda r: r.first_seq)
                        if request in self._full:
                            self._full.remove(request)
                        else:
                            del self._open[request.object]
                        self._in_flight = True
                        self._cond.notify_all()  # a reader waiting for room
                        return request
                    self.clock.wait(self._cond, delay)
                else:
                    self.clock.wait(self._cond)
            return None

    def _send(self, request: _Request) -> None:
        """Send ``request`` in pieces of ``size`` ids; a 413 halves the size and retries."""
        ids = list(request.ids)
        records = Counter(request.records)
        if self._forget is not None:
            self._forget(request.object, ids)
        if self._history is not None:
            earlier = self._history.already_deleted(request.object, ids)
            if earlier:
                ids = [row_id for row_id in ids if row_id not in earlier]
                skipped = Counter(request.ids[row_id] for row_id in earlier)
                records -= skipped
                self._summary.deletions_remembered(dict(skipped))
                one = len(earlier) == 1
                logger.info(
                    "%s %s deleted by a request Userpilot accepted in an earlier run and %s "
                    "still deleted in the source: not requested again.",
                    _ids(len(earlier), request.object),
                    "was" if one else "were",
                    "is" if one else "are",
                )
        try:
            self._send_pieces(request, ids)
        except (Abandoned, WaitInterrupted) as stopped:
            # A stop ended the wait for the pace or before a retry: the rest of the request is
            # never asked for (erasure cannot be undone; the rerun asks for these ids again).
            with self._cond:
                self._cut_short += len(ids)
            if isinstance(stopped, WaitInterrupted):
                logger.warning(
                    "%s The deletion of %s was not requested; the rerun from the last STATE "
                    "asks for it.",
                    stopped,
                    _ids(len(ids), request.object),
                )
            raise Abandoned from None
        self._summary.deletions_done(dict(records))
        self._checkpoints.release(request.hold)

    def _send_pieces(self, request: _Request, ids: list[str]) -> None:
        """Ask for ``ids`` in pieces of ``size``, taking each accepted piece off ``ids``."""
        while ids:
            piece = ids[: self.size]
            # A stop ends the wait, and no piece starts after it (a 413's other halves
            # included): erasure cannot be undone, the rerun asks for these ids again.
            self._wait(self.pace.delay())
            request_id = ""
            if self._history is not None:
                streams = ",".join(sorted({request.ids[row_id] for row_id in piece}))
                request_id = self._history.deletion_sent(request.object, piece, streams)
            try:
                # Neither the ids nor Userpilot's answer (which may repeat them) are logged, at
                # any level: they name the people whose erasure was asked for.
                self._deleter.delete_profiles(request.object, piece, stop=self._stop_event)
            except PayloadTooLarge:
                self.pace.answered()
                half = first_half(len(piece))
                if half is None:
                    msg = (
                        f"Userpilot refused a deletion request naming a single {request.object} "
                        "id as too large (HTTP 413), so it cannot be split further. No STATE was "
                        "written past that record; check the ids the stream sends and rerun."
                    )
                    raise UserpilotError(msg) from None
                self.size = half
                logger.warning(
                    "Userpilot refused a deletion request of %s as too large (HTTP 413); "
                    "sending at most %s per request from now on.",
                    _ids(len(piece), request.object),
                    count(self.size, "id"),
                )
                continue
            self.pace.answered()
            self.requests += 1
            del ids[: len(piece)]
            if self._history is not None:
                self._history.deletion_accepted(request.object, piece, request_id)
            if self._accepted is not None:
                self._accepted(request.object, piece)
            logger.info(
                "Userpilot accepted deletion request %d (%s).",
                self.requests,
                _ids(len(piece), request.object),
            )


def _ids(n: int, object: str) -> str:
    """``1 id of users``, ``3 ids of companies``: how many profiles, never which."""
    return f"{count(n, 'id')} of {object}"
