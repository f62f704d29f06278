"""Full-table versions as a plan sees them: the ledger's, read-only, with this input on top.

Mirror deletes (``memory/mirror.py``) record each loaded id's version in the ledger and ask it,
when a version ends, what the version lacks. A plan writes nothing, so :class:`PlannedVersions`
answers the same questions (the ``VersionLedger`` protocol) from the ledger's entries, read
once per stream, with the ids this input loaded kept in memory: the guard then judges the
same counts a real run would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from target_userpilot.ledger.store import Ledger


class PlannedVersions:
    """The ``VersionLedger`` of mirror deletes, over a read-only ledger (or none: a first run)."""

    def __init__(self, ledger: Ledger | None) -> None:
        self._ledger = ledger
        #: (scope, object, stream) -> id -> the version it was last loaded in.
        self._entries: dict[tuple[str, str, str], dict[str, int]] = {}
        #: (scope, object) -> stream -> ids loaded without versions in this input.
        self._unversioned: dict[tuple[str, str], dict[str, set[str]]] = {}
        #: (scope, object) -> ids a real run would have deleted (no stream holds them then).
        self._deleted: dict[tuple[str, str], set[str]] = {}

    def _stream(self, scope: str, object: str, stream: str) -> dict[str, int]:
        """The stream's ids and versions: the ledger's, read on first use, then this input's."""
        key = (scope, object, stream)
        entries = self._entries.get(key)
        if entries is None:
            known = (
                self._ledger.version_entries(scope, object, stream)
                if self._ledger is not None
                else {}
            )
            entries = self._entries[key] = known
        return entries

    def save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Sequence[str]
    ) -> None:
        """Ids loaded from ``stream`` in ``version``: in memory, never in the ledger."""
        entries = self._stream(scope, object, stream)
        for row_id in ids:
            entries[row_id] = version
        self._deleted.get((scope, object), set()).difference_update(ids)

    def save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Sequence[str]
    ) -> None:
        """Ids loaded from ``stream`` without a version: in memory."""
        self._unversioned.setdefault((scope, object), {}).setdefault(stream, set()).update(ids)

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id of ``stream`` was loaded in ``version`` (earlier runs or this input)."""
        return version in self._stream(scope, object, stream).values()

    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int, int]:
        """``(known, candidates, held)``, as ``Ledger.version_counts`` counts them."""
        entries = self._stream(scope, object, stream)
        lacking = [row_id for row_id, v in entries.items() if v != version]
        held = self._held(scope, object, stream, lacking)
        return len(entries), len(lacking) - len(held), len(held)

    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's ids ``version`` lacks that no other stream holds, sorted."""
        entries = self._stream(scope, object, stream)
        lacking = [row_id for row_id, v in entries.items() if v != version]
        held = self._held(scope, object, stream, lacking)
        return sorted(row_id for row_id in lacking if row_id not in held)

    def drop_ids_held_elsewhere(self, scope: str, object: str, stream: str, version: int) -> int:
        """The stream lets go of the ids its version lacks that another stream holds."""
        entries = self._stream(scope, object, stream)
        lacking = [row_id for row_id, v in entries.items() if v != version]
        held = self._held(scope, object, stream, lacking)
        for row_id in held:
            del entries[row_id]
        return len(held)

    def forget(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """A real run would delete ``ids``: no stream holds them any more."""
        ids = set(ids)
        for (s, o, _), entries in self._entries.items():
            if (s, o) == (scope, object):
                for row_id in ids & entries.keys():
                    del entries[row_id]
        for loaded in self._unversioned.get((scope, object), {}).values():
            loaded.difference_update(ids)
        self._deleted.setdefault((scope, object), set()).update(ids)

    def _held(self, scope: str, object: str, stream: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` another stream holds: in the ledger, or loaded by this input."""
        if not ids:
            return set()
        wanted = set(ids)
        held: set[str] = set()
        for (s, o, other), entries in self._entries.items():
            if (s, o) == (scope, object) and other != stream:
                held |= wanted & entries.keys()
        for other, loaded in self._unversioned.get((scope, object), {}).items():
            if other != stream:
                held |= wanted & loaded
        if self._ledger is not None:
            # Every other stream as the ledger has it, less what a real run would have deleted.
            deleted = self._deleted.get((scope, object), set())
            found = self._ledger.ids_held_by_others(scope, object, stream, sorted(wanted))
            held |= found - deleted
        return held
