"""The flattened keys sent under each object property of a stream, so a null object clears them.

Userpilot keeps a property until it is sent as null. A nested object becomes one key per leaf
(``prefs: {"lang": "en", "theme": "dark"}`` → ``prefs__lang``, ``prefs__theme``), so when the
object becomes null, loses a key, or turns into a plain value, Userpilot would keep the keys the
row no longer names. A schema that describes the object tells its keys (``routing.null_clears``);
tap-postgres's ``jsonb`` describes none, so the keys are known only from the values sent. This
module remembers them per stream and says which to send as null.

Pure: no I/O. The caller fills :class:`ObjectKeys` from the ledger (keys sent by earlier runs),
and stores what :meth:`ObjectKeys.take_new` hands out before the rows that carry those keys go up,
so a key Userpilot may hold is always remembered. Sending null for a key a profile never had is
harmless: Userpilot removes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

#: At most this many keys are remembered per stream: a JSON column keyed by data (dates, ids)
#: would otherwise grow every row without end. Keys past it are sent but not remembered.
KEYS_LIMIT = 2000


class ObjectKeys:
    """Per top-level property of one stream, the flattened keys sent under it so far."""

    def __init__(
        self, known: Mapping[str, Iterable[str]] | None = None, *, limit: int = KEYS_LIMIT
    ):
        #: property → its flattened keys (``prefs`` → {``prefs__lang``, ``prefs__theme``}).
        self.known: dict[str, set[str]] = {}
        self.limit = limit
        self.count = 0
        #: True once a key could not be remembered because of ``limit`` (the caller warns once).
        self.full = False
        self._new: dict[str, set[str]] = {}
        for name, keys in (known or {}).items():
            self.learn(name, keys, new=False)

    def learn(self, name: str, keys: Iterable[str], *, new: bool = True) -> None:
        """Remember ``keys`` as sent under property ``name``; ``new`` ones go to the ledger."""
        held = self.known.get(name)
        for key in keys:
            if held is not None and key in held:
                continue
            if self.count >= self.limit:
                self.full = True
                return
            if held is None:
                held = self.known[name] = set()
            held.add(key)
            self.count += 1
            if new:
                self._new.setdefault(name, set()).add(key)

    def take_new(self) -> dict[str, list[str]]:
        """The keys learned since the last call, sorted per property (for the ledger)."""
        new, self._new = self._new, {}
        return {name: sorted(keys) for name, keys in new.items()}

    @property
    def pending(self) -> bool:
        """True when keys were learned that the ledger does not have yet."""
        return bool(self._new)


def clear_lost(metadata: dict[str, Any], name: str, sent: Collection[str], keys: ObjectKeys) -> int:
    """Set to null the keys ``name`` had before and this value no longer gives; learn new ones.

    ``sent``: the flattened keys the value gave (none for a value that is not an object), which
    ``metadata`` already holds. A key another property of the record set keeps its value.
    Returns how many names were added, for the collision count of ``rows.metadata_of``.
    """
    before = keys.known.get(name)
    if sent and (before is None or not before.issuperset(sent)):
        keys.learn(name, sent)
    # Every key sent is in the metadata: what is missing there is what the value lost.
    if not before or metadata.keys() >= before:
        return 0
    lost = [key for key in before if key not in metadata]
    # Sorted: a row must encode the same in every run (skip_unchanged compares hashes), and a
    # set's order changes from one process to the next.
    lost.sort()
    for key in lost:
        metadata[key] = None
    return len(lost)
