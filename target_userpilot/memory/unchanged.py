"""skip_unchanged: do not send a row Userpilot will already hold.

Userpilot processes about 1,800 rows a minute, so a row not sent is the cheapest row there is.
The ledger (``state_db``) keeps, per account, object and profile id, a hash of the last row
whose job *completed*; entries are recorded only once their own job completes, so a failed or
interrupted run never marks anything as confirmed.

A row is compared with what Userpilot will hold once every earlier row is applied, not with the
ledger alone: rows submitted in this run whose jobs have not completed yet are newer than the
ledger. They are kept in memory (the *pending* hashes) until their job completes; a sealed batch
is compared with them first and with the ledger only for ids that have none. Without this, ``u1
plan=pro`` in one batch and ``u1 plan=free`` in the next, with ``free`` confirmed by an earlier
run, would skip the second row while the first was still in flight, and Userpilot would end at
``pro``.

The trade-off: a change made inside Userpilot (by hand, or by another integration) is not re-sent
while the row in the warehouse stays the same. Delete the ledger's entries to force a resend.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.store import Ledger
from target_userpilot.records.routing import id_key

#: The pending mark of a profile deleted in this run: Userpilot will hold nothing for it, so no
#: row equals it.
_DELETED = b""


def row_hash(line: bytes) -> bytes:
    """A short fingerprint of one encoded row."""
    return hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).digest()


class ConfirmedRows:
    """Drops rows Userpilot will already hold, and records rows once their job completes.

    ``drop_unchanged`` runs on the reading thread as a batch is sealed, ``confirm`` on the job
    watcher thread once that batch's job completed, ``forget`` on the reading thread as a
    deletion is queued; they may overlap.
    """

    def __init__(self, ledger: Ledger | str, scope: str) -> None:
        """Use ``ledger``, or open the one a ``state_db`` string names (then owned and closed here).

        ``scope`` separates accounts sharing one ledger (``ledger/scope.py``), or is ``dry-run``.
        """
        self._owned = isinstance(ledger, str)
        self.ledger = open_ledger(ledger) if isinstance(ledger, str) else ledger
        self.scope = scope
        self._lock = threading.Lock()
        #: (object, id) -> hash of the newest row submitted in this run and not yet confirmed.
        self._pending: dict[tuple[str, str], bytes] = {}
        #: Profiles deleted in this run: kept out of the ledger until the run ends, since
        #: Userpilot's daily deletion may also erase a profile re-created after the request.
        self._deleted: set[tuple[str, str]] = set()

    def drop_unchanged(self, batch: SealedBatch) -> int:
        """Rewrite ``batch`` without rows Userpilot will already hold; return how many went.

        The fingerprints of the rows kept are stored on the batch, for :meth:`confirm`.
        """
        key = id_key(batch.object)
        keyed = [(json.loads(line)[key], row_hash(line), line) for line in batch.read_lines()]
        # Pending hashes first, then the ledger for the rest: a confirm on the watcher writes
        # the ledger before it clears the pending hash, so every id is seen in one of them.
        with self._lock:
            known = {
                row_id: self._pending[(batch.object, row_id)]
                for row_id, _, _ in keyed
                if (batch.object, row_id) in self._pending
            }
        missing = [row_id for row_id, _, _ in keyed if row_id not in known]
        if missing:
            known.update(self.ledger.row_hashes(self.scope, batch.object, missing))
        kept = [entry for entry in keyed if known.get(entry[0]) != entry[1]]
        dropped = len(keyed) - len(kept)
        batch.fingerprints = [(row_id, digest) for row_id, digest, _ in kept]
        with self._lock:
            for row_id, digest, _ in kept:
                self._pending[(batch.object, row_id)] = digest
        if dropped:
            batch.replace_lines([line for _, _, line in kept])
        return dropped

    def confirm(self, batch: SealedBatch) -> None:
        """Record the rows of a batch whose job completed (job watcher thread)."""
        fingerprints = batch.fingerprints
        if not fingerprints:
            return
        with self._lock:
            lasting = [
                (row_id, digest)
                for row_id, digest in fingerprints
                if (batch.object, row_id) not in self._deleted
            ]
        # The ledger first, then the pending hashes: a lookup between the two finds the row
        # pending, never neither.
        self.ledger.save_row_hashes(self.scope, batch.object, lasting)
        with self._lock:
            for row_id, digest in fingerprints:
                entry = (batch.object, row_id)
                # A newer row of the same profile, submitted since, stays pending.
                if self._pending.get(entry) == digest:
                    del self._pending[entry]

    def forget(self, object: str, ids: Iterable[str]) -> None:
        """Profiles deleted: they leave the ledger, and any later row of them is sent."""
        ids = list(ids)
        self.mark_deleted(object, ids)
        self.forget_stored(object, ids)

    def mark_deleted(self, object: str, ids: Iterable[str]) -> None:
        """Profiles deleted, in this run's memory: any later row of them is sent, and no row
        of them in flight is confirmed. Per record on the reading thread: no ledger I/O."""
        with self._lock:
            for row_id in ids:
                self._pending[(object, row_id)] = _DELETED
                self._deleted.add((object, row_id))

    def forget_stored(self, object: str, ids: Iterable[str]) -> None:
        """Profiles deleted leave the ledger, so a later run sends their rows: one statement per
        deletion request, before it is sent (``DeletionLane``)."""
        self.ledger.forget_rows(self.scope, object, list(ids))

    def close(self) -> None:
        """Close the ledger, if this object opened it."""
        if self._owned:
            self.ledger.close()
