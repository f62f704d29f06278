"""Mirror deletes: profiles a stream's new full-table version no longer has are deleted.

A tap that copies a whole table (tap-postgres ``FULL_TABLE``) stamps the copy's records with a
``version`` and announces it with ``ACTIVATE_VERSION``. A row deleted in the source simply is not
in the next copy. With ``hard_delete`` on, the ledger remembers which version each id of a
stream was last loaded in; when a version ends, the ids of earlier versions that are not in it
are deleted through the deletion lane (paced, STATE after Userpilot's 202), like records marked
with ``_sdc_deleted_at``.

Erasure cannot be undone, so a deletion needs proof that the copy is whole and loaded:

- **The copy ended.** Taps that follow Stitch's convention (singer-io, pipelinewise) send
  ``ACTIVATE_VERSION`` again after the copy: a second message for a version this run (or the
  ledger) already knows closes it. A version opened and never closed (a tap killed or failed
  mid-copy) deletes nothing, ever. Taps built on the Meltano SDK send the message only before
  the copy; for them ``mirror_delete_on_end_of_input`` lets a clean end of input close the
  version, provided a STATE came after its last record (the SDK writes one when a stream's copy
  is done, none when it fails mid-copy).
- **Its rows are durable.** Closing seals the stream's open batch and waits until every row
  before the message is in a completed job; only then are the version's ids written and the
  missing ones looked up. Ids are written to the ledger only once their job completed, so only
  ids this target loaded from the stream are ever candidates, and a copy resumed in a later run
  (Stitch taps resume a version) keeps the ids loaded before the interruption.
- **The share is plausible.** More than ``mirror_delete_max_percent`` of the stream's known
  profiles (and more than ``mirror_delete_floor``) stops the run before any of them is deleted
  (exit 14). ``dry_run`` lists them instead (the deletion request files) and warns.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from target_userpilot.checkpoints import Checkpoints
from target_userpilot.errors import MirrorDeleteRefused

logger = logging.getLogger("target_userpilot")

#: Ids of a version kept in memory before the durable ones are written to the ledger.
FLUSH_EVERY = 5000
#: How long one wait for the stream's rows to become durable lasts before lanes are checked.
TICK = 0.5


class VersionLedger(Protocol):
    """What mirror deletes need of the ledger (``state_db``)."""

    def save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Sequence[str]
    ) -> None: ...

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool: ...

    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int]: ...

    def ids_not_in_version(
        self, scope: str, object: str, stream: str, version: int
    ) -> list[str]: ...


class Deletions(Protocol):
    """The deletion lane, as mirror deletes use it."""

    def add(self, object: str, stream: str, row_id: str, seq: int) -> None: ...


@dataclass
class _Version:
    """One stream's version in play in this run, and its ids not yet in the ledger."""

    stream: str
    object: str
    version: int
    #: ``(seq, id)`` of rows loaded in this version, oldest first, until written.
    pending: deque[tuple[int, str]] = field(default_factory=deque)
    records: int = 0
    #: A STATE arrived after the version's last record (see ``mirror_delete_on_end_of_input``).
    state_after: bool = False


@dataclass(frozen=True)
class Guard:
    """The largest deletion one version may cause: a share of the known profiles, or a floor."""

    max_percent: int = 10
    floor: int = 5

    def allowed(self, known: int) -> int:
        """How many of ``known`` profiles one version may delete."""
        return max(self.floor, self.max_percent * known // 100)


class MirrorDeletes:
    """Tracks each stream's full-table version and deletes what a finished version lacks.

    Called on the reading thread only: ``seen`` per loaded row, ``activate`` per
    ``ACTIVATE_VERSION``, ``state`` per STATE, ``finish`` at end of input.
    """

    def __init__(
        self,
        ledger: VersionLedger,
        scope: str,
        checkpoints: Checkpoints,
        deletions: Deletions,
        *,
        flush: Callable[[str], None],
        check: Callable[[], None],
        guard: Guard,
        dry_run: bool = False,
        close_at_end_of_input: bool = False,
    ) -> None:
        self._ledger = ledger
        self._scope = scope
        self._checkpoints = checkpoints
        self._deletions = deletions
        self._flush = flush
        self._check = check
        self.guard = guard
        self._dry_run = dry_run
        self._at_end = close_at_end_of_input
        self._open: dict[str, _Version] = {}
        #: The ``version`` of the RECORD message being processed (set by the target).
        self.version: int | None = None
        #: Ids deleted per stream by versions closed in this run (for tests and the summary).
        self.deleted: dict[str, int] = {}

    def seen(self, stream: str, object: str, version: int, row_id: str, seq: int) -> None:
        """A row of ``stream`` loaded from a record of ``version``."""
        entry = self._open.get(stream)
        if entry is None or entry.version != version:
            entry = self._start(stream, object, version)
        entry.pending.append((seq, row_id))
        entry.records += 1
        entry.state_after = False
        if len(entry.pending) >= FLUSH_EVERY:
            self._write_durable(entry)

    def state(self) -> None:
        """A STATE message arrived: it follows the last record of every open version."""
        for entry in self._open.values():
            entry.state_after = True

    def activate(self, stream: str, object: str, version: int, seq: int) -> None:
        """``ACTIVATE_VERSION``: opens ``version``, or closes it when it is already known."""
        entry = self._open.get(stream)
        if entry is not None and entry.version == version:
            self._close(entry, seq)
        elif self._ledger.has_version(self._scope, object, stream, version):
            # A copy resumed from an earlier run: its first rows were loaded then.
            self._close(self._start(stream, object, version), seq)
        else:
            self._start(stream, object, version)
            logger.info(
                "Stream '%s' began full-table version %d; with hard_delete, the %s it had before "
                "and this version lacks are deleted once the version ends (its closing "
                "ACTIVATE_VERSION).",
                stream,
                version,
                object,
            )

    def finish(self, seq: int) -> None:
        """End of input, every row durable: write the ids; close versions the input ended.

        Only with ``close_at_end_of_input`` and a STATE after the version's last record;
        otherwise a version never closed deletes nothing and says so.
        """
        for entry in list(self._open.values()):
            self._write_durable(entry)
            if self._at_end and entry.state_after:
                self._close(entry, seq)
                continue
            logger.info(
                "Stream '%s': full-table version %d was not closed before the end of input (no "
                "second ACTIVATE_VERSION%s), so the copy may be incomplete and nothing is deleted "
                "for it.%s",
                entry.stream,
                entry.version,
                "" if not self._at_end else ", and no STATE after its last record",
                ""
                if self._at_end
                else " Taps built on the Meltano SDK send it only before the copy: see "
                "mirror_delete_on_end_of_input.",
            )
        self._open.clear()

    def settle(self) -> None:
        """The run is stopping: write the ids whose rows are durable, for a resumed copy."""
        for entry in self._open.values():
            self._write_durable(entry)

    # Inside

    def _start(self, stream: str, object: str, version: int) -> _Version:
        previous = self._open.get(stream)
        if previous is not None:
            # A new version before the last one closed: that one deletes nothing.
            self._write_durable(previous)
        entry = self._open[stream] = _Version(stream, object, version)
        return entry

    def _write_durable(self, entry: _Version) -> None:
        """Write the ids of rows already in a completed job to the ledger."""
        floor = self._checkpoints.durable_floor(entry.object)
        ids = []
        pending = entry.pending
        while pending and pending[0][0] < floor:
            ids.append(pending.popleft()[1])
        if ids:
            self._ledger.save_version_ids(
                self._scope, entry.object, entry.stream, entry.version, ids
            )

    def _close(self, entry: _Version, seq: int) -> None:
        """The version ended: once its rows are durable, delete what it lacks (within the guard)."""
        stream, object, version = entry.stream, entry.object, entry.version
        self._flush(object)
        while not self._checkpoints.wait_durable(object, seq, TICK):
            self._check()
        self._write_durable(entry)
        del self._open[stream]
        known, missing = self._ledger.version_counts(self._scope, object, stream, version)
        if not missing:
            logger.info(
                "Stream '%s': full-table version %d ended with every one of its %d known %s; "
                "nothing to delete.",
                stream,
                version,
                known,
                object,
            )
            return
        allowed = self.guard.allowed(known)
        if missing > allowed:
            share = missing / known
            if not self._dry_run:
                raise MirrorDeleteRefused(self._refusal(entry, known, missing, allowed, share))
            logger.warning(
                "Stream '%s': dry run: a real run would stop here, before deleting %d of %d %s "
                "(%.0f %%, more than the %d allowed by mirror_delete_max_percent %d and "
                "mirror_delete_floor %d). They are listed in the deletion request files.",
                stream,
                missing,
                known,
                object,
                share * 100,
                allowed,
                self.guard.max_percent,
                self.guard.floor,
            )
        ids = self._ledger.ids_not_in_version(self._scope, object, stream, version)
        logger.info(
            "Stream '%s': full-table version %d ended without %d of the %d %s this target loaded "
            "from it before; %s.",
            stream,
            version,
            len(ids),
            known,
            object,
            "listing their deletion requests in output_dir (dry run)"
            if self._dry_run
            else "deleting them from Userpilot",
        )
        logger.debug("Mirror deletes of stream '%s': %s", stream, ids)
        for row_id in ids:
            self._deletions.add(object, stream, row_id, seq)
        self.deleted[stream] = self.deleted.get(stream, 0) + len(ids)

    def _refusal(
        self, entry: _Version, known: int, missing: int, allowed: int, share: float
    ) -> str:
        needed = min(100, -(-missing * 100 // known))  # the percent, rounded up
        return (
            f"Stream '{entry.stream}': full-table version {entry.version} ended without {missing} "
            f"of the {known} {entry.object} this target loaded from it before ({share:.0%}), more "
            f"than mirror deletes may remove at once ({allowed}: mirror_delete_max_percent "
            f"{self.guard.max_percent}, mirror_delete_floor {self.guard.floor}). Nothing was "
            "deleted; the version's rows are loaded and STATE stops before this message. If the "
            f"source really lost these rows, rerun once with mirror_delete_max_percent set to "
            f"{needed} (a dry_run lists the ids first); otherwise check the tap's selection, "
            "filters and credentials."
        )
