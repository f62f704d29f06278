"""Record to Userpilot row: pure functions, no I/O, no Singer SDK.

This is the one place that knows Userpilot's row format (``userpilot-api.md``): which stream
feeds which object, which property is the identifier, and how a record's values become the
primitive metadata Userpilot accepts. Profiles (``to_row``), events (``to_event``, keyed by
``event_key``) and deletions (``deleted_id``; which records are deletions: ``marks.py``) share
those rules.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from target_userpilot.errors import ConfigurationError, InvalidRecord
from target_userpilot.records.object_keys import ObjectKeys, clear_lost
from target_userpilot.records.values import AS_IS as _AS_IS
from target_userpilot.records.values import encode_array, primitive
from target_userpilot.records.values import encode_json as _encode

#: What ``object_mapping[stream].object`` may say, and the keys an entry for each takes.
USERS = "users"
COMPANIES = "companies"
EVENTS = "events"
IGNORE = "ignore"
OBJECTS = (USERS, COMPANIES, EVENTS, IGNORE)
#: Not an object anyone maps to: Meltano's loader test stream, which writes nothing.
LOADER_TEST = "test"
#: The stream ``meltano config test <loader>`` sends (one record, id 1).
LOADER_TEST_STREAM = "meltano_test_stream"
_PROFILE_KEYS = ("id_property", "company_id_property")
#: An events entry's keys; the time and the Import API's keys are read in ``imports.py``.
_EVENT_KEYS: tuple[str, ...] = ("user_id_property", "event_name_property", "event_name")
_EVENT_KEYS += ("event_time_property", "event_type", "hostname_property", "pathname_property")
_EVENT_KEYS += ("company_id_property",)
MAPPING_KEYS: dict[str, tuple[str, ...]] = {
    USERS: _PROFILE_KEYS,
    COMPANIES: _PROFILE_KEYS,
    EVENTS: (*_EVENT_KEYS, "source"),
    # Switching a stream off keeps the rest of its entry valid, so it can be switched back.
    IGNORE: tuple(dict.fromkeys((*_PROFILE_KEYS, *_EVENT_KEYS, "source"))),
}

_NOUNS = {"event_name": "an event name", "event_type": "'track' or 'page_view'"}
_COMPANY_STREAM_NAMES = frozenset({"companies", "company"})
_EVENT_STREAM_NAMES = frozenset({"events", "event"})
#: What joins a tap's schema or database prefix to a table's name: ``public-companies``
#: (tap-postgres, tap-mysql), ``crm.companies``.
_PREFIX_SEPARATORS = re.compile(r"[-.]")
#: How nested names are joined: ours, and the SDK's default ``flattening_separator``.
_SEPARATOR = "__"

#: The same, less None: a null may have to clear the flattened keys of an object.
_PLAIN = frozenset({str, int, bool})


#: At most this many property names are remembered per stream as kept (see ``Route.kept``).
_KEPT_LIMIT = 4096
#: What ``_metadata`` reads as the known object keys when it is given none.
_NONE_KNOWN: dict[str, set[str]] = {}
#: At most this many collided names are remembered per stream (see ``Route.collisions``).
_NAMES_LIMIT = 100


@dataclass(frozen=True)
class Route:
    """Where one stream's records go, and which properties identify them."""

    object: str
    #: The profile's identifier; for events, the user's.
    id_property: str
    company_id_property: str | None = None
    #: For events: the property holding the event's name, unless ``event_name`` fixes it.
    event_name_property: str | None = None
    event_name: str | None = None
    #: For events: the time (``event_time_property``), the Import API's type and page fields.
    time_property: str | None = None
    event_type: str = "track"
    hostname_property: str | None = None
    pathname_property: str | None = None
    source: str | None = None
    #: Further properties that are row fields, not metadata (an imported event's time...).
    fields_elsewhere: tuple[str, ...] = ()
    #: For each object property the schema describes, the flattened keys under it: a null
    #: object must clear those keys, which are what Userpilot holds (``address__city``...).
    null_clears: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict, compare=False, hash=False
    )
    #: Property names seen and known to go into the metadata: checked per property of every
    #: record, a set lookup is cheaper than deciding again (see ``_metadata``).
    kept: set[str] = field(default_factory=set, compare=False, hash=False, repr=False)
    #: Metadata names that two properties of one record both gave a value (``address__city``
    #: beside ``address: {city}``); the later one in the record won. At most ``_NAMES_LIMIT``.
    collisions: set[str] = field(default_factory=set, compare=False, hash=False, repr=False)
    _reported: set[str] = field(default_factory=set, compare=False, hash=False, repr=False)
    #: The properties that become row fields, not metadata (see ``_metadata``).
    left_out: tuple[str, ...] = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.object == EVENTS and self.event_name is None and not self.event_name_property:
            object.__setattr__(self, "event_name_property", "event_name")
        fields: tuple[str | None, ...] = (self.id_property, self.company_id_property)
        fields += (self.event_name_property, *self.fields_elsewhere)
        object.__setattr__(self, "left_out", tuple(name for name in fields if name))

    @property
    def ignored(self) -> bool:
        """True when the stream is dropped without sending anything."""
        return self.object == IGNORE

    def take_collisions(self) -> list[str]:
        """Collided metadata names not taken before, sorted: read once per batch, warn once.

        Rows stay pure, so the caller logs; this hands each name out once per stream.
        """
        new = sorted(self.collisions - self._reported)
        self._reported.update(new)
        return new


def route_for(
    stream_name: str,
    schema_properties: Sequence[str] | Mapping[str, Any],
    key_properties: Sequence[str] | None,
    mapping: Mapping[str, Any] | None = None,
    *,
    import_events: bool = False,
) -> Route:
    """Decide the object and the identifier properties of a stream.

    The object comes from ``object_mapping`` when the stream has an entry; otherwise from the
    stream's name (``default_object``), and Meltano's loader test stream is a connection
    test that writes nothing (``LOADER_TEST``). The identifier is the
    mapping's ``id_property``, else ``user_id`` / ``company_id`` when the schema has it, else
    the stream's single key property. An event's user is the mapping's ``user_id_property``,
    else ``user_id``; its name the mapping's fixed ``event_name``, else the property named by
    ``event_name_property``, else ``event_name``. Given the schema's properties as a mapping,
    nested objects it describes are noted so that a null object clears their keys.
    With ``import_events`` (``events_api: import``), an events route also names the time, the
    company and the page view properties, which then leave the metadata (``imports.py``).
    """
    mapping = mapping or {}
    # Settings checked every entry before any input; a caller that skipped them (a test, a
    # tool) meets the same sentence here.
    check_object_mapping({stream_name: mapping})
    obj = mapping.get("object")
    if obj is None and stream_name == LOADER_TEST_STREAM:
        return Route(LOADER_TEST, "id")
    obj = obj or default_object(stream_name)
    clears = null_clears(schema_properties)
    if obj == EVENTS:
        return _event_route(stream_name, mapping, clears, import_events)

    natural_id = id_key(obj)
    id_property = mapping.get("id_property")
    if not id_property:
        keys = list(key_properties or [])
        if natural_id in schema_properties or len(keys) != 1:
            id_property = natural_id
        else:
            id_property = keys[0]

    company_id_property = None
    if obj == USERS:
        company_id_property = mapping.get("company_id_property") or "company_id"
        if company_id_property == id_property:
            company_id_property = None
    return Route(obj, id_property, company_id_property, null_clears=clears)


def default_object(stream_name: str) -> str:
    """The object a stream without an ``object`` in ``object_mapping`` goes to, by its name.

    ``companies`` or ``company`` (any case) load companies, ``events`` or ``event`` send events,
    every other stream loads users. The name is read after a tap's schema or database prefix:
    tap-postgres calls the table ``companies`` of schema ``public`` ``public-companies``, and
    loading it as users would merge company 1 into user 1.
    """
    table = table_name(stream_name).lower()
    if table in _COMPANY_STREAM_NAMES:
        return COMPANIES
    if table in _EVENT_STREAM_NAMES:
        return EVENTS
    return USERS


def table_name(stream_name: str) -> str:
    """The name after a schema or database prefix: ``public-companies`` → ``companies``."""
    return _PREFIX_SEPARATORS.split(stream_name)[-1]


def check_object_mapping(mapping: Any) -> None:
    """Raise a ConfigurationError naming the stream and key of the first bad entry."""
    if not isinstance(mapping, Mapping):
        raise ConfigurationError("object_mapping must be an object keyed by stream name.")
    for stream, entry in mapping.items():
        if not isinstance(entry, Mapping):
            msg = f'object_mapping[\'{stream}\'] must be an object like {{"object": "users"}}.'
            raise ConfigurationError(msg)
        obj = entry.get("object")
        if obj is not None and obj not in OBJECTS:
            shown = f"'{obj}'" if isinstance(obj, str) else kind_of(obj)
            msg = f"object_mapping['{stream}'].object is {shown}; use one of {', '.join(OBJECTS)}."
            raise ConfigurationError(msg)
        target = obj or default_object(stream)
        allowed = MAPPING_KEYS[target]
        unknown = sorted(str(key) for key in entry if key != "object" and key not in allowed)
        if unknown:
            what = f"an entry for {target}" if obj else f"an entry without object ({target})"
            msg = (
                f"object_mapping['{stream}'] has unknown key(s) {', '.join(unknown)}; "
                f"{what} takes object, {', '.join(allowed)}."
            )
            raise ConfigurationError(msg)
        for key in allowed:
            value = entry.get(key)
            if value is not None and not (isinstance(value, str) and value.strip()):
                noun = _NOUNS.get(key, "a property name")
                msg = (
                    f"object_mapping['{stream}'].{key} is {kind_of(value)}; it must be {noun}, "
                    "a non-empty string."
                )
                raise ConfigurationError(msg)


def kind_of(value: Any) -> str:
    """What a JSON value is, in words (config values are described, not echoed)."""
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, decimal.Decimal)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "null" if value is None else type(value).__name__


def _event_route(
    stream_name: str,
    mapping: Mapping[str, Any],
    clears: dict[str, tuple[str, ...]],
    import_events: bool = False,
) -> Route:
    """The route of an events stream: whose event it is, and where its name comes from."""
    user = mapping.get("user_id_property") or "user_id"
    when = mapping.get("event_time_property") or "timestamp"
    # Track mode: the time stays in the metadata, as ever.
    kw: dict[str, Any] = {"event_name": mapping.get("event_name"), "time_property": when}
    page = import_events and mapping.get("event_type") == "page_view"
    if import_events:  # the Import API's fields leave the metadata (imports.py)
        host = (mapping.get("hostname_property") or "hostname") if page else None
        path = (mapping.get("pathname_property") or "pathname") if page else None
        company = mapping.get("company_id_property") or "company_id"
        kw |= {"event_type": "page_view" if page else "track", "source": mapping.get("source")}
        kw |= {"hostname_property": host, "pathname_property": path}
        kw["company_id_property"] = None if company == user else company
        kw["fields_elsewhere"] = tuple(n for n in (when, host, path) if n)
    kw["event_name"] = None if page else kw["event_name"]
    named = kw["event_name"] or page
    kw["event_name_property"] = None if named else mapping.get("event_name_property")
    return Route(EVENTS, user, null_clears=clears, **kw)


def null_clears(properties: Collection[str] | Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Map each name a null may stand for an object under to the flattened keys it clears.

    Two sources, because a stream's schema comes either way: nested objects the schema
    describes (``address: {city}`` clears ``address__city``), and, for a schema the SDK's own
    ``flattening_enabled`` already flattened, the ``__`` prefixes of its property names that
    are not properties themselves (``address__city`` alone: a null ``address`` clears it). A
    prefix that is a property of its own is a value, not an object, and clears nothing.
    """
    names = properties if isinstance(properties, Mapping) else frozenset(properties)
    found: dict[str, list[str]] = {}
    for name in names:
        if _SEPARATOR not in name:
            continue
        parts = name.split(_SEPARATOR)
        for end in range(1, len(parts)):
            prefix = _SEPARATOR.join(parts[:end])
            if prefix and prefix not in names:
                found.setdefault(prefix, []).append(name)
    if isinstance(properties, Mapping):
        for name, leaves in nested_keys(properties).items():
            found.setdefault(name, []).extend(leaves)
    return {name: tuple(dict.fromkeys(leaves)) for name, leaves in found.items()}


def nested_keys(properties: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[str, ...]]:
    """Map each object property (flattened name) to the flattened leaf keys the schema gives it."""
    found: dict[str, tuple[str, ...]] = {}
    for name, prop in properties.items():
        children = prop.get("properties") if isinstance(prop, Mapping) else None
        if not isinstance(children, Mapping) or not children:
            continue
        flat = f"{prefix}{name}"
        inner = nested_keys(children, f"{flat}{_SEPARATOR}")
        found.update(inner)
        leaves: list[str] = []
        for child in children:
            child_flat = f"{flat}{_SEPARATOR}{child}"
            leaves.extend(inner.get(child_flat, (child_flat,)))
        found[flat] = tuple(leaves)
    return found


def id_key(object: str) -> str:
    """The row field that identifies a profile of ``object``: ``user_id`` or ``company_id``."""
    return "company_id" if object == COMPANIES else "user_id"


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
    raise InvalidRecord(f"'{prop}' is {_type_name(value)}, not a string or integer")


def to_row(
    record: Mapping[str, Any], route: Route, keys: ObjectKeys | None = None
) -> tuple[str, dict[str, Any]]:
    """Turn one record into ``(id, row)``, or raise :class:`InvalidRecord` with the reason.

    ``keys``: the flattened keys sent so far under each object property of the stream; a null
    object, or one that lost keys, sends null for those it no longer has (and new keys are
    learned into it).
    """
    id_prop = route.id_property
    row_id = identifier(record.get(id_prop), id_prop)
    metadata = _metadata(record, route, keys)
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


def to_event(record: Mapping[str, Any], route: Route) -> dict[str, Any]:
    """Turn one record into a track request body, or raise :class:`InvalidRecord` with why.

    ``{"user_id", "event_name", "metadata"}``: the user id by the rules of any id, the name a
    non-empty string, the metadata by the rules of profiles, less the user and name properties.
    """
    user_prop = route.id_property
    user_id = identifier(record.get(user_prop), user_prop)
    name = route.event_name
    if name is None:
        prop = route.event_name_property or "event_name"  # set for events (__post_init__)
        name = record.get(prop)
        if type(name) is not str or not name:
            raise InvalidRecord(_name_problem(name, prop))
    return {"user_id": user_id, "event_name": name, "metadata": _metadata(record, route)}


def event_key(
    record: Mapping[str, Any], key_properties: Sequence[str] | None, *, stream: str
) -> str:
    """The key an event is remembered by, so that it is sent once: stable across runs.

    With key properties, their values; without, a SHA-256 of the whole record as canonical
    JSON (sorted keys), less the ``_sdc_*`` columns, which change from one extraction to the
    next. Either way prefixed by the stream name, as a JSON array: ``["events",["e-1"]]`` or
    ``["events","sha256:…"]``. A key property that is missing or null leaves the event
    without a key, which would make unrelated events one: that is an :class:`InvalidRecord`.
    """
    if key_properties:
        values = []
        for prop in key_properties:
            value = record.get(prop)
            if value is None:
                raise InvalidRecord(f"key property '{prop}' is missing or null")
            values.append(value)
        return _canonical([stream, values])
    content = {k: v for k, v in record.items() if not k.startswith("_sdc_")}
    digest = hashlib.sha256(_canonical(content).encode()).hexdigest()
    return _canonical([stream, f"sha256:{digest}"])


def deleted_id(record: Mapping[str, Any], route: Route) -> str:
    """The id a deletion request names: the profile's id, by the rules of ``to_row``."""
    if route.object not in (USERS, COMPANIES):
        msg = f"Only users and companies can be deleted, not {route.object}."
        raise ValueError(msg)
    return identifier(record.get(route.id_property), route.id_property)


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
        return (_encode(row) + "\n").encode()
    except UnicodeEncodeError:
        # JSON allows "\ud800"; UTF-8 cannot carry a lone surrogate, nor can Userpilot.
        raise InvalidRecord("a text value is not valid Unicode (a lone surrogate)") from None


def _metadata(
    record: Mapping[str, Any], route: Route, keys: ObjectKeys | None = None
) -> dict[str, Any]:
    """A row's metadata: every property but the row's own fields and ``_sdc_*``, flattened."""
    left_out_names = route.left_out
    clears = route.null_clears
    kept = route.kept
    # Properties that held an object: an empty dict (no keys given) costs one test per value.
    known = keys.known if keys is not None else _NONE_KNOWN
    metadata: dict[str, Any] = {}
    # Keys left out and keys written beyond one per property (objects, clears): a metadata
    # shorter than the count means two properties wrote one name. Counting costs less than
    # a lookup per property, and a collision is rare.
    left_out = spread = 0
    for key, value in record.items():
        if key not in kept:
            if key in left_out_names or key.startswith("_sdc_"):
                left_out += 1
                continue
            if len(kept) < _KEPT_LIMIT:
                kept.add(key)
        # Runs for every property of every record: plain values are placed inline.
        if type(value) in _PLAIN:
            metadata[key] = value
            if known and key in known and keys is not None:  # an object before, not now
                spread += clear_lost(metadata, key, value, keys, _SEPARATOR)
        else:
            spread += _put(metadata, key, value, clears)
            # A null is common and clears only a property known to have held an object.
            if keys is not None and (
                key in known or (value is not None and _is_object(type(value), value))
            ):
                spread += clear_lost(metadata, key, value, keys, _SEPARATOR)
    if len(metadata) != len(record) - left_out + spread:
        _note_collisions(record, route)
    return metadata


def _put(
    metadata: dict[str, Any],
    name: str,
    value: Any,
    clears: Mapping[str, tuple[str, ...]],
) -> int:
    """Place one value under ``name``: objects flattened to ``name__child``, arrays as JSON.

    Returns how many names it wrote beyond one, for the collision count of ``to_row``.
    """
    kind = type(value)
    if kind in _AS_IS:
        metadata[name] = value
        if value is None and name in clears:
            cleared = clears[name]
            metadata.update(dict.fromkeys(cleared))
            return len(cleared)
    elif kind is float:
        metadata[name] = value if math.isfinite(value) else None
    elif _is_object(kind, value):
        extra = -1
        for child_key, child_value in value.items():
            extra += 1 + _put(metadata, f"{name}{_SEPARATOR}{child_key}", child_value, clears)
        return extra
    elif kind is list:
        metadata[name] = encode_array(value)
    else:
        metadata[name] = primitive(value)
    return 0


def _is_object(kind: type, value: Any) -> bool:
    """Whether a value is flattened into ``name__child`` keys (any mapping but a list)."""
    return kind is dict or (kind is not list and isinstance(value, Mapping))


def _names(name: str, value: Any, clears: Mapping[str, tuple[str, ...]]) -> Iterator[str]:
    """The metadata names ``_put`` writes for one value, in its order."""
    if _is_object(type(value), value):
        for child_key, child_value in value.items():
            yield from _names(f"{name}{_SEPARATOR}{child_key}", child_value, clears)
        return
    yield name
    if value is None:
        yield from clears.get(name, ())


def _note_collisions(record: Mapping[str, Any], route: Route) -> None:
    """Find which names of a record were written twice and remember them on the route."""
    if len(route.collisions) >= _NAMES_LIMIT:
        return
    seen: set[str] = set()
    for key, value in record.items():
        if key in route.left_out or key.startswith("_sdc_"):
            continue
        for name in _names(key, value, route.null_clears):
            if name in seen and len(route.collisions) < _NAMES_LIMIT:
                route.collisions.add(name)
            seen.add(name)


def _name_problem(value: Any, prop: str) -> str:
    """Why a value cannot be an event's name."""
    if value is None:
        return f"'{prop}' is missing or null"
    if value == "":
        return f"'{prop}' is an empty string"
    return f"'{prop}' is {_type_name(value)}, not a string"


def _canonical(value: Any) -> str:
    """One JSON text per value whatever its key order: sorted keys, compact, ASCII only.

    ASCII, so that a lone surrogate still has a text; ``str`` for what JSON has no type for
    (dates, decimals), which prints the same value the same way in every run.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number with a fraction",
        decimal.Decimal: "a number with a fraction",
        dict: "an object",
        list: "an array",
    }.get(type(value), f"a {type(value).__name__}")
