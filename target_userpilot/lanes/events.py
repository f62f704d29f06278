"""The events lane: one ``POST /v1/track`` per event, paced, in order, each sent once in effect.

Events are not idempotent and Userpilot takes them one request at a time, at 600 a minute per
key. So this lane differs from the job lane in three ways:

- **Order.** Userpilot needs the user first. An event goes out only once every users row
  received before it is in a completed bulk job (``checkpoints.wait_durable``), and once no users
  batch holds an upsert of its user (``pending.py``: open, sealed or in a job), whatever the order
  of the streams. A 404 ("no such user") sets the event aside, with its user's later events;
  once the input has ended and every users row of the run is in Userpilot, the events set aside
  go once more, and a 404 then rejects the event. One user's events go one at a time, so they
  arrive (and are stamped) in input order.
- **Pace.** Requests are spread evenly under ``events_per_minute`` (:class:`EventPace`) and go
  out on a few connections at once, so the round trip does not cap the rate. A 429 pauses for
  its ``Retry-After`` and slows the pace; successes bring it back. The pace alone says when the
  refused event goes again; a stop ends that wait, and the event waits for the rerun.
- **Once in effect.** Each accepted event's key is written to the ledger as Userpilot accepts
  it, before the event counts as durable; an event whose key is there is skipped. One sent
  without a clear answer is never sent again. A crash duplicates at most the events in flight.

Events wait on disk (``spool.py``), not in memory. STATE waits for them through one hold at
the oldest unfinished event.

The lane's lock guards its own state only: the ledger is looked up, and holds are moved (which
may write STATE), outside it, so :meth:`EventLane.add` on the reading thread never waits for
the ledger, stdout or the lane's threads. Every wait here is on the lane's clock (its pace's),
notified when what it waits for changes and when the lane stops.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from target_userpilot.batching.pending import PendingUsers
from target_userpilot.checkpoints import Checkpoints, Hold
from target_userpilot.errors import (
    EventRefused,
    TransientError,
    Unconfirmed,
    UserNotFound,
    WaitInterrupted,
)
from target_userpilot.lanes.base import Lane
from target_userpilot.lanes.pace import EventPace, connections_for
from target_userpilot.lanes.progress import PROGRESS_EVERY_SECONDS, EventCounts, EventProgress
from target_userpilot.lanes.spool import EventSpool, SetAside, SpooledEvent
from target_userpilot.ledger.store import EVENT_ACCEPTED, TRACK, UNCONFIRMED
from target_userpilot.records.routing import USERS
from target_userpilot.rejects import RejectLog
from target_userpilot.retry import Stop
from target_userpilot.summary import RunSummary, count

logger = logging.getLogger("target_userpilot.events")

#: Events read from the spool at once: one ledger lookup covers them all.
LOOKAHEAD = 500
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
        self,
        scope: str,
        stream: str,
        keys: Iterable[str],
        name: str | None = None,
        *,
        user_id: str | None = None,
        run_id: str | None = None,
        via: str | None = None,
        outcome: str | None = None,
    ) -> None: ...

    def close(self) -> None: ...


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
        run_id: str | None = None,
        connections: int | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        spool_dir: str | None = None,
        progress_every: float = PROGRESS_EVERY_SECONDS,
        pending: PendingUsers | None = None,
    ) -> None:
        # Every wait of the lane is on its pace's clock.
        super().__init__(clock=pace.clock, on_failure=on_failure)
        self._client = client
        self._checkpoints = checkpoints
        self._summary = summary
        self._rejects = rejects
        self.pace = pace
        self._keys = keys
        self._scope = scope
        #: Names the run in each accepted key's entry (``userpilot-ledger history``).
        self._run_id = run_id
        if connections is None:
            connections = connections_for(pace.limit)
        self.connections = connections
        self._spool = EventSpool(spool_dir)
        #: The users whose upserts are not in Userpilot yet (the buffer's): events wait for them.
        self._pending = pending
        #: Events set aside for a 404 (and the later events of their users), in that order.
        self._parked = SetAside(spool_dir)
        #: The input has ended (every users row of the run is numbered below ``_users_end``).
        self._input_ended = False
        self._users_end = 0
        #: The events set aside are being sent again.
        self._replaying = False
        self._parked_said = False
        self._lookahead: deque[SpooledEvent] = deque()
        #: Events taken from the spool whose keys the ledger is being asked about (outside the
        #: lane's lock): unfinished, on their way to the lookahead.
        self._filling: list[SpooledEvent] = []
        #: Seq of every event taken from the lookahead and not finished, and their keys.
        self._inflight: dict[int, str] = {}
        self._accepted_since_lookup: set[str] = set()
        self._unread_floor: int | None = None
        #: The lane's hold, at its oldest unfinished event; moved under ``_hold_lock``.
        self._hold: Hold | None = None
        #: Holds ``add`` opened for an event that came while nothing was unfinished, until the
        #: lane's hold covers it.
        self._entry_holds: list[Hold] = []
        #: Serialises moving the hold (which may write STATE): never taken by ``add``.
        self._hold_lock = threading.Lock()
        #: Connections free for an event (under the lane's lock).
        self._free = connections
        #: The dispatcher has ended (under the lane's lock).
        self._dispatch_ended = False
        #: Events for the senders; None, last, tells them to stop.
        self._handoff: deque[SpooledEvent | None] = deque()
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
        self._progress = EventProgress(pace, progress_every)
        self._start(self._dispatch, "userpilot-events")
        for n in range(connections):
            self._start(self._send_loop, f"userpilot-track-{n}")

    # The reading thread

    def add(self, stream: str, seq: int, position: int, key: str, event: dict[str, Any]) -> None:
        """Queue one event of record ``seq`` (the ``position``-th of ``stream``); never waits for
        room, a request, the ledger or stdout.

        It appends a line to the spool under the lane's lock, which no thread holds while it
        sends, asks the ledger or writes STATE (only for its own state and the spool files'
        reads and writes), and opens a hold (dictionary work in the checkpoints) when nothing
        of the lane was unfinished, so the next STATE waits for this event.
        Raises :class:`~target_userpilot.errors.InvalidRecord` when the event cannot be encoded.
        """
        line = SpooledEvent(seq, stream, position, key, event).encoded()
        with self._cond:
            if self._nothing_unfinished():
                self._entry_holds.append(self._checkpoints.hold(seq, kind="events"))
            if self._spool.read == self._spool.written:
                self._unread_floor = seq  # the first event not read yet
            self._spool.append(line)
            self.received += 1
            self._cond.notify_all()

    def end_input(self) -> None:
        """All input is read: say how many events are left and how long they take at this pace."""
        with self._cond:
            self._input_ended = True
            self._users_end = self._checkpoints.next_seq  # read on the reading thread's behalf
            self._cond.notify_all()
        self._progress.end_of_input(self._counts())

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
                if self._stopping and self._dispatch_ended and self._handed == 0:
                    break
                self.clock.wait(self._cond)
        self.raise_error()
        self._log_progress(final=True)

    # ``send_sealed`` is ignored on a stop: waiting events are many and slow to send, so they
    # wait for the rerun; only the events already handed to a sender go out.

    @override
    def _stopped(self, *, send_sealed: bool) -> None:
        self._wake_other_waits()

    @override
    def _failed(self, exc: BaseException) -> None:
        self._wake_other_waits()

    def _wake_other_waits(self) -> None:
        """The dispatcher may wait on the checkpoints or the pending users: wake it there."""
        self._checkpoints.wake()
        if self._pending is not None:
            self._pending.wake()

    def _quitting(self) -> bool:
        """Whether a wait of the dispatcher ends without its event: the lane stops or failed."""
        return self._stopping or self._abandon.is_set() or self._error is not None

    @override
    def _release(self) -> None:
        """Remove the spools (they hold personal data)."""
        with self._cond:
            self._spool.discard()
            self._parked.discard()

    # Holds: one, at the oldest event not finished, so STATE waits for every event before it.

    def _nothing_unfinished(self) -> bool:
        return (
            not self._inflight
            and not self._lookahead
            and not self._filling
            and self._spool.read == self._spool.written
            and not self._parked.count
        )

    def _oldest_unfinished(self) -> int | None:
        floor = None
        if self._inflight:
            floor = min(self._inflight)
        elif self._lookahead:
            floor = self._lookahead[0].seq
        elif self._filling:
            floor = self._filling[0].seq
        elif self._spool.written > self._spool.read:
            floor = self._unread_floor
        # Events set aside for a 404 are out of input order: their oldest counts apart.
        parked = self._parked.floor()
        if parked is not None and (floor is None or parked < floor):
            return parked
        return floor

    def _move_hold(self) -> None:
        """Keep the lane's hold at the oldest unfinished event; the holds ``add`` opened meanwhile
        go (the lane's covers their events). Called outside the lane's lock, since a release may
        write STATE, by whichever thread finished or set aside an event."""
        with self._hold_lock:
            with self._cond:
                floor = self._oldest_unfinished()
                stale: list[Hold | None] = [*self._entry_holds]
                self._entry_holds = []
                current = self._hold
                if current is None or current.first_seq != floor:
                    # The new hold first: between the two, STATE must never see no hold at all.
                    self._hold = None if floor is None else self._checkpoints.hold(floor, "events")
                    stale.append(current)
            for hold in stale:
                self._checkpoints.release(hold)

    # The dispatcher thread: order, ledger, pace

    def _dispatch(self) -> None:
        try:
            while (event := self._next_event()) is not None:
                if self._skip_if_sent(event):
                    self._move_hold()
                    continue
                turn = self._await_turn(event)
                if turn is None:
                    return
                if not turn:
                    self._move_hold()
                    continue  # set aside behind an earlier event of its user
                if not self._await_users(event) or not self._await_upserts(event):
                    return
                if not self._await_sender():
                    return
                if not self._progress.started:
                    self._progress.start(self._counts())
                if not self._await_slot():
                    with self._cond:
                        self._free += 1
                        self._cond.notify_all()
                    return
                with self._cond:
                    # Only this thread claims a user, so none took it since _await_turn.
                    self._busy_users.add(event.user)
                    self._handoff.append(event)
                    self._handed += 1
                    self._cond.notify_all()
                self._log_progress()
        finally:
            with self._cond:
                self._handoff.append(None)  # tells senders to stop
                self._dispatch_ended = True
                self._cond.notify_all()

    def _next_event(self) -> SpooledEvent | None:
        """The next event in input order, marked as taken; None when the lane stops. Once the
        input has ended, nothing is in flight and this run's users are all in Userpilot, the
        events set aside for a 404 follow, in the order they were set aside."""
        while True:
            with self._cond:
                while not self._lookahead and not self._refill():
                    if self._stopping or self._error is not None:
                        return None
                    if self._replay_due():
                        break
                    self.clock.wait(self._cond)  # add, a finished event and a stop notify
                if self._stopping or self._error is not None:
                    return None
                if self._lookahead:
                    event = self._lookahead.popleft()
                    self._inflight[event.seq] = event.key
                    return event
                filling = self._filling
            if filling:
                # Outside the lane's lock: the reading thread adds events meanwhile.
                self._look_up(filling)
                with self._cond:
                    self._lookahead.extend(filling)
                    self._filling = []
                continue
            # Outside the lane's lock: the checkpoints may be writing STATE meanwhile.
            if self._checkpoints.wait_durable(
                USERS, self._users_end, clock=self.clock, give_up=self._quitting
            ):
                self._start_replay()

    def _refill(self) -> bool:
        """Take the next events for the empty lookahead (under the lock): from the spool, or in
        the replay from the events set aside; those the ledger must be asked about wait in
        ``_filling``."""
        if self._spool.written > self._spool.read:
            self._take_events()
            return True
        if self._replaying and self._parked.unread:
            self._take_events(replay=True)
            return True
        return False

    def _replay_due(self) -> bool:
        """Whether the replay may start, but for this run's users: input ended, none in flight."""
        return (
            not self._replaying and self._input_ended and not self._inflight and self._parked.unread
        )

    def _start_replay(self) -> None:
        with self._cond:
            self._replaying = True
            parked = self._parked.count
            self._cond.notify_all()
        logger.info(
            "Every users row of this run is in Userpilot: sending the %s set aside for a user "
            "Userpilot did not know (HTTP 404) once more, each user's in input order. A 404 now "
            "rejects the event.",
            count(parked, "event"),
        )

    def _take_events(self, *, replay: bool = False) -> None:
        """Take the next events (in the replay, those set aside), under the lock: into the
        lookahead, or, with a ledger, into ``_filling`` for one lookup of them all."""
        if replay:
            events = self._parked.take(LOOKAHEAD)
        else:
            events = [SpooledEvent.decoded(line) for line in self._spool.take(LOOKAHEAD)]
        if not replay and self._spool.written > self._spool.read:
            self._unread_floor = events[-1].seq + 1  # a lower bound of what is still unread
        # Before the lookup: an event accepted from here on may not show in it.
        self._accepted_since_lookup.clear()
        if self._keys is None:
            self._lookahead.extend(events)
        else:
            self._filling = events

    def _look_up(self, events: list[SpooledEvent]) -> None:
        """Mark the events the ledger already has as accepted: one lookup per stream."""
        assert self._keys is not None
        by_stream: dict[str, list[SpooledEvent]] = {}
        for event in events:
            by_stream.setdefault(event.stream, []).append(event)
        for stream, group in by_stream.items():
            found = self._keys.accepted_events(self._scope, stream, [e.key for e in group])
            for event in group:
                event.already_sent = event.key in found

    def _skip_if_sent(self, event: SpooledEvent) -> bool:
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

    def _await_users(self, event: SpooledEvent) -> bool:
        """Wait until every users row before the event is in a completed job; False when the
        lane stops meanwhile."""
        return self._checkpoints.wait_durable(
            USERS, event.seq, clock=self.clock, give_up=self._quitting
        )

    def _await_upserts(self, event: SpooledEvent) -> bool:
        """Wait until no users batch holds an upsert of the event's user, whatever the order of
        the streams (open, sealed or in a job); False when the lane stops meanwhile.

        Only the batches that hold one now: a row of that user received later updates a profile
        that exists by then, and a user updated in every batch never holds its events back.
        """
        if self._pending is None:
            return True
        batches = self._pending.of(event.user)
        return not batches or self._pending.wait_done(
            batches, clock=self.clock, give_up=self._quitting
        )

    def _await_turn(self, event: SpooledEvent) -> bool | None:
        """Wait until no event of the same user is in flight (one user's events then arrive in
        input order). False when the event was set aside behind an earlier event of its user
        that Userpilot answered 404; None when the lane stops meanwhile."""
        user = event.user
        with self._cond:
            while user in self._busy_users:
                if self._abandon.is_set() or self._error is not None:
                    return None
                self.clock.wait(self._cond)  # a sender's finished event notifies
            if user in self._parked.users and not event.replay:
                self._park(event)
                return False
        return True

    def _await_slot(self) -> bool:
        """Wait for the event's slot of the pace; False when the lane stops meanwhile (no
        event starts after a stop). A 429 met meanwhile pauses this slot too."""
        slot: float | None = self.pace.reserve()
        while slot is not None:
            if self.clock.wait(self._stop_event, max(0.0, slot - self.clock.now())):
                return False
            slot = self.pace.recheck(slot)
        return True

    def _await_sender(self) -> bool:
        """Wait for a free connection; False when the lane stops meanwhile."""
        with self._cond:
            while not self._free:
                if self._stopping or self._error is not None:
                    return False
                self.clock.wait(self._cond)  # a sender's finished event notifies
            self._free -= 1
        return True

    # The sender threads

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._handoff:
                    self.clock.wait(self._cond)  # a handed event, or the end, notifies
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
                    self._busy_users.discard(event.user)
                    self._free += 1
                    self._cond.notify_all()

    def _send(self, event: SpooledEvent) -> None:
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
        except UserNotFound as exc:
            if event.replay:
                self._refuse(event, f"{exc} (sent after every users row of this run was loaded)")
                return
            # A 404 proves Userpilot did not record the event, so sending it once more is no
            # guess. Its user may come later in the input (the events stream first): it waits.
            with self._cond:
                self._park(event)
                first = not self._parked_said
                self._parked_said = True
            self._move_hold()
            if first:
                logger.info(
                    "Userpilot has no user for an event of stream '%s' (record %d, HTTP 404): "
                    "with its user's later events, it goes once more when the input has ended "
                    "and this run's users are in Userpilot; STATE waits (said once per run).",
                    event.stream,
                    event.position,
                )
            return
        except EventRefused as exc:
            self._refuse(event, str(exc))
            return
        except Unconfirmed as exc:
            self._unconfirmed(event, exc)
            return
        # Recorded before it counts as durable: a crash from here on duplicates only this one.
        self._record_key(event, EVENT_ACCEPTED)
        self.pace.accepted()
        with self._cond:
            self.sent += 1
            self._unconfirmed_in_a_row = 0
            self._summary.add(event.stream, "events_sent", finished=True)
            self._accepted_since_lookup.add(event.key)
            self._finish(event)
        self._move_hold()

    def _record_key(self, event: SpooledEvent, outcome: str) -> None:
        """The event's key into the ledger, with its user, name and run: never sent again."""
        if self._keys is not None:
            self._keys.add_accepted_events(
                self._scope,
                event.stream,
                [event.key],
                name=event.body["event_name"],
                user_id=event.user,
                run_id=self._run_id,
                via=TRACK,
                outcome=outcome,
            )

    def _refuse(self, event: SpooledEvent, reason: str) -> None:
        """Userpilot refused the event: a rejected record."""
        with self._cond:
            self.refused += 1
        # With on_invalid_record 'fail' this raises and the event stays unfinished: its hold
        # keeps every later STATE back, as for a bad record read from the input.
        self._rejects.reject(event.stream, event.position, reason, event.body)
        with self._cond:
            self._finish(event)
        self._move_hold()

    def _park(self, event: SpooledEvent) -> None:
        """Set ``event`` aside for the replay (called under the lock; the caller then moves the
        hold). It stays unfinished, so STATE waits for it, and its user's later events go
        behind it."""
        self._parked.add(event)
        self._inflight.pop(event.seq, None)
        self._cond.notify_all()

    def _unconfirmed(self, event: SpooledEvent, exc: Unconfirmed) -> None:
        """Sent, no clear answer: maybe in Userpilot. A second copy could count twice, so it is
        done with as if accepted (key in the ledger, STATE past it), counted apart, said once;
        many in a row stop the run, so the events after them wait for a rerun instead."""
        self._record_key(event, UNCONFIRMED)
        with self._cond:
            self.unconfirmed += 1
            self._unconfirmed_in_a_row += 1
            first, in_a_row = self.unconfirmed == 1, self._unconfirmed_in_a_row
            self._summary.add(event.stream, "events_unconfirmed")
            self._accepted_since_lookup.add(event.key)
            self._finish(event)
        self._move_hold()
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

    def _finish(self, event: SpooledEvent) -> None:
        """The event is accepted, refused or skipped (called under the lock; the caller then
        moves the hold, outside it)."""
        self._inflight.pop(event.seq, None)
        if event.replay:
            self._parked.finished(event)
        self._cond.notify_all()

    # Telling the operator (``progress.py``)

    def _counts(self) -> EventCounts:
        with self._cond:
            done = self._done()
            return EventCounts(self.received, self.sent, self.skipped, self.refused, done)

    def _log_progress(self, *, final: bool = False) -> None:
        if self._progress.due(final=final):
            self._progress.report(self._counts())
