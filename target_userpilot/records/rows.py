"""Record to Userpilot row: pure functions, no I/O, no Singer SDK.

This is the one place that knows Userpilot's row format (``userpilot-api.md``): how a record's
id becomes a profile's identifier, and how its values become the primitive metadata Userpilot
accepts. Which properties those are is the stream's route (``routing.py``); events
(``events.py``) and Import API records (``imports.py``) build on the same metadata rules.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator, Mapping
from typing import Any

from target_userpilot.errors import InvalidRecord
from target_userpilot.records.object_keys import ObjectKeys, clear_lost
from target_userpilot.records.routing import COMPANIES, SEPARATOR, USERS, Route
from target_userpilot.records.values import AS_IS as _AS_IS
from target_userpilot.records.values import encode_array, encode_line, number, primitive

#: Plain values, placed as they are and never clearing anything by themselves.
_PLAIN = frozenset({str, int, bool})
#: At most this many property names are remembered per stream as kept (see ``NamesSeen.kept``).
_KEPT_LIMIT = 4096
#: What ``_metadata`` reads as the known object keys when it is given none.
_NONE_KNOWN: dict[str, set[str]] = {}
#: At most this many collided names are remembered per stream (see ``NamesSeen.collisions``).
_NAMES_LIMIT = 100


class NamesSeen:
    """What one stream's records taught so far about their names: mutable, one per stream.

    ``keys``: the flattened keys sent under each object property (so a null object clears
    them), when the stream tracks them. ``kept``: property names known to go into the metadata,
    since a set lookup per property is cheaper than deciding again. ``collisions``: metadata
    names two properties of one record both gave a value (``address__city`` beside ``address:
    {city}``); the later one in the record won. At most ``_NAMES_LIMIT``.
    """

    def __init__(self, keys: ObjectKeys | None = None) -> None:
        self.keys = keys
        self.kept: set[str] = set()
        self.collisions: set[str] = set()
        self._reported: set[str] = set()

    def take_collisions(self) -> list[str]:
        """Collided metadata names not taken before, sorted: the sink warns once per name."""
        new = sorted(self.collisions - self._reported)
        self._reported.update(new)
        return new


def identifier(value: Any, prop: str) -> str:
    """Return a record's identifier as Userpilot wants it: a non-empty string.

    Integers become decimal strings; anything else but a non-empty string is refused, because a
    guessed conversion (a float, a boolean) would silently create the wrong profile.
    """
    if isinstance(value, str):
        if value:
            return value
        raise InvalidRecord(f"'{prop}' is an empty string")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise InvalidRecord(f"'{prop}' is missing or null")
    raise InvalidRecord(f"'{prop}' is {type_name(value)}, not a string or integer")


def to_row(
    record: Mapping[str, Any], route: Route, names: NamesSeen | None = None
) -> tuple[str, dict[str, Any]]:
    """Turn one record into ``(id, row)``, or raise :class:`InvalidRecord` with the reason.

    ``names``: what the stream's records taught so far; with its object ``keys``, a null
    object, or one that lost keys, sends null for those it no longer has (and new keys are
    learned into it).
    """
    id_prop = route.id_property
    row_id = identifier(record.get(id_prop), id_prop)
    metadata = metadata_of(record, route, names)
    obj = route.object
    if obj == COMPANIES:
        return row_id, {"company_id": row_id, "metadata": metadata}
    if obj != USERS:
        msg = f"to_row makes users and companies rows, not {obj}; events take to_event."
        raise ValueError(msg)

    row: dict[str, Any] = {"user_id": row_id}
    company_prop = route.company_id_property
    if company_prop is not None:
        company = record.get(company_prop)
        # An empty company id is what warehouses write for "no company"; treat it like null.
        if company is not None and company != "":
            row["company_id"] = identifier(company, company_prop)
    row["metadata"] = metadata
    return row_id, row


def deleted_id(record: Mapping[str, Any], route: Route) -> str:
    """The id a deletion request names: the profile's id, by the rules of ``to_row``."""
    if route.object not in (USERS, COMPANIES):
        msg = f"Only users and companies can be deleted, not {route.object}."
        raise ValueError(msg)
    return identifier(record.get(route.id_property), route.id_property)


def profile_id(record: Mapping[str, Any], route: Route) -> str | None:
    """The id of the profile a record names, if it has a readable one (else None)."""
    try:
        return identifier(record.get(route.id_property), route.id_property)
    except InvalidRecord:
        return None


def merge_rows(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Merge two rows of the same profile as Userpilot would apply them in order."""
    merged = dict(earlier)
    merged["metadata"] = {**earlier.get("metadata", {}), **later.get("metadata", {})}
    if "company_id" in later:
        merged["company_id"] = later["company_id"]
    return merged


def encode_row(row: Mapping[str, Any]) -> bytes:
    """One NDJSON line, UTF-8, compact, ending in ``\\n`` (what Userpilot's file upload reads)."""
    try:
        return encode_line(row)
    except UnicodeEncodeError:
        # JSON allows "\ud800"; UTF-8 cannot carry a lone surrogate, nor can Userpilot.
        raise InvalidRecord("a text value is not valid Unicode (a lone surrogate)") from None


def metadata_of(
    record: Mapping[str, Any], route: Route, names: NamesSeen | None = None
) -> dict[str, Any]:
    """A row's metadata: every property but the row's own fields and ``_sdc_*``, flattened.

    Runs for every record: the common value types are placed inline, and a collision is found
    by counting (the metadata is shorter than the names written) rather than looked up per name.
    """
    if names is None:
        names = NamesSeen()
    left_out_names = route.left_out
    clears = route.null_clears
    kept = names.kept
    keys = names.keys
    known = keys.known if keys is not None else _NONE_KNOWN
    metadata: dict[str, Any] = {}
    # Keys left out, and keys written beyond one per property (objects, clears).
    left_out = spread = 0
    for key, value in record.items():
        if key not in kept:
            if key in left_out_names or key.startswith("_sdc_"):
                left_out += 1
                continue
            if len(kept) < _KEPT_LIMIT:
                kept.add(key)
        kind = type(value)
        if kind in _PLAIN:
            metadata[key] = value
        elif kind is dict:
            leaves: list[str] = []
            spread += _put_object(metadata, key, value, clears, leaves)
            if keys is not None:
                spread += clear_lost(metadata, key, leaves, keys)
            continue
        elif kind is float:
            metadata[key] = number(value)
        elif value is None:
            metadata[key] = None
            cleared = clears.get(key)
            if cleared is not None:
                metadata.update(dict.fromkeys(cleared))
                spread += len(cleared)
        elif kind is list:
            metadata[key] = encode_array(value)
        elif isinstance(value, Mapping):
            leaves = []
            spread += _put_object(metadata, key, value, clears, leaves)
            if keys is not None:
                spread += clear_lost(metadata, key, leaves, keys)
            continue
        else:
            metadata[key] = primitive(value)
        if key in known and keys is not None:  # an object before, not now
            spread += clear_lost(metadata, key, (), keys)
    if len(metadata) != len(record) - left_out + spread:
        _note_collisions(record, route, names)
    return metadata


def _put_object(
    metadata: dict[str, Any],
    name: str,
    value: Mapping[str, Any],
    clears: Mapping[str, tuple[str, ...]],
    leaves: list[str],
) -> int:
    """Flatten one object into ``name__child`` keys; its leaf names are added to ``leaves``.

    Returns how many names it wrote beyond one, for the collision count of ``metadata_of``.
    The common value types are placed inline, as in ``metadata_of``.
    """
    extra = -1
    for child_key, child_value in value.items():
        flat = f"{name}{SEPARATOR}{child_key}"
        kind = type(child_value)
        if kind in _PLAIN:
            metadata[flat] = child_value
        elif kind is dict:
            extra += 1 + _put_object(metadata, flat, child_value, clears, leaves)
            continue
        elif kind is float:
            metadata[flat] = number(child_value)
        elif child_value is not None and kind is not list and isinstance(child_value, Mapping):
            extra += 1 + _put_object(metadata, flat, child_value, clears, leaves)
            continue
        else:
            extra += _put(metadata, flat, child_value, clears)
        extra += 1
        leaves.append(flat)
    return extra


def _put(
    metadata: dict[str, Any],
    name: str,
    value: Any,
    clears: Mapping[str, tuple[str, ...]],
) -> int:
    """Place one value that is not an object under ``name``: arrays as JSON, the rest primitive.

    Returns how many names it wrote beyond one (the keys a null clears).
    """
    kind = type(value)
    if kind in _AS_IS:
        metadata[name] = value
        if value is None and name in clears:
            cleared = clears[name]
            metadata.update(dict.fromkeys(cleared))
            return len(cleared)
    elif kind is float:
        metadata[name] = number(value)
    elif kind is list:
        metadata[name] = encode_array(value)
    else:
        metadata[name] = primitive(value)
    return 0


def _is_object(kind: type, value: Any) -> bool:
    """Whether a value is flattened into ``name__child`` keys (any mapping but a list)."""
    return kind is dict or (kind is not list and kind not in _AS_IS and isinstance(value, Mapping))


def _names(name: str, value: Any, clears: Mapping[str, tuple[str, ...]]) -> Iterator[str]:
    """The metadata names ``metadata_of`` writes for one value, in its order."""
    if _is_object(type(value), value):
        for child_key, child_value in value.items():
            yield from _names(f"{name}{SEPARATOR}{child_key}", child_value, clears)
        return
    yield name
    if value is None:
        yield from clears.get(name, ())


def _note_collisions(record: Mapping[str, Any], route: Route, names: NamesSeen) -> None:
    """Find which names of a record were written twice and remember them."""
    collisions = names.collisions
    if len(collisions) >= _NAMES_LIMIT:
        return
    seen: set[str] = set()
    for key, value in record.items():
        if key in route.left_out or key.startswith("_sdc_"):
            continue
        for name in _names(key, value, route.null_clears):
            if name in seen and len(collisions) < _NAMES_LIMIT:
                collisions.add(name)
            seen.add(name)


def type_name(value: Any) -> str:
    """What a value that cannot be an id or a name is, in words (never the value)."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number with a fraction",
        decimal.Decimal: "a number with a fraction",
        dict: "an object",
        list: "an array",
    }.get(type(value), f"a {type(value).__name__}")
