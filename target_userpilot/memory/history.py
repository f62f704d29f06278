"""The sync history a run writes, and the deletions it remembers between runs.

The job lane reports each upload (job id, the ids and row hashes it holds) and how its job ended;
the deletion lane reports each deletion request and Userpilot's 202. :class:`SyncHistory` turns
those into a few set-based writes per job (``ledger/store.py``), so the cost per row stays
small, and answers the two questions the lanes ask between runs:

- **Was this deletion already accepted?** A tap re-reading rows at its bookmark sends the same
  soft-deleted ids every run. An id whose deletion Userpilot accepted, and which the source has
  not sent live since, is not requested again: the deletion is irreversible and already
  scheduled (or done).
- **Is this upsert about to be erased?** Userpilot erases the profiles whose deletion it accepted
  at its next daily run, 02:00 UTC. An upsert of such an id before that run may be erased too:
  it gets a warning, and its row hash is not recorded, so a ``skip_unchanged`` rerun after
  02:00 UTC sends it again. After that run the profile is gone: an upsert creates a new one.

A remembered deletion stops holding back deletion requests as soon as the source sends the
profile live again (its job completes): Userpilot may or may not erase that upsert at 02:00 UTC,
so a later deletion of it is a new request. Until that deletion run has passed, every upsert of
the profile is warned about and kept out of the skip_unchanged ledger; an upsert after it
creates a new profile, and the remembered deletion is dropped. Otherwise it does not end with
time: while the source keeps the row deleted, Userpilot keeps it erased, and asking again
would only cost pace.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.ledger.store import DELETION, JOB, Ledger, SentJob
from target_userpilot.memory.unchanged import row_hash
from target_userpilot.records.routing import EVENTS, id_key
from target_userpilot.summary import count

logger = logging.getLogger("target_userpilot")

#: Userpilot's daily deletion run, in UTC hours.
DELETION_HOUR_UTC = 2


def erasure_time(accepted_at: float) -> float:
    """When Userpilot erases a profile whose deletion it accepted at ``accepted_at`` (epoch s)."""
    accepted = datetime.fromtimestamp(accepted_at, timezone.utc)
    run = accepted.replace(hour=DELETION_HOUR_UTC, minute=0, second=0, microsecond=0)
    if run <= accepted:
        run += timedelta(days=1)
    return run.timestamp()


class SyncHistory:
    """Writes one run's jobs and deletions to the ledger; remembers accepted deletions.

    ``job_sent`` and ``job_ended`` run on the job lane's thread, the deletion methods on the
    deletion lane's: each call is one ledger transaction, made outside any lock of the run.
    """

    def __init__(
        self,
        ledger: Ledger,
        scope: str,
        run_id: str,
        *,
        keep: int,
        clock: Callable[[], float] = time.time,
        keep_out: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        """``keep`` entries per profile (0: no history); ``keep_out`` hears ids to leave out
        of the skip_unchanged ledger (upserts Userpilot may still erase)."""
        self.ledger = ledger
        self.scope = scope
        self.run_id = run_id
        self.keep = keep
        self._clock = clock
        self._keep_out = keep_out
        self._started = clock()
        #: Most ledgers remember no deletion: then no upsert needs a lookup.
        self._any_deletions = ledger.has_remembered_deletions(scope)
        if self._any_deletions:
            # Userpilot's deletion run follows an acceptance within a day.
            ledger.prune_deletions(scope, self._started - 2 * 86400)
        #: The ids of the job in flight (one at a time), for the check once it completes.
        self._sent_ids: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        self._requests = 0

    # The job lane

    def job_sent(self, batch: SealedBatch, job_id: str) -> None:
        """A batch was uploaded as ``job_id``: the job, and an entry per profile it holds.

        An events file (Import API) is a job with no profile entries: its events are kept one
        per key, with their user, name and time, as the file is settled (``imported.py``).
        """
        rows = [] if batch.object == EVENTS else _ids_and_hashes(batch)
        self._sent_ids[job_id] = [row_id for row_id, _ in rows]
        job = SentJob(
            job_id, self.run_id, JOB, batch.object, _stream_names(batch), batch.rows, self._clock()
        )
        self.ledger.record_sent(self.scope, job, rows, self.keep)

    def job_ended(self, batch: SealedBatch, job_id: str, outcome: str) -> None:
        """The job ended (``completed``, ``failed``, ``timed out``)."""
        ids = self._sent_ids.pop(job_id, [])
        self.ledger.record_outcome(self.scope, job_id, outcome, self._clock())
        if outcome == "completed" and ids and self._any_deletions:
            self._live_again(batch, ids)

    def _live_again(self, batch: SealedBatch, ids: list[str]) -> None:
        """Profiles whose deletion Userpilot accepted are live in the source again."""
        found = self.ledger.remembered_deletions(self.scope, batch.object, ids)
        if not found:
            return
        now = self._clock()
        pending = sorted(i for i, (at, _) in found.items() if now < erasure_time(at))
        held_back = set(pending)
        # Deletions accepted in this run were warned about as the upsert arrived (sinks.py).
        earlier = [i for i in pending if found[i][0] < self._started]
        if earlier and batch.object not in self._warned:
            self._warned.add(batch.object)
            first = min(erasure_time(found[i][0]) for i in earlier)
            one = len(earlier) == 1
            logger.warning(
                "%s of %s %s sent again after Userpilot accepted %s deletion in an earlier run; "
                "Userpilot's deletion run at %s may erase %s as well. Rerun after it (with "
                "skip_unchanged %s then sent again).",
                count(len(earlier), f"{batch.object} profile"),
                batch.streams,
                "was" if one else "were",
                "its" if one else "their",
                datetime.fromtimestamp(first, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "it" if one else "them",
                "it is" if one else "they are",
            )
        if pending:
            if self._keep_out is not None:
                self._keep_out(batch.object, pending)
            self.ledger.mark_upserted(self.scope, batch.object, pending, now)
        # Past Userpilot's deletion run, the upsert made a new profile: a later deletion of it
        # is a new request.
        erased = [i for i in found if i not in held_back]
        if erased:
            self.ledger.forget_deletions(self.scope, batch.object, erased)

    # The deletion lane

    def already_deleted(self, object: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` Userpilot already accepted the deletion of, and not sent live since."""
        if not self._any_deletions or not ids:
            return set()
        found = self.ledger.remembered_deletions(self.scope, object, ids)
        return {row_id for row_id, (_, again) in found.items() if again is None}

    def deletion_sent(self, object: str, ids: Sequence[str], streams: str) -> str:
        """A deletion request is about to go: note it; its id for :meth:`deletion_accepted`."""
        self._requests += 1
        request_id = f"deletion-{self.run_id}-{self._requests:05d}"
        job = SentJob(request_id, self.run_id, DELETION, object, streams, len(ids), self._clock())
        self.ledger.record_sent(self.scope, job, [(i, None) for i in ids], self.keep)
        return request_id

    def deletion_accepted(self, object: str, ids: Sequence[str], request_id: str) -> None:
        """Userpilot answered 202: the deletion is scheduled; remember it."""
        now = self._clock()
        self.ledger.record_outcome(self.scope, request_id, "accepted", now)
        self.ledger.remember_deletions(self.scope, object, ids, request_id, now)
        self._any_deletions = True


def _ids_and_hashes(batch: SealedBatch) -> list[tuple[str, bytes | None]]:
    """``(id, row hash)`` of each row: skip_unchanged's fingerprints, or read from the file."""
    if batch.fingerprints is not None:
        return [(row_id, digest) for row_id, digest in batch.fingerprints]
    key = id_key(batch.object)
    return [(str(json.loads(line)[key]), row_hash(line)) for line in batch.read_lines()]


def _stream_names(batch: SealedBatch) -> str:
    """The streams of a batch, comma-separated, for the jobs listing."""
    return ",".join(sorted(set(batch.row_streams.values())) or [batch.stream])
