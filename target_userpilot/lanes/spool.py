"""The events lane's spools: events received and not yet taken, on disk rather than in memory.

The reading thread appends and never waits for room; the lane's dispatcher reads in input
order. 100,000 events waiting for their users' jobs cost a file, not a heap. Events Userpilot
answered 404 (no such user), with the later events of their users, are set aside in a second
file (:class:`SetAside`) until this run's users are all in Userpilot. The files are the owner's
only and are removed when the lane closes: they hold personal data.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from target_userpilot.batching.batch import spool_failure, spooling
from target_userpilot.records.rows import encode_row

#: What the events spool is called in a sentence about a failed write.
EVENTS_FILE = "the file of events waiting to be sent"


@dataclass
class SpooledEvent:
    """One event waiting or in flight."""

    seq: int
    stream: str
    position: int
    key: str
    body: dict[str, Any]
    already_sent: bool = False
    #: Taken from the events set aside: sent after every users row of the run was loaded.
    replay: bool = False

    @property
    def user(self) -> str:
        """The Userpilot user the event belongs to."""
        return str(self.body.get("user_id"))

    def encoded(self) -> bytes:
        """The event as one spool line; raises ``InvalidRecord`` when it cannot be encoded."""
        item = {"s": self.seq, "t": self.stream, "p": self.position, "k": self.key}
        return encode_row({**item, "e": self.body})

    @classmethod
    def decoded(cls, line: bytes, *, replay: bool = False) -> SpooledEvent:
        """The event of one spool line."""
        item = json.loads(line)
        return cls(item["s"], item["t"], item["p"], item["k"], item["e"], replay=replay)


class EventSpool:
    """Events received and not yet taken, in an owner-only temp file: appended, read in order."""

    def __init__(self, spool_dir: str | None = None) -> None:
        self._spool_dir = spool_dir
        with spooling(EVENTS_FILE, spool_dir):
            fd, self.path = tempfile.mkstemp(
                prefix="userpilot-events-", suffix=".ndjson", dir=spool_dir
            )
        self._out = os.fdopen(fd, "wb")
        self._in = open(self.path, "rb")  # noqa: SIM115 - closed in discard()
        self.written = 0
        self.read = 0

    def append(self, line: bytes) -> None:
        """Add one encoded event (ending in a newline); readable at once."""
        try:
            self._out.write(line)
            self._out.flush()
        except OSError as exc:
            raise spool_failure(exc, EVENTS_FILE, self._spool_dir) from None
        self.written += 1

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` lines appended and not read yet."""
        lines = []
        for _ in range(min(limit, self.written - self.read)):
            lines.append(self._in.readline())
        self.read += len(lines)
        return lines

    def discard(self) -> None:
        """Close and remove the file (it holds personal data)."""
        for handle in (self._out, self._in):
            try:
                handle.close()
            except OSError:
                pass
        try:
            os.remove(self.path)
        except OSError:
            pass


class SetAside:
    """Events Userpilot answered 404 and the later events of their users, until the replay.

    Not thread-safe: the lane calls it under its lock. The file is made at the first event.
    """

    def __init__(self, spool_dir: str | None = None) -> None:
        self._spool_dir = spool_dir
        self._spool: EventSpool | None = None
        #: Users with an event set aside: their later events go behind it.
        self.users: set[str] = set()
        #: Seqs of the events set aside (a heap), and those of them finished.
        self._seqs: list[int] = []
        self._done: set[int] = set()
        #: Events set aside and not finished.
        self.count = 0

    def add(self, event: SpooledEvent) -> None:
        """Set ``event`` aside (after its user's earlier ones)."""
        if self._spool is None:
            self._spool = EventSpool(self._spool_dir)
        self._spool.append(event.encoded())
        self.users.add(event.user)
        heapq.heappush(self._seqs, event.seq)
        self.count += 1

    @property
    def unread(self) -> bool:
        """Whether events set aside are still to be taken."""
        return self._spool is not None and self._spool.written > self._spool.read

    def take(self, limit: int) -> list[SpooledEvent]:
        """Up to ``limit`` events, in the order they were set aside, marked for the replay."""
        if self._spool is None:
            return []
        return [SpooledEvent.decoded(line, replay=True) for line in self._spool.take(limit)]

    def finished(self, event: SpooledEvent) -> None:
        """An event taken for the replay was sent, refused or skipped."""
        self._done.add(event.seq)
        self.count -= 1

    def floor(self) -> int | None:
        """The oldest seq set aside and not finished (they are out of input order)."""
        seqs = self._seqs
        while seqs and seqs[0] in self._done:
            self._done.discard(heapq.heappop(seqs))
        return seqs[0] if seqs else None

    def discard(self) -> None:
        """Remove the file (it holds personal data)."""
        if self._spool is not None:
            self._spool.discard()
