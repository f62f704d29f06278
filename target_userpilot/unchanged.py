"""skip_unchanged: remember what Userpilot confirmed, and do not send it again.

Userpilot processes about 1,800 rows a minute, so a row not sent is the cheapest row there is. A
SQLite file keeps, per API host, object and profile id, a hash of the last row whose job
*completed*. A sealed batch drops rows whose hash matches; the rest are recorded only once their
own job completes, so a failed or interrupted run never marks anything as confirmed.

The trade-off: a change made inside Userpilot (by hand, or by another integration) is not
re-sent while the row in the warehouse stays the same. Delete the file to force a full resend.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable

from target_userpilot.batch import SealedBatch
from target_userpilot.errors import ConfigurationError
from target_userpilot.rows import id_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmed_rows (
    scope TEXT NOT NULL,
    object TEXT NOT NULL,
    id TEXT NOT NULL,
    hash BLOB NOT NULL,
    confirmed_at REAL NOT NULL,
    PRIMARY KEY (scope, object, id)
) WITHOUT ROWID
"""
_LOOKUP_CHUNK = 500


def row_hash(line: bytes) -> bytes:
    """A short fingerprint of one encoded row."""
    return hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).digest()


class ConfirmedRows:
    """The ``state_db`` file: row hashes Userpilot confirmed, shared safely between runs."""

    def __init__(self, path: str, scope: str) -> None:
        self.path = path
        self.scope = scope
        self._lock = threading.Lock()
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            # Two runs may share the file: WAL lets one read while the other writes, and the
            # timeout makes a writer wait for the other's transaction instead of failing.
            self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            verdict = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            with self._db:
                self._db.execute(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            msg = (
                f"state_db '{path}' cannot be used for skip_unchanged ({exc}). If it is damaged, "
                "move it away or delete it: the next run then re-sends every profile once."
            )
            raise ConfigurationError(msg) from None

    def drop_unchanged(self, batch: SealedBatch) -> int:
        """Rewrite ``batch`` without rows Userpilot already has; return how many were dropped.

        The fingerprints of the rows kept are stored on the batch, for :meth:`confirm`.
        """
        key = id_key(batch.object)
        keyed = [(json.loads(line)[key], row_hash(line), line) for line in batch.read_lines()]
        known = self._lookup(batch.object, [row_id for row_id, _, _ in keyed])
        kept = [
            (row_id, digest, line) for row_id, digest, line in keyed if known.get(row_id) != digest
        ]
        dropped = len(keyed) - len(kept)
        batch.fingerprints = [(row_id, digest) for row_id, digest, _ in kept]
        if dropped:
            batch.replace_lines([line for _, _, line in kept])
        return dropped

    def confirm(self, batch: SealedBatch) -> None:
        """Record the rows of a batch whose job completed."""
        fingerprints = batch.fingerprints
        if not fingerprints:
            return
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO confirmed_rows VALUES (?, ?, ?, ?, ?)",
                (
                    (self.scope, batch.object, row_id, digest, now)
                    for row_id, digest in fingerprints
                ),
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _lookup(self, object: str, ids: Iterable[str]) -> dict[str, bytes]:
        ids = list(ids)
        found: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = (
                    "SELECT id, hash FROM confirmed_rows "  # noqa: S608 - only placeholders
                    f"WHERE scope = ? AND object = ? AND id IN ({marks})"
                )
                found.update(self._db.execute(query, (self.scope, object, *chunk)).fetchall())
        return found
