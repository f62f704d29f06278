"""Record to event: a track request's body, and the key an event is sent once by. Pure, no I/O.

An event's user follows the rules of every id, its metadata those of every row (``rows.py``).
Events are not idempotent, so each has a key (:func:`event_key`) that stays the same across runs:
the ledger remembers the keys Userpilot accepted, and an event whose key is there is not sent
again. Import API records (``imports.py``) are built on the same body and key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from target_userpilot.errors import InvalidRecord
from target_userpilot.records.routing import Route
from target_userpilot.records.rows import NamesSeen, identifier, metadata_of, type_name


def to_event(
    record: Mapping[str, Any], route: Route, names: NamesSeen | None = None
) -> dict[str, Any]:
    """Turn one record into a track request body, or raise :class:`InvalidRecord` with why.

    ``{"user_id", "event_name", "metadata"}``: the user id by the rules of any id, the name a
    non-empty string, the metadata by the rules of profiles, less the user and name properties.
    """
    user_prop = route.id_property
    user_id = identifier(record.get(user_prop), user_prop)
    name = route.event_name
    if name is None:
        prop = route.event_name_property or "event_name"  # set for events (Route.__post_init__)
        name = record.get(prop)
        if type(name) is not str or not name:
            raise InvalidRecord(_name_problem(name, prop))
    return {"user_id": user_id, "event_name": name, "metadata": metadata_of(record, route, names)}


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


def _name_problem(value: Any, prop: str) -> str:
    """Why a value cannot be an event's name."""
    if value is None:
        return f"'{prop}' is missing or null"
    if value == "":
        return f"'{prop}' is an empty string"
    return f"'{prop}' is {type_name(value)}, not a string"


def _canonical(value: Any) -> str:
    """One JSON text per value whatever its key order: sorted keys, compact, ASCII only.

    ASCII, so that a lone surrogate still has a text; ``str`` for what JSON has no type for
    (dates, decimals), which prints the same value the same way in every run.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
