"""The events lane's spool: events received and not yet taken, on disk rather than in memory.

The reading thread appends and never blocks; the lane's dispatcher reads in input order. 100,000
events waiting for their users' jobs cost a file, not a heap. The file is the owner's only and is
removed when the lane closes: it holds personal data.
"""

from __future__ import annotations

import os
import tempfile

from target_userpilot.batch import spool_failure, spooling

#: What the events spool is called in a sentence about a failed write.
EVENTS_FILE = "the file of events waiting to be sent"


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
