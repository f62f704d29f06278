"""Mirror deletes: profiles a stream's new full-table version no longer has are deleted.

A tap that copies a whole table (tap-postgres ``FULL_TABLE``) stamps the copy's records with a
``version`` and announces it with ``ACTIVATE_VERSION``. A row deleted in the source simply is not
in the next copy. With ``hard_delete`` on, the ledger remembers which version each id of a
stream was last loaded in; when a version ends, the ids of earlier versions that are not in it
are deleted through the deletion lane (paced, STATE after Userpilot's 202), like records marked
with ``_sdc_deleted_at``.

Erasure cannot be undone, so a deletion needs proof that the copy is whole and loaded, and that
the source lost the row:

- **The copy ended.** Taps that follow Stitch's convention (singer-io, pipelinewise) send
  ``ACTIVATE_VERSION`` again after the copy. A version ends only with such a closing message
  *after its copy*: records of the version, or its opening message, earlier in this run. An
  opening message for a version already open (tap-mysql and tap-mssql send it again, with the
  same version, when they resume an interrupted first copy) resumes it and never ends it; the
  message right after the stream's SCHEMA is always an opening (Meltano SDK taps send both
  before each part of a child stream). The message sent again before any record of the
  version is either the closing of an empty copy or the opening sent twice: records of the
  version next make it an opening; if none come, a clean end of input after a STATE ends the
  empty copy. A version opened and never closed (a tap killed or failed mid-copy) deletes
  nothing, ever. Taps built on the Meltano SDK send the message only before the copy; for them
  ``mirror_delete_on_end_of_input`` lets a clean end of input close the version, provided a
  STATE came after its last record (the SDK writes one when a stream's copy is done, none when
  it fails mid-copy).
- **Its rows are durable.** Closing seals the stream's open batch and waits until every row
  before the message is in a completed job; only then are the version's ids written and the
  missing ones looked up. Ids are written to the ledger only once their job completed, and
  always before a STATE after them goes out (:meth:`MirrorDeletes.persist`), so a copy resumed
  in a later run, even after a kill -9, keeps the ids loaded before the interruption.
- **No other stream holds the profile.** Two streams may load the same profiles. An id a
  version lacks is a candidate only when no other stream holds it: none has it in its latest
  complete version (or in a copy in progress), and none loaded it without versions (an
  incremental stream, or one a stream map filters, never shows that it dropped an id).
- **Nothing was left out on the way.** A stream map's ``__filter__`` drops records before the
  sink sees them, so they would look deleted: such a stream gets no mirror deletes (its ids
  count as loaded without versions) unless ``mirror_delete_filtered_streams`` is on.
- **The share is plausible.** More than ``mirror_delete_max_percent`` of the stream's known
  profiles (and more than ``mirror_delete_floor``) stops the run before any of them is deleted
  (exit 14). ``dry_run`` lists them instead (the deletion request files) and warns.

No profile id is logged, at any level: deletions are counted, never named.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_userpilot.checkpoints import Checkpoints
from target_userpilot.errors import MirrorDeleteRefused

logger = logging.getLogger("target_userpilot")

#: Ids of a version kept in memory before the durable ones are written to the ledger.
FLUSH_EVERY = 5000
#: How long one wait for the stream's rows to become durable lasts before lanes are checked.
TICK = 0.5
#: The stream_maps options that decide which sink a map feeds and whether it drops records.
_SOURCE, _ALIAS, _FILTER = "__source__", "__alias__", "__filter__"


class VersionLedger(Protocol):
    """What mirror deletes need of the ledger (``state_db``): part of
    :class:`~target_userpilot.ledger.store.Ledger`."""

    def save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Sequence[str]
    ) -> None: ...

    def save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Sequence[str]
    ) -> None: ...

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool: ...

    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int, int]: ...

    def ids_not_in_version(
        self, scope: str, object: str, stream: str, version: int
    ) -> list[str]: ...

    def drop_ids_held_elsewhere(
        self, scope: str, object: str, stream: str, version: int
    ) -> int: ...


class Deletions(Protocol):
    """The deletion lane, as mirror deletes use it."""

    def add(self, object: str, stream: str, row_id: str, seq: int) -> None: ...


@dataclass
class _Version:
    """One stream's version in play in this run (``None``: rows loaded without a version), and
    its ids not yet in the ledger."""

    stream: str
    object: str
    version: int | None
    #: ``(seq, id)`` of rows loaded in this version, oldest first, until written.
    pending: deque[tuple[int, str]] = field(default_factory=deque)
    #: Rows of the version seen in this run: a closing message must come after its copy.
    records: int = 0
    #: A STATE arrived after the version's last record (or its last ACTIVATE_VERSION).
    state_after: bool = False
    #: Pending ids at which the durable ones are written next (rows wait for their job).
    flush_at: int = FLUSH_EVERY
    #: ACTIVATE_VERSION came again before any record of the version: the closing of an empty
    #: copy, or the opening sent twice. Records next make it an opening; the end of input, after
    #: a STATE, ends the empty copy.
    empty_close: bool = False


@dataclass(frozen=True)
class VersionEnd:
    """A finished version: what it lacks, and the guard's verdict on deleting it (for a plan)."""

    stream: str
    object: str
    version: int
    #: The stream's ids in the ledger; those the version lacks that no other stream holds;
    #: those it lacks that another stream holds (they stay).
    known: int
    missing: int
    held: int
    #: How many the guard lets one version delete.
    allowed: int

    @property
    def stops(self) -> bool:
        """More than the guard allows: the run stops before deleting any of them."""
        return self.missing > self.allowed


@dataclass(frozen=True)
class Guard:
    """The largest deletion one version may cause: a share of the known profiles, or a floor."""

    max_percent: int = 10
    floor: int = 5

    def allowed(self, known: int) -> int:
        """How many of ``known`` profiles one version may delete."""
        return max(self.floor, self.max_percent * known // 100)


def filtering_streams(stream_maps: Mapping[str, Any] | None) -> list[str]:
    """The streams a ``stream_maps`` entry with ``__filter__`` feeds, as the config names them.

    A name may be a pattern (``public-*``) or an alias expression: this is for the lines said
    at start; :func:`filtered_aliases` decides per sink.
    """
    names = []
    for key, entry in (stream_maps or {}).items():
        if isinstance(entry, dict) and _FILTER in entry:
            alias = entry.get(_ALIAS) if _SOURCE not in entry else None
            names.append(str(alias) if isinstance(alias, str) else key)
    return names


def filtered_aliases(
    stream_maps: Mapping[str, Any] | None, stream: str, aliases: Sequence[str]
) -> set[str]:
    """Which sinks of ``stream`` a ``__filter__`` may keep records from.

    ``aliases`` are the SDK's stream maps of ``stream`` in order: the stream's own map first
    (the last entry named after it, or matching it as a pattern, wins), then one per entry made
    with ``__source__``. Matching follows the SDK's ``register_raw_stream_schema``.
    """
    own = False
    sourced: list[bool] = []
    for key, entry in (stream_maps or {}).items():
        spec = entry if isinstance(entry, dict) else {}
        source = spec.get(_SOURCE)
        if isinstance(source, str):
            if stream == source or fnmatch.fnmatch(stream, source):
                sourced.append(_FILTER in spec)
        elif stream == key or fnmatch.fnmatch(stream, key):
            own = _FILTER in spec
    flags = [own, *sourced]
    if len(flags) != len(aliases):
        # The SDK matched otherwise than this reading: every sink of the stream is suspect.
        return set(aliases) if any(flags) else set()
    return {alias for alias, flag in zip(aliases, flags, strict=True) if flag}


class MirrorDeletes:
    """Tracks each stream's full-table version and deletes what a finished version lacks.

    Called on the reading thread (``seen`` per loaded row, ``activate`` per
    ``ACTIVATE_VERSION``, ``state`` per STATE, ``finish`` at end of input), except ``persist``,
    which the thread that writes a STATE calls first. ``_lock`` guards the streams' entries and
    the ids taken from them; the checkpoints are never called under it.
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
        delete_filtered: bool = False,
        planning: bool = False,
        on_end: Callable[[VersionEnd], None] | None = None,
    ) -> None:
        self._ledger = ledger
        #: A plan (``plan_path``): the lines say what a real run would do.
        self._planning = planning
        #: Told of each finished version, before the guard acts (a plan counts them).
        self._on_end = on_end
        self._scope = scope
        self._checkpoints = checkpoints
        self._deletions = deletions
        self._flush = flush
        self._check = check
        self.guard = guard
        self._dry_run = dry_run
        self._at_end = close_at_end_of_input
        self._delete_filtered = delete_filtered
        self._lock = threading.Lock()
        self._open: dict[str, _Version] = {}
        #: Per stream, the rows loaded without a version (they hold their ids).
        self._unversioned: dict[str, _Version] = {}
        #: Entries replaced by a newer version, until their ids are written.
        self._retired: list[_Version] = []
        self._stream_maps: Mapping[str, Any] = {}
        #: Tap streams whose sinks were checked for filters, and the sinks a filter feeds.
        self._mapped: set[str] = set()
        self._filtered: set[str] = set()
        self._filtered_noted: set[str] = set()
        #: Streams whose last message (STATE aside) was their SCHEMA: an ACTIVATE_VERSION now
        #: opens a copy, never closes one.
        self._after_schema: set[str] = set()
        #: The ``version`` of the RECORD message being processed (set by the target).
        self.version: int | None = None
        #: Ids deleted per stream by versions closed in this run (for tests and the summary).
        self.deleted: dict[str, int] = {}

    # Stream maps

    def use_stream_maps(self, stream_maps: Mapping[str, Any] | None) -> None:
        """The run's ``stream_maps``: one line per stream a ``__filter__`` feeds, at start."""
        self._stream_maps = stream_maps or {}
        for name in filtering_streams(stream_maps):
            if self._delete_filtered:
                logger.info(
                    "Stream '%s' has a __filter__ in stream_maps, and "
                    "mirror_delete_filtered_streams is on: a profile the filter leaves out of a "
                    "full-table version is deleted like one the source lost.",
                    name,
                )
                continue
            logger.warning(
                "Stream '%s' has a __filter__ in stream_maps: the records it leaves out never "
                "reach the target and would look deleted from the source, so its full-table "
                "versions delete nothing (its profiles count as loaded without versions). Set "
                "mirror_delete_filtered_streams to true to delete what they lack anyway.",
                name,
            )

    def map_stream(self, stream: str, aliases: Sequence[str]) -> None:
        """The sinks the SDK's stream maps feed from tap stream ``stream`` (once per stream)."""
        self._mapped.add(stream)
        if not self._delete_filtered:
            self._filtered |= filtered_aliases(self._stream_maps, stream, aliases)

    def mapped(self, stream: str) -> bool:
        """Whether :meth:`map_stream` was told the sinks of tap stream ``stream``."""
        return stream in self._mapped

    # The reading thread

    def schema(self, stream: str) -> None:
        """A SCHEMA message for ``stream``: an ACTIVATE_VERSION right after it is an opening.

        Meltano SDK taps send SCHEMA, then ACTIVATE_VERSION, before each copy (for a child
        stream, before each parent's part, with the same version); Stitch taps send the closing
        message after the copy's records, never right after a SCHEMA.
        """
        self._after_schema.add(stream)

    def seen(self, stream: str, object: str, row_id: str, seq: int) -> None:
        """A row of ``stream`` loaded from the current record (its version, if any)."""
        if self._after_schema:
            self._after_schema.discard(stream)
        version = None if stream in self._filtered else self.version
        if version is None:
            entry = self._unversioned.get(stream)
            if entry is None:
                entry = self._add(self._unversioned, _Version(stream, object, None))
        else:
            entry = self._open.get(stream)
            if entry is None or entry.version != version:
                entry = self._start(stream, object, version)
            elif entry.empty_close:
                entry.empty_close = False  # it was the opening, sent again
        entry.pending.append((seq, row_id))
        entry.records += 1
        entry.state_after = False
        if len(entry.pending) >= entry.flush_at:
            self._write_durable(entry)
            # Rows still in a job stay pending: look again once as many more have come.
            entry.flush_at = len(entry.pending) + FLUSH_EVERY

    def state(self) -> None:
        """A STATE message arrived: it follows the last record of every open version."""
        for entry in self._open.values():
            entry.state_after = True

    def activate(self, stream: str, object: str, version: int, seq: int) -> None:
        """``ACTIVATE_VERSION``: ends ``version`` after its copy; otherwise opens or resumes it."""
        if stream in self._filtered:
            self._note_filtered(stream)
            return
        opening = stream in self._after_schema
        self._after_schema.discard(stream)
        entry = self._open.get(stream)
        if entry is not None and entry.version == version:
            if opening:
                # The opening again (a child stream's next parent): the copy goes on.
                entry.empty_close = False
                return
            if entry.records:
                self._close(entry, seq)
                return
            entry.empty_close = True
            entry.state_after = False
            logger.debug(
                "Stream '%s' sent ACTIVATE_VERSION %d again before any record of it: the copy "
                "is empty, or the opening came twice; records of the version next continue it.",
                stream,
                version,
            )
            return
        resumed = self._ledger.has_version(self._scope, object, stream, version)
        self._start(stream, object, version)
        if resumed:
            logger.info(
                "Stream '%s' resumes full-table version %d, begun in an earlier run: the rows "
                "loaded then stay in it, and the version ends with %s.",
                stream,
                version,
                self._version_end(),
            )
            return
        logger.info(
            "Stream '%s' began full-table version %d; with hard_delete, the %s it had before "
            "and this version lacks are deleted once the version ends (%s).",
            stream,
            version,
            object,
            self._version_end(),
        )

    def _version_end(self) -> str:
        """What ends a version in this run, for the INFO lines that open one."""
        if self._at_end:
            # mirror_delete_on_end_of_input: SDK taps send no closing message at all.
            return (
                "its closing ACTIVATE_VERSION, or a clean end of input with a STATE after its "
                "last record (mirror_delete_on_end_of_input)"
            )
        return "its closing ACTIVATE_VERSION"

    def finish(self, seq: int) -> None:
        """End of input, every row durable: write the ids; close versions the input ended.

        An empty copy (ACTIVATE_VERSION twice, no record) ends when a STATE came after it; with
        ``close_at_end_of_input``, so does any version with a STATE after its last record.
        Otherwise a version never closed deletes nothing and says so.
        """
        for entry in self._entries():
            self._write_durable(entry)
        for entry in list(self._open.values()):
            if entry.state_after and (entry.empty_close or self._at_end):
                self._close(entry, seq, at_end=True)
                continue
            logger.info(
                "Stream '%s': full-table version %d was not closed before the end of input "
                "(%s), so the copy may be incomplete and nothing is deleted for it.%s",
                entry.stream,
                entry.version,
                _why_open(entry, self._at_end),
                ""
                if self._at_end or entry.empty_close
                else " Taps built on the Meltano SDK send it only before the copy: see "
                "mirror_delete_on_end_of_input.",
            )
        with self._lock:
            self._open.clear()
            self._unversioned.clear()
            self._retired.clear()

    def settle(self) -> None:
        """The run is stopping: write the ids whose rows are durable, for a resumed copy."""
        for entry in self._entries():
            self._write_durable(entry)

    # The thread that writes a STATE

    def persist(self, upto: int) -> None:
        """A STATE after record ``upto`` is about to go out: the ids of the rows before it first.

        A rerun from that STATE never sends those rows again, so their ids must be in the
        ledger by then, or a resumed copy would take them for rows the source lost.
        """
        with self._lock:
            for entry in [*self._open.values(), *self._unversioned.values(), *self._retired]:
                self._save(entry, upto)

    # Inside

    def _entries(self) -> list[_Version]:
        with self._lock:
            return [*self._open.values(), *self._unversioned.values(), *self._retired]

    def _add(self, streams: dict[str, _Version], entry: _Version) -> _Version:
        with self._lock:
            streams[entry.stream] = entry
        return entry

    def _start(self, stream: str, object: str, version: int) -> _Version:
        previous = self._open.get(stream)
        if previous is not None:
            # A new version before the last one closed: that one deletes nothing, but the ids
            # of its rows are still written as they become durable.
            with self._lock:
                self._retired.append(previous)
            self._write_durable(previous)
        return self._add(self._open, _Version(stream, object, version))

    def _write_durable(self, entry: _Version) -> None:
        """Write the ids of rows already in a completed job to the ledger."""
        floor = self._checkpoints.durable_floor(entry.object)  # never under ``_lock``
        with self._lock:
            self._save(entry, floor)
            if entry in self._retired and not entry.pending:
                self._retired.remove(entry)

    def _save(self, entry: _Version, floor: int) -> None:
        """Under ``_lock``: write the ids of ``entry``'s rows numbered below ``floor``."""
        ids = []
        pending = entry.pending
        while pending and pending[0][0] < floor:
            ids.append(pending.popleft()[1])
        if not ids:
            return
        if entry.version is None:
            self._ledger.save_unversioned_ids(self._scope, entry.object, entry.stream, ids)
        else:
            self._ledger.save_version_ids(
                self._scope, entry.object, entry.stream, entry.version, ids
            )

    def _note_filtered(self, stream: str) -> None:
        if stream in self._filtered_noted:
            return
        self._filtered_noted.add(stream)
        logger.info(
            "Stream '%s' sent ACTIVATE_VERSION, but a stream map's __filter__ may leave its "
            "records out: it gets no mirror deletes (see mirror_delete_filtered_streams).",
            stream,
        )

    def _close(self, entry: _Version, seq: int, *, at_end: bool = False) -> None:
        """The version ended: once its rows are durable, delete what it lacks (within the guard)."""
        stream, object, version = entry.stream, entry.object, entry.version
        assert version is not None
        self._flush(object)
        while not self._checkpoints.wait_durable(object, seq, TICK):
            self._check()
        self._write_durable(entry)
        with self._lock:
            del self._open[stream]
        known, missing, held = self._ledger.version_counts(self._scope, object, stream, version)
        allowed = self.guard.allowed(known)
        if self._on_end is not None:
            self._on_end(VersionEnd(stream, object, version, known, missing, held, allowed))
        # Profiles another stream still holds are no candidates: only the others count.
        elsewhere = f" ({held} more it lacks stay: another stream still loads them)" if held else ""
        # mirror_delete_on_end_of_input: the end of input, not a closing message, ended it.
        ended = "ended at the end of input" if at_end else "ended"
        if not missing:
            logger.info(
                "Stream '%s': full-table version %d %s with every one of its %d known %s%s; "
                "nothing to delete.",
                stream,
                version,
                ended,
                known - held,
                object,
                elsewhere,
            )
            self._drop_held(entry, held)
            return
        if missing > allowed:
            share = missing / known
            if not self._dry_run:
                refusal = self._refusal(entry, known, missing, allowed, share, at_end=at_end)
                raise MirrorDeleteRefused(refusal)
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
            "Stream '%s': full-table version %d %s without %d of the %d %s this target loaded "
            "from it before%s; %s.",
            stream,
            version,
            ended,
            len(ids),
            known,
            object,
            elsewhere,
            "listing their deletion requests in output_dir (dry run)"
            if self._dry_run
            else "a real run would delete them from Userpilot (plan)"
            if self._planning
            else "deleting them from Userpilot",
        )
        for row_id in ids:
            self._deletions.add(object, stream, row_id, seq)
        self.deleted[stream] = self.deleted.get(stream, 0) + len(ids)
        self._drop_held(entry, held)

    def _drop_held(self, entry: _Version, held: int) -> None:
        """The stream no longer holds what its finished version lacks and others still hold."""
        if held:
            assert entry.version is not None
            self._ledger.drop_ids_held_elsewhere(
                self._scope, entry.object, entry.stream, entry.version
            )

    def _refusal(
        self,
        entry: _Version,
        known: int,
        missing: int,
        allowed: int,
        share: float,
        *,
        at_end: bool,
    ) -> str:
        needed = min(100, -(-missing * 100 // known))  # the percent, rounded up
        state = (
            "the version's rows are loaded"
            if at_end
            else "the version's rows are loaded and STATE stops before this message"
        )
        return (
            f"Stream '{entry.stream}': full-table version {entry.version} ended without {missing} "
            f"of the {known} {entry.object} this target loaded from it before ({share:.0%}), more "
            f"than mirror deletes may remove at once ({allowed}: mirror_delete_max_percent "
            f"{self.guard.max_percent}, mirror_delete_floor {self.guard.floor}). Nothing was "
            f"deleted; {state}. If the source really lost these rows, rerun once with "
            f"mirror_delete_max_percent set to {needed} (a dry_run lists the ids first); "
            "otherwise check the tap's selection, filters and credentials."
        )


def _why_open(entry: _Version, at_end: bool) -> str:
    """Why a version open at the end of input was not closed, for its INFO line."""
    if entry.empty_close:
        return "ACTIVATE_VERSION came twice with no record between, and no STATE after it"
    if at_end:
        return "no closing ACTIVATE_VERSION after its records, and no STATE after the last one"
    return "no closing ACTIVATE_VERSION after its records"
