"""Record to Import API record: events that keep the time they happened. Pure functions, no I/O.

``events_api: import`` sends events to Userpilot's Import API (``POST /v1/imports``) as NDJSON
files of ``track`` or ``page_view`` records, each with ``inserted_at``, the time the event
happened. The track API cannot carry a time, so there the same property only feeds a warning
(``decide.TrackEvent.happened_at``). Ids and metadata follow the rules of every row
(``rows.py``), names and keys those of every event (``events.py``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from target_userpilot.errors import ConfigurationError, InvalidRecord
from target_userpilot.records.events import to_event
from target_userpilot.records.routing import EVENTS, Route, default_object
from target_userpilot.records.rows import NamesSeen, identifier
from target_userpilot.records.values import ExponentFloat, number

#: The record types an events stream may send through the Import API.
IMPORT_EVENT_TYPES = ("track", "page_view")
#: The settings' two ways for events (``events_api``).
EVENTS_APIS = ("track", "import")
#: Keys of an events entry that only the Import API can honour.
IMPORT_ONLY_KEYS = (
    "event_type",
    "hostname_property",
    "pathname_property",
    "company_id_property",
    "source",
)
#: What ``source`` says when the mapping does not: events sent by a server over HTTP, which is
#: how Userpilot labels events that did not come from its web client.
DEFAULT_SOURCE = "backend-http"
#: Properties a page view carries under their own names (Userpilot's import examples).
PAGE_VIEW_CONTEXT = (
    "country_code",
    "screen_width",
    "screen_height",
    "operating_system",
    "browser",
    "browser_language",
    "user_agent",
    "device_type",
)


def event_time(value: Any, prop: str) -> str:
    """The time an event happened, as UTC ISO 8601 (``2024-01-02T03:04:05Z``).

    An ISO 8601 date-time string (or a date, read as midnight); one without an offset is read
    as UTC, as warehouses store it. Anything else raises :class:`InvalidRecord`: the time of
    the run is never put in its place, since that is exactly the error the Import API avoids.
    """
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            moment = datetime.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            msg = f"'{prop}' is not an ISO 8601 date-time (the time the event happened)"
            raise InvalidRecord(msg) from None
    elif value is None or value == "":
        msg = (
            f"'{prop}' is missing or empty: an imported event needs the time it happened "
            "(set event_time_property in object_mapping)"
        )
        raise InvalidRecord(msg)
    else:
        kind = "a number" if isinstance(value, (int, float)) else type(value).__name__
        msg = f"'{prop}' is {kind}, not an ISO 8601 date-time (the time the event happened)"
        raise InvalidRecord(msg)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    try:
        utc = moment.astimezone(datetime.timezone.utc)
    except OverflowError:
        raise InvalidRecord(f"'{prop}' is a date-time out of range") from None
    # isoformat, not strftime: "%Y" writes year 1 as "1", which is no ISO 8601 date (and
    # "0001-01-01" is a common stand-in for "no date" in warehouses). Microseconds only if any.
    return f"{utc.replace(tzinfo=None).isoformat()}Z"


def to_import_record(
    record: Mapping[str, Any], route: Route, names: NamesSeen | None = None
) -> dict[str, Any]:
    """One Import API record for an event, or raise :class:`InvalidRecord` with why.

    ``track``: ``event_type``, ``user_id``, ``event_name``, ``source``, ``inserted_at``,
    ``metadata`` and, when the record names one, ``company_id``. ``page_view``: ``user_id``,
    ``hostname``, ``pathname``, ``source``, ``inserted_at`` (``company_id`` likewise), and
    the context fields Userpilot's page views know (:data:`PAGE_VIEW_CONTEXT`) when present.
    """
    time_prop = route.time_property or "timestamp"
    inserted_at = event_time(record.get(time_prop), time_prop)
    source = route.source or DEFAULT_SOURCE
    company = _company(record, route)
    if route.event_type == "page_view":
        user_prop = route.id_property
        out: dict[str, Any] = {
            "event_type": "page_view",
            "user_id": identifier(record.get(user_prop), user_prop),
            "hostname": _text(record, route.hostname_property or "hostname"),
            "pathname": _text(record, route.pathname_property or "pathname"),
            "source": source,
            "inserted_at": inserted_at,
        }
        if company is not None:
            out["company_id"] = company
        for name in PAGE_VIEW_CONTEXT:
            value = record.get(name)
            if type(value) is float:
                value = number(value)  # NaN and the infinities have no JSON number
            if value is not None and type(value) in (str, int, float, ExponentFloat):
                out[name] = value
        return out
    event = to_event(record, route, names)
    out = {
        "event_type": "track",
        "user_id": event["user_id"],
        "event_name": event["event_name"],
        "source": source,
        "inserted_at": inserted_at,
        "metadata": event["metadata"],
    }
    if company is not None:
        out["company_id"] = company
    return out


def page_view_left_out(record: Mapping[str, Any], route: Route) -> list[str]:
    """The properties of a page view record that its import record does not carry, sorted.

    A page view has no metadata: the sink names these once per stream, so nothing is dropped
    without a word.
    """
    carried = {*route.left_out, *PAGE_VIEW_CONTEXT}
    return sorted(k for k in record if k not in carried and not k.startswith("_sdc_"))


def _company(record: Mapping[str, Any], route: Route) -> str | None:
    prop = route.company_id_property
    if prop is None:
        return None
    value = record.get(prop)
    if value is None or value == "":
        return None
    return identifier(value, prop)


def _text(record: Mapping[str, Any], prop: str) -> str:
    value = record.get(prop)
    if isinstance(value, str) and value:
        return value
    if value is None or value == "":
        raise InvalidRecord(f"'{prop}' is missing or empty (a page view needs it)")
    raise InvalidRecord(f"'{prop}' is {type(value).__name__}, not a string")


def check_event_mappings(mapping: Mapping[str, Any], events_api: str) -> None:
    """Raise a ConfigurationError for an events entry that ``events_api`` cannot honour.

    Runs after ``rows.check_object_mapping`` (known keys, non-empty names), before any input.
    """
    if events_api not in EVENTS_APIS:
        msg = f"events_api must be 'track' or 'import', not '{events_api}'."
        raise ConfigurationError(msg)
    for stream, entry in mapping.items():
        if (entry.get("object") or default_object(stream)) != EVENTS:
            continue
        kind = entry.get("event_type")
        if kind is not None and kind not in IMPORT_EVENT_TYPES:
            msg = (
                f"object_mapping['{stream}'].event_type is '{kind}'; use 'track' (the default) "
                "or 'page_view'."
            )
            raise ConfigurationError(msg)
        if events_api == "import":
            if kind == "page_view" and (
                entry.get("event_name") or entry.get("event_name_property")
            ):
                msg = (
                    f"object_mapping['{stream}'] sends page views, which have no event name; "
                    "remove event_name and event_name_property, or set event_type to 'track'."
                )
                raise ConfigurationError(msg)
            continue
        honoured = [key for key in IMPORT_ONLY_KEYS if entry.get(key) not in (None, "track")]
        if honoured:
            what = "sends page views" if kind == "page_view" else f"sets {', '.join(honoured)}"
            msg = (
                f"object_mapping['{stream}'] {what}, which only the Import API can send; the "
                "track API (events_api 'track', the default) takes a user, an event name and "
                "metadata. Set events_api to 'import' (Enterprise plan or Growth add-on), or "
                "remove those keys."
            )
            raise ConfigurationError(msg)
