"""The events lane: one ``POST /v1/track`` per event, paced, in order, each sent once in effect.

Events are not idempotent and Userpilot takes them one request at a time, at 600 a minute per
key. So this lane differs from the job lane in three ways:

- **Order.** An event goes out only once every users row received before it is in a completed
  bulk job (Userpilot needs the user first): it waits in ``checkpoints.wait_durable`` for the
  users holds before its record. It does not wait for companies, nor for rows received after it.
  One user's events go one at a time, so they arrive (and are stamped) in input order.
- **Pace.** Requests are spread evenly under ``events_per_minute`` (:class:`EventPace`) and go
  out on a few connections at once, so the round trip does not cap the rate. A 429 pauses for
  its ``Retry-After`` and slows the pace; successes bring it back. The pace alone says when the
  refused event goes again; a stop ends that wait, and the event waits for the rerun.
- **Once in effect.** Each accepted event's key is written to the ledger as Userpilot accepts
  it, before the event counts as durable; an event whose key is there is skipped. One sent
  without a clear answer is never sent again. A crash duplicates at most the events in flight.

Events wait on disk (``spool.py``), not in memory. STATE waits for them through one hold at
the oldest unfinished event.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from target_userpilot.checkpoints import Checkpoints, Hold
from target_userpilot.errors import EventRefused, TransientError, Unconfirmed, WaitInterrupted
from target_userpilot.lanes.base import Lane
from target_userpilot.lanes.pace import EventPace, connections_for
from target_userpilot.lanes.spool import EventSpool
from target_userpilot.rejects import RejectLog
from target_userpilot.retry import Stop
from target_userpilot.rows import USERS, encode_row
from target_userpilot.summary import RunSummary, duration

logger = logging.getLogger("target_userpilot.events")

#: How often, at most, the lane reports its progress at INFO.
PROGRESS_EVERY_SECONDS = 30.0
#: Events read from the spool at once: one ledger lookup covers them all.
LOOKAHEAD = 500
#: How long a waiting thread sleeps before it looks again whether the lane is stopping.
TICK = 0.2
#: Unconfirmed events in a row that stop the run: Userpilot or the network is failing.
MAX_UNCONFIRMED_IN_A_ROW = 10


class Tracker(Protocol):
    """What the lane needs from a client: the real one, or the dry run's."""

    def track(
        self,
        user_id: str,
        event_name: str,
        metadata: dict[str, Any] | None,
        *,
        stop: Stop | None = None,
    ) -> None:
        """Send one event; no retry once ``stop`` is set (``WaitInterrupted``: not taken)."""
        ...


class EventKeys(Protocol):
    """What the lane needs of the ledger (``state_db``): see ``ledger.Ledger``."""

    def accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]: ...

    def add_accepted_events(
        self, scope: str, stream: str, keys: Iterable[str], name: str | None = None
    ) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Event:
    """One event waiting or in flight."""

    seq: int
    stream: str
    position: int
    key: str
    body: dict[str, Any]
    already_sent: bool = False


class EventLane(Lane):
    """Sends events to ``/v1/track``: after their users, paced, once each, on a few connections."""

    def __init__(
        self,
        client: Tracker,
        checkpoints: Checkpoints,
        summary: RunSummary,
        rejects: RejectLog,
        *,
        pace: EventPace,
        keys: EventKeys | None,
        scope: str,
        connections: int | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        spool_dir: str | None = None,
        progress_every: float = PROGRESS_EVERY_SECONDS,
    ) -> None:
        super().__init__(on_failure=on_failure)
        self._client = client
        self._checkpoints = checkpoints
        self._summary = summary
        self._rejects = rejects
        self.pace = pace
        self._keys = keys
        self._scope = scope
        self._progress_every = progress_every
        if connections is None:
            connections = connections_for(pace.limit)
        self.connections = connections
        self._spool = EventSpool(spool_dir)
        self._lookahead: deque[_Event] = deque()
        #: Seq of every event taken from the lookahead and not finished, and their keys.
        self._inflight: dict[int, str] = {}
        self._accepted_since_lookup: set[str] = set()
        self._unread_floor: int | None = None
        self._hold: Hold | None = None
        self._free = threading.Semaphore(connections)
        #: Events for the senders; None, last, tells them to stop.
        self._handoff: deque[_Event | None] = deque()
        #: Events handed to the senders and not finished.
        self._handed = 0
        #: Users with an event handed to a sender and not finished (one at most each).
        self._busy_users: set[str] = set()
        self.received = 0
        self.sent = 0
        self.skipped = 0
        self.refused = 0
        self.unconfirmed = 0
        self._unconfirmed_in_a_row = 0
        #: True once a stop cut a sender's retry short (said once).
        self._interrupted = False
        self._started: float | None = None
        self._last_progress = 0.0
        self._sent_at_progress = 0
        self._start(self._dispatch, "userpilot-events")
        self._dispatcher = self._threads[0]
        for n in range(connections):
            self._start(self._send_loop, f"userpilot-track-{n}")

    # The reading thread

    def add(self, stream: str, seq: int, position: int, key: str, event: dict[str, Any]) -> None:
        """Queue one event of record ``seq`` (the ``position``-th of ``stream``); never blocks.

        Raises :class:`~target_userpilot.errors.InvalidRecord` when the event cannot be encoded.
        """
        line = encode_row({"s": seq, "t": stream, "p": position, "k": key, "e": event})
        with self._cond:
            if self._spool.read == self._spool.written:
                self._unread_floor = seq  # the first event not read yet
            self._spool.append(line)
            self.received += 1
            self._move_hold()
            self._cond.notify_all()

    def end_input(self) -> None:
        """All input is read: say how many events are left and how long they take at this pace."""
        rate = self.pace.per_minute()
        with self._cond:
            left = self.received - self._done()
        if rate is None or left < 1 or self._started is None:
            return  # not started: the first progress line will say it
        logger.info(
            "All input read: %d events left to send, about %s at %.0f a minute.",
            left,
            duration(left / rate * 60),
            rate,
        )

    # What differs from the other lanes

    @override
    @property
    def busy(self) -> bool:
        """True while an event waits or is in flight."""
        with self._cond:
            return not self._nothing_unfinished()

    def unsent(self) -> int:
        """Events received and not finished (not accepted, refused, skipped or unconfirmed)."""
        with self._cond:
            return self.received - self._done()

    @property
    def sending(self) -> bool:
        """True while an event is handed to a sender and not finished."""
        with self._cond:
            return self._handed > 0

    @override
    def wait_idle(self) -> None:
        """Block until every event received is accepted, refused or skipped.

        After a stop, only until the events in flight ended: at 600 a minute the events still
        waiting can take hours, and they wait for the rerun.
        """
        with self._cond:
            while self._error is None and not self._nothing_unfinished():
                if self._abandon.is_set():
                    break
                stopped = self._stopping and not self._dispatcher.is_alive()
                if stopped and self._handed == 0:
                    break
                self._cond.wait(TICK)
        self.raise_error()
        self._log_progress(final=True)

    # ``send_sealed`` is ignored on a stop: waiting events are many and slow to send, so they
    # wait for the rerun; only the events already handed to a sender go out.

    @override
    def _release(self) -> None:
        """Remove the spool (it holds personal data)."""
        with self._cond:
            self._spool.discard()

    # Holds: one, at the oldest event not finished, so STATE waits for every event before it.

    def _nothing_unfinished(self) -> bool:
        return (
            not self._inflight and not self._lookahead and self._spool.read == self._spool.written
        )

    def _oldest_unfinished(self) -> int | None:
        if self._inflight:
            return min(self._inflight)
        if self._lookahead:
            return self._lookahead[0].seq
        if self._spool.written > self._spool.read:
            return self._unread_floor
        return None

    def _move_hold(self) -> None:
        """Keep the lane's hold at the oldest unfinished event (called under the lock)."""
        floor = self._oldest_unfinished()
        current = self._hold
        if current is not None and current.first_seq == floor:
            return
        # The new hold first: between the two, STATE must never see no hold at all.
        self._hold = None if floor is None else self._checkpoints.hold(floor, kind="events")
        self._checkpoints.release(current)

    # The dispatcher thread: order, ledger, pace

    def _dispatch(self) -> None:
        try:
            while (event := self._next_event()) is not None:
                if self._skip_if_sent(event):
                    continue
                if not self._await_users(event) or not self._await_turn(event):
                    return
                if not self._await_sender():
                    return
                self._announce()
                if not self._await_slot():
                    self._free.release()
                    return
                with self._cond:
                    # Only this thread claims a user, so none took it since _await_turn.
                    self._busy_users.add(str(event.body.get("user_id")))
                    self._handoff.append(event)
                    self._handed += 1
                    self._cond.notify_all()
                self._log_progress()
        finally:
            with self._cond:
                self._handoff.append(None)  # tells senders to stop
                self._cond.notify_all()

    def _next_event(self) -> _Event | None:
        """The next event in input order, marked as taken; None when the lane stops."""
        with self._cond:
            while not self._lookahead:
                if self._stopping or self._error is not None:
                    return None
                if self._spool.written > self._spool.read:
                    break
                self._cond.wait(TICK)
            if not self._lookahead:
                self._fill_lookahead()
            if self._stopping or self._error is not None:
                return None
            event = self._lookahead.popleft()
            self._inflight[event.seq] = event.key
            return event

    def _fill_lookahead(self) -> None:
        """Read the next events from the spool and ask the ledger about all of them at once."""
        events = []
        for line in self._spool.take(LOOKAHEAD):
            item = json.loads(line)
            events.append(_Event(item["s"], item["t"], item["p"], item["k"], item["e"]))
        if self._spool.written > self._spool.read:
            self._unread_floor = events[-1].seq + 1  # a lower bound of what is still unread
        self._lookahead.extend(events)
        self._accepted_since_lookup.clear()
        if self._keys is None:
            return
        by_stream: dict[str, list[_Event]] = {}
        for event in events:
            by_stream.setdefault(event.stream, []).append(event)
        for stream, group in by_stream.items():
            found = self._keys.accepted_events(self._scope, stream, [e.key for e in group])
            for event in group:
                event.already_sent = event.key in found

    def _skip_if_sent(self, event: _Event) -> bool:
        """An event the ledger (or this run) already has goes no further."""
        with self._cond:
            key = event.key
            taken = any(k == key for s, k in self._inflight.items() if s != event.seq)
            if not (event.already_sent or taken or key in self._accepted_since_lookup):
                return False
            self.skipped += 1
            self._summary.add(event.stream, "events_skipped")
            self._finish(event)
            return True

    def _await_users(self, event: _Event) -> bool:
        """Wait until every users row before the event is in a completed job."""
        while not self._checkpoints.wait_durable(USERS, event.seq, TICK):
            if self._stopping or self._abandon.is_set() or self._error is not None:
                return False
        return True

    def _await_turn(self, event: _Event) -> bool:
        """Wait until no event of the same user is in flight (one user's events then arrive in
        input order); False when the lane stops meanwhile."""
        user = str(event.body.get("user_id"))
        with self._cond:
            while user in self._busy_users:
                if self._abandon.is_set() or self._error is not None:
                    return False
                self._cond.wait(TICK)
        return True

    def _await_slot(self) -> bool:
        """Wait for the event's slot of the pace; False when the lane stops meanwhile (no
        event starts after a stop). A 429 met meanwhile pauses this slot too."""
        slot: float | None = self.pace.reserve()
        while slot is not None:
            if self._stop_event.wait(max(0.0, slot - self.pace.clock())):
                return False
            slot = self.pace.recheck(slot)
        return True

    def _await_sender(self) -> bool:
        """Wait for a free connection; False when the lane stops meanwhile."""
        while not self._free.acquire(timeout=TICK):
            if self._stopping or self._error is not None:
                return False
        return True

    # The sender threads

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._handoff:
                    self._cond.wait(TICK)
                event = self._handoff[0]
                if event is None:
                    return  # left in place: every sender sees it
                self._handoff.popleft()
            try:
                # Handed over just before a stop: not started after it.
                if self._error is None and not self._stopping:
                    self._send(event)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                self._fail(exc)
            finally:
                with self._cond:
                    self._handed -= 1
                    self._busy_users.discard(str(event.body.get("user_id")))
                    self._cond.notify_all()
                self._free.release()

    def _send(self, event: _Event) -> None:
        body = event.body
        try:
            self._client.track(
                body["user_id"], body["event_name"], body.get("metadata"), stop=self._stop_event
            )
        except WaitInterrupted as exc:
            # Refused in a way that proves it was not taken (a 429), and the stop came before
            # the retry: unsent, unfinished (its hold keeps STATE back), sent by the rerun.
            with self._cond:
                first, self._interrupted = not self._interrupted, True
            if first:  # once: every sender waiting out the same 429 meets the same stop
                logger.warning("%s The events not sent are left for the rerun.", exc)
            return
        except EventRefused as exc:
            with self._cond:
                self.refused += 1
                self._summary.add(event.stream, "rejected")
            # With on_invalid_record 'fail' this raises and the event stays unfinished: its
            # hold keeps every later STATE back, as for a bad record read from the input.
            self._rejects.reject(event.stream, event.position, str(exc), body)
            with self._cond:
                self._finish(event)
            return
        except Unconfirmed as exc:
            self._unconfirmed(event, exc)
            return
        # Recorded before it counts as durable: a crash from here on duplicates only this one.
        if self._keys is not None:
            self._keys.add_accepted_events(
                self._scope, event.stream, [event.key], name=body["event_name"]
            )
        self.pace.accepted()
        with self._cond:
            self.sent += 1
            self._unconfirmed_in_a_row = 0
            self._summary.add(event.stream, "events_sent", finished=True)
            self._accepted_since_lookup.add(event.key)
            self._finish(event)

    def _unconfirmed(self, event: _Event, exc: Unconfirmed) -> None:
        """Sent, no clear answer: maybe in Userpilot. A second copy could count twice, so it is
        done with as if accepted (key in the ledger, STATE past it), counted apart, said once;
        many in a row stop the run, so the events after them wait for a rerun instead."""
        if self._keys is not None:
            self._keys.add_accepted_events(
                self._scope, event.stream, [event.key], name=event.body["event_name"]
            )
        with self._cond:
            self.unconfirmed += 1
            self._unconfirmed_in_a_row += 1
            first, in_a_row = self.unconfirmed == 1, self._unconfirmed_in_a_row
            self._summary.stream(event.stream).events_unconfirmed += 1
            self._accepted_since_lookup.add(event.key)
            self._finish(event)
        if first:
            logger.warning(
                "An event of stream '%s' (record %d) got no clear answer from Userpilot (%s). It "
                "is not sent again, by this run or a rerun: a second copy could count twice. The "
                "summary counts such events as 'unconfirmed' (said once per run).",
                event.stream,
                event.position,
                exc,
            )
        if in_a_row >= MAX_UNCONFIRMED_IN_A_ROW:
            raise TransientError(
                f"{in_a_row} events in a row got no clear answer from Userpilot (the last: {exc})"
                "; they are not sent again, and the events after them were not sent. Check "
                "Userpilot's status and the network, then rerun from the last STATE."
            )

    def _done(self) -> int:
        """Events finished one way or another: sent, skipped, refused or unconfirmed."""
        return self.sent + self.skipped + self.refused + self.unconfirmed

    def _finish(self, event: _Event) -> None:
        """The event is accepted, refused or skipped (called under the lock)."""
        self._inflight.pop(event.seq, None)
        self._move_hold()
        self._cond.notify_all()

    # Telling the operator

    def _announce(self) -> None:
        """The first event about to go: say how long the events received so far will take."""
        if self._started is not None:
            return
        self._started = self._last_progress = time.monotonic()
        rate = self.pace.per_minute()
        with self._cond:
            waiting = self.received - self._done()
        if rate is None:
            logger.info("Dry run: writing %d event request bodies (and any that follow).", waiting)
            return
        logger.info(
            "Sending events to Userpilot, one request each, at up to %.0f a minute "
            "(events_per_minute): the %d received so far take about %s at this pace.",
            rate,
            waiting,
            duration(waiting / rate * 60),
        )

    def _log_progress(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._started is None or (
            not final and now - self._last_progress < self._progress_every
        ):
            return
        with self._cond:
            sent, received = self.sent, self.received
            skipped, refused = self.skipped, self.refused
            done = self._done()
            window = now - self._last_progress
            recent = sent - self._sent_at_progress
            self._last_progress, self._sent_at_progress = now, sent
        left = received - done
        elapsed = now - self._started
        observed = (recent / window * 60) if window > 0 and recent else sent / elapsed * 60
        rate = observed if observed > 0 else self.pace.per_minute() or 0.0
        eta = f", about {duration(left / rate * 60)} left" if rate > 0 and left else ""
        logger.info(
            "Events: %d of %d received sent (%d skipped as already sent, %d refused), "
            "%.0f a minute%s.",
            sent,
            received,
            skipped,
            refused,
            rate,
            eta,
        )
