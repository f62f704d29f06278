"""Batch files: one upload's worth of rows of one Userpilot object, spooled to disk as NDJSON.

A batch belongs to an object (users, companies, or events for the Import API), not to a stream:
rows for one profile from any stream go into the same batch in input order, so Userpilot applies
them in that order. Rows go to a temporary file as they arrive, so memory holds only the ids of
the open batch, never its rows. Rows that share an id within one batch are merged when the batch
is sealed: the result is what Userpilot would hold after applying them in order, at the cost of
one row of its processing rate instead of several. Events are not merged: an event is one line,
and a second line with the same key is the same event again, left out (it would count twice).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from target_userpilot.batching.halves import first_half
from target_userpilot.errors import SpoolUnwritable
from target_userpilot.records.routing import EVENTS, id_key
from target_userpilot.records.rows import encode_row, merge_rows
from target_userpilot.records.values import decode_line

#: What a spooled batch is called in a sentence about a failed write.
BATCH_FILE = "a batch file"
#: Bytes a spool file holds in memory before they are written (once per open batch at most).
SPOOL_BUFFER_BYTES = 1 << 20


@dataclass
class SealedBatch:
    """A finished batch file, ready for upload, with what the summary needs to know."""

    object: str
    stream: str
    path: str
    rows: int
    bytes: int
    merged: int = 0
    #: Released (made durable for STATE) when the job holding the batch's last row completes.
    hold: Any = None
    #: ``(id, row hash)`` of each row, set by skip_unchanged and recorded once the job completes.
    # builtins.bytes: inside this class, ``bytes`` names the field above.
    fingerprints: list[tuple[str, builtins.bytes]] | None = field(default=None, repr=False)
    #: The stream of each row (of its last record), for the summary's per-stream counts.
    row_streams: dict[str, str] = field(default_factory=dict, repr=False)
    #: Records folded into a later row of the same profile, per stream (for events: repeats
    #: of an event already in the batch, left out).
    merged_by_stream: dict[str, int] = field(default_factory=dict, repr=False)
    #: The sequence number of the batch's last record (events wait for users before it).
    last_seq: int = -1
    #: An events file: the users its events name (their pending upserts go up first).
    users: set[str] = field(default_factory=set, repr=False)
    #: The name the job lane uploads it under (unique: it holds the run id).
    filename: str = ""

    def rows_by_stream(self) -> dict[str, int]:
        """Rows per stream; a row counts for the stream of its last record."""
        if not self.row_streams:
            return {self.stream: self.rows} if self.rows else {}
        return dict(Counter(self.row_streams.values()))

    @property
    def streams(self) -> str:
        """The streams whose rows the batch holds, for messages."""
        names = sorted(set(self.row_streams.values())) or [self.stream]
        return ", ".join(f"'{name}'" for name in names)

    def read_lines(self) -> list[builtins.bytes]:
        """All lines of the file, for splitting and for skip_unchanged (uploads stream it)."""
        with open(self.path, "rb") as handle:
            return handle.readlines()

    def split(self, spool_dir: str | None = None) -> tuple[SealedBatch, SealedBatch]:
        """Two halves of this batch (``halves.py``), for a server that refused it as too large
        (HTTP 413); a batch of one row has none (``ValueError``).

        Only the second half keeps the hold: halves are uploaded one after the other through the
        one job lane, so when the second completes the first has too.
        """
        lines = self.read_lines()
        middle = first_half(len(lines))
        if middle is None:
            raise ValueError("a batch of one row cannot be split")
        prints = self.fingerprints
        halves = []
        for start, end, hold, merged in (
            (0, middle, None, 0),
            (middle, None, self.hold, self.merged),
        ):
            part = lines[start:end]
            with spooling(BATCH_FILE, spool_dir):
                handle, path = _spool_file(spool_dir, f"{self.object}-part-")
                with handle:
                    handle.writelines(part)
            half = SealedBatch(
                self.object,
                self.stream,
                path,
                len(part),
                sum(len(line) for line in part),
                merged,
                hold,
            )
            if prints is not None:
                half.fingerprints = prints[start:end]
            if self.row_streams and self.object == EVENTS:
                # An event's key is not in its line: the keys are in line order instead.
                items = list(self.row_streams.items())[start:end]
                half.row_streams = dict(items)
            elif self.row_streams:
                key = id_key(self.object)
                ids = (json.loads(line)[key] for line in part)
                half.row_streams = {row_id: self.row_streams[row_id] for row_id in ids}
            half.last_seq = self.last_seq
            half.users = self.users
            if hold is not None:
                half.merged_by_stream = dict(self.merged_by_stream)
            halves.append(half)
        self.discard()
        return halves[0], halves[1]

    def replace_lines(self, lines: list[builtins.bytes]) -> None:
        """Rewrite the file with ``lines`` (a subset of its rows), counting rows and bytes anew."""
        folder = os.path.dirname(self.path)
        with spooling(BATCH_FILE, folder):
            handle, path = _spool_file(folder, f"{self.object}-")
            with handle:
                handle.writelines(lines)
            os.replace(path, self.path)
        self.rows = len(lines)
        self.bytes = sum(len(line) for line in lines)
        if self.row_streams:
            key = id_key(self.object)
            kept = {json.loads(line)[key] for line in lines}
            self.row_streams = {i: s for i, s in self.row_streams.items() if i in kept}

    def drop_events(self, sent: set[str]) -> dict[str, int]:
        """Leave out the events whose keys are in ``sent``; return how many, per stream.

        An events batch's keys are its ``row_streams``, in line order; the file is streamed,
        never read whole.
        """
        dropped: dict[str, int] = {}
        kept: dict[str, str] = {}
        size = 0
        handle, path = _spool_file(os.path.dirname(self.path), f"{self.object}-")
        with handle, open(self.path, "rb") as source:
            for (key, stream), line in zip(self.row_streams.items(), source, strict=False):
                if key in sent:
                    dropped[stream] = dropped.get(stream, 0) + 1
                    continue
                handle.write(line)
                size += len(line)
                kept[key] = stream
        os.replace(path, self.path)
        self.rows, self.bytes, self.row_streams = len(kept), size, kept
        return dropped

    def discard(self) -> None:
        """Remove the file from disk."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _Filling(Protocol):
    """What the batch rule reads of a batch being filled: a run's file or a plan's batch."""

    max_rows: int
    max_bytes: int
    records: int
    bytes: int

    @property
    def rows(self) -> int: ...


def fits_limits(batch: _Filling, *, new_row: bool, line_bytes: int) -> bool:
    """The one rule for whether a row still goes in ``batch`` (a run's batch files, and the
    batches a plan fills so that its counts are the run's): a new profile needs a free row, and
    every line counts toward the byte limit (not the merged size: the bound stays safe without
    re-reading). A first line always goes in: a row larger than the limit is refused earlier."""
    if new_row and batch.rows >= batch.max_rows:
        return False
    return batch.records == 0 or batch.bytes + line_bytes <= batch.max_bytes


class BatchFile:
    """An open batch: NDJSON lines appended to a temporary file, counted in rows and bytes."""

    def __init__(
        self,
        object: str,
        stream: str,
        *,
        max_rows: int,
        max_bytes: int,
        spool_dir: str | None = None,
        hold: Any = None,
    ) -> None:
        self.object = object
        self.stream = stream
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.hold = hold
        self.records = 0
        self.bytes = 0
        self.last_seq = -1
        self._spool_dir = spool_dir
        with spooling(BATCH_FILE, spool_dir):
            self._handle, self._path = _spool_file(spool_dir, f"{object}-")
        self._lines_per_id: dict[str, int] = {}
        self._row_streams: dict[str, str] = {}
        self._merged_by_stream: dict[str, int] = {}
        #: Per id, how many of its first lines a deletion superseded: left out at seal.
        self._superseded: dict[str, int] = {}
        #: An events file: the users its events name.
        self.users: set[str] = set()

    @property
    def rows(self) -> int:
        """Distinct profiles in the batch: what Userpilot will process."""
        return len(self._lines_per_id)

    @property
    def full(self) -> bool:
        """True when no further row can be added."""
        return self.rows >= self.max_rows

    def fits(self, row_id: str, line: bytes) -> bool:
        """Whether adding ``line`` keeps the file within the row and byte limits."""
        return fits_limits(self, new_row=row_id not in self._lines_per_id, line_bytes=len(line))

    def add(
        self, row_id: str, line: bytes, stream: str | None = None, *, user_id: str | None = None
    ) -> None:
        """Append one encoded row of ``stream`` (the batch's own stream if not given); an
        event names its ``user_id``."""
        stream = stream or self.stream
        if user_id is not None:
            self.users.add(user_id)
        seen = self._lines_per_id.get(row_id, 0)
        if seen and self.object == EVENTS:
            # The same event (its key) twice: Userpilot would count it twice, so once only.
            self._merged_by_stream[stream] = self._merged_by_stream.get(stream, 0) + 1
            return
        try:
            self._handle.write(line)
        except OSError as exc:
            raise spool_failure(exc, BATCH_FILE, self._spool_dir) from None
        self.bytes += len(line)
        self.records += 1
        self._lines_per_id[row_id] = seen + 1
        if seen:
            # The earlier row is folded into this one: its record counts as merged on its own
            # stream, and the row that is sent counts for this record's stream.
            folded = self._row_streams[row_id]
            self._merged_by_stream[folded] = self._merged_by_stream.get(folded, 0) + 1
        self._row_streams[row_id] = stream

    def supersede(self, row_id: str) -> bool:
        """A deletion of ``row_id`` arrived: its rows so far are left out; True if it had any.

        Sending them would refresh a profile the source deleted. Rows of the id added after
        this call are kept (an upsert after the delete).
        """
        lines = self._lines_per_id.pop(row_id, 0)
        if not lines:
            return False
        self._superseded[row_id] = self._superseded.get(row_id, 0) + lines
        del self._row_streams[row_id]
        return True

    def seal(self) -> SealedBatch:
        """Close the file, merging rows that share an id, and return it ready for upload.

        If that fails (a full disk), the file is removed before the error goes on.
        """
        left_out = sum(self._superseded.values())
        merged = self.records - self.rows - left_out
        size = self.bytes
        try:
            with spooling(BATCH_FILE, self._spool_dir):
                self._handle.close()  # the last rows reach the disk here
                if merged or left_out:
                    size = self._merge_duplicates()
        except BaseException:
            self.discard()
            raise
        return SealedBatch(
            self.object,
            self.stream,
            self._path,
            self.rows,
            size,
            merged,
            self.hold,
            row_streams=self._row_streams,
            merged_by_stream=self._merged_by_stream,
            last_seq=self.last_seq,
            users=self.users,
        )

    def discard(self) -> None:
        """Close and remove the file (used when a run stops before the batch is sent)."""
        try:
            self._handle.close()
        except OSError:
            pass  # rows still buffered could not reach a full disk: they are thrown away anyway
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def _merge_duplicates(self) -> int:
        """Rewrite the file with one row per id, at the position of the id's last row.

        Rows a deletion superseded are left out. Only rows of repeated ids are held in memory,
        and only until the file is rewritten.
        """
        key = id_key(self.object)
        pending: dict[str, dict[str, Any]] = {}
        seen: dict[str, int] = {}
        skip = dict(self._superseded)
        handle, path = _spool_file(self._spool_dir, f"{self.object}-merged-")
        size = 0
        try:
            size = self._write_merged(handle, key, pending, seen, skip)
        except BaseException:
            _remove(path)
            raise
        os.replace(path, self._path)
        return size

    def _write_merged(
        self,
        handle: IO[bytes],
        key: str,
        pending: dict[str, dict[str, Any]],
        seen: dict[str, int],
        skip: dict[str, int],
    ) -> int:
        size = 0
        with handle, open(self._path, "rb") as source:
            for line in source:
                row = decode_line(line)  # read back to encode to the same bytes
                row_id = row[key]
                if skip.get(row_id):
                    skip[row_id] -= 1
                    continue
                total = self._lines_per_id[row_id]
                if total == 1:
                    handle.write(line)
                    size += len(line)
                    continue
                earlier = pending.get(row_id)
                pending[row_id] = merge_rows(earlier, row) if earlier else row
                seen[row_id] = seen.get(row_id, 0) + 1
                if seen[row_id] == total:
                    out = encode_row(pending.pop(row_id))
                    handle.write(out)
                    size += len(out)
        return size


@contextmanager
def spooling(what: str, folder: str | None) -> Iterator[None]:
    """Turn a failed write of a spool file into :class:`SpoolUnwritable`, naming the folder."""
    try:
        yield
    except OSError as exc:
        raise spool_failure(exc, what, folder) from None


def spool_failure(exc: OSError, what: str, folder: str | None) -> SpoolUnwritable:
    """The sentence for a spool file that could not be written: where, why, and what to do.

    The file's rows are personal data and never part of it; the folder is the operator's own.
    """
    where = os.path.abspath(folder or tempfile.gettempdir())
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        msg = (
            f"No space left in {where} while writing {what} ({reason}). Free space there, or "
            "point TMPDIR at a folder on a larger disk, then rerun from the last STATE: "
            "nothing after it was lost."
        )
    else:
        msg = (
            f"Could not write {what} in {where} ({reason}). Check that the folder exists and "
            "is writable, or point TMPDIR at another folder, then rerun from the last STATE."
        )
    return SpoolUnwritable(msg)


def _spool_file(spool_dir: str | None, prefix: str) -> tuple[IO[bytes], str]:
    """A named temporary file we own (it must outlive the handle, for upload and retry).

    Written through a large buffer: a row is about half a kilobyte, and the default 8 KiB
    buffer made a write system call every 15 rows, on the reading thread.
    """
    fd, path = tempfile.mkstemp(
        prefix=f"target-userpilot-{prefix}", suffix=".ndjson", dir=spool_dir
    )
    return os.fdopen(fd, "wb", buffering=SPOOL_BUFFER_BYTES), path


def _spool_lines(spool_dir: str | None, prefix: str, lines: list[bytes]) -> str:
    """A new spool file holding ``lines``; nothing is left behind if writing fails."""
    handle, path = _spool_file(spool_dir, prefix)
    try:
        with handle:
            handle.writelines(lines)
    except BaseException:
        _remove(path)
        raise
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
