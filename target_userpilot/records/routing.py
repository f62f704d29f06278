"""Which stream goes where, and by which properties: pure functions, no I/O, no Singer SDK.

A stream's :class:`Route` is decided once, from ``object_mapping``, the stream's name, its
schema and its key properties: the Userpilot object it loads (users, companies, events, or
nothing), the property that identifies each record, and the properties that are row fields
rather than metadata. ``check_object_mapping`` holds the rules every ``object_mapping`` entry
keeps, checked with the other settings before any input is read.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from target_userpilot.errors import ConfigurationError

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
SEPARATOR = "__"


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
    #: Read only, like the rest of the route.
    null_clears: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict, compare=False, hash=False
    )
    #: The properties that become row fields, not metadata (see ``rows._metadata``).
    left_out: frozenset[str] = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.object == EVENTS and self.event_name is None and not self.event_name_property:
            object.__setattr__(self, "event_name_property", "event_name")
        fields: tuple[str | None, ...] = (self.id_property, self.company_id_property)
        fields += (self.event_name_property, *self.fields_elsewhere)
        object.__setattr__(self, "left_out", frozenset(name for name in fields if name))

    @property
    def ignored(self) -> bool:
        """True when the stream is dropped without sending anything."""
        return self.object == IGNORE


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
        if SEPARATOR not in name:
            continue
        parts = name.split(SEPARATOR)
        for end in range(1, len(parts)):
            prefix = SEPARATOR.join(parts[:end])
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
        inner = nested_keys(children, f"{flat}{SEPARATOR}")
        found.update(inner)
        leaves: list[str] = []
        for child in children:
            child_flat = f"{flat}{SEPARATOR}{child}"
            leaves.extend(inner.get(child_flat, (child_flat,)))
        found[flat] = tuple(leaves)
    return found


def id_key(object: str) -> str:
    """The row field that identifies a profile of ``object``: ``user_id`` or ``company_id``."""
    return "company_id" if object == COMPANIES else "user_id"
