"""Events for the track API and the Import API: configs that route a stream to either, the
Import API's event records, and the ids of what landed in the sandbox.

The track API's invoice event (``event``, ``events_schema``) is in ``messages.py``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import API_KEY, record, schema, state

# The track API


def track_config(sandbox: Sandbox, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A config that sends events through the track API quickly, its ledger in ``tmp_path``."""
    return {
        "api_url": sandbox.url,
        "api_key": API_KEY,
        "events_per_minute": 6000,
        "batch_wait_seconds": 0.2,
        "state_db": str(tmp_path / "ledger.db"),
        **extra,
    }


def tracked_ids(sandbox: Sandbox) -> Counter[str]:
    """How many times the sandbox received each event id through the track API."""
    return Counter(e["metadata"]["event_id"] for e in sandbox.events())


# The Import API

IMPORT_EVENT_SCHEMA: dict[str, Any] = {
    "event_id": {"type": "string"},
    "user_id": {"type": "integer"},
    "event_name": {"type": "string"},
    "amount": {"type": "number"},
    "paid_at": {"type": "string", "format": "date-time"},
}
#: The events stream imported with its time in ``paid_at``.
IMPORT_MAPPING = {"events": {"object": "events", "event_time_property": "paid_at"}}


def paid_at(i: int) -> str:
    """A source time a day per event in 2023, with a +02:00 offset (normalised to UTC)."""
    day = i % 28 + 1
    return f"2023-03-{day:02d}T10:{i % 60:02d}:00+02:00"


def import_event(i: int, user_id: int, **extra: Any) -> dict[str, Any]:
    """An 'invoice_paid' event of user ``user_id`` with its time in ``paid_at``."""
    rec = {
        "event_id": f"e-{i}",
        "user_id": user_id,
        "event_name": "invoice_paid",
        "amount": i + 0.5,
        "paid_at": paid_at(i),
    }
    rec.update(extra)
    return rec


def import_events_schema(stream: str = "events") -> dict[str, Any]:
    """The SCHEMA message of a stream of ``import_event`` records keyed by ``event_id``."""
    return schema(stream, IMPORT_EVENT_SCHEMA, ["event_id"])


def import_config(sandbox: Sandbox, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A config that imports the events stream (``IMPORT_MAPPING``), its ledger in ``tmp_path``."""
    return {
        "api_url": sandbox.url,
        "api_key": API_KEY,
        "events_api": "import",
        "object_mapping": IMPORT_MAPPING,
        "batch_wait_seconds": 0.2,
        "state_db": str(tmp_path / "ledger.db"),
        **extra,
    }


def imported_ids(sandbox: Sandbox) -> Counter[str]:
    """How many times the sandbox's completed import jobs brought in each event id."""
    return Counter(e["metadata"]["event_id"] for e in sandbox.imported_events())


# One user's events through either API, as the ledger's history keeps them

#: Events keyed by ``id``, their time in ``at``.
TIMED_EVENT_SCHEMA: dict[str, Any] = {
    "id": {"type": "string"},
    "user_id": {"type": "string"},
    "event_name": {"type": "string"},
    "at": {"type": "string", "format": "date-time"},
}


def user_events_config(sandbox: Sandbox, state_db: str, api: str) -> dict[str, Any]:
    """skip_unchanged, and the events stream of ``user_events_input``: clicks through the track
    API, events through the Import API with their time in ``at``."""
    if api == "track":
        mapping = {"clicks": {"object": "events"}}
    else:
        mapping = {"events": {"object": "events", "event_time_property": "at"}}
    return {
        "api_url": sandbox.url,
        "api_key": API_KEY,
        "state_db": state_db,
        "skip_unchanged": True,
        "events_api": api,
        "object_mapping": mapping,
    }


def user_events_input(api: str) -> list[dict[str, Any]]:
    """User u-7 and two events: clicks through the track API, or imported with their time."""
    stream = "clicks" if api == "track" else "events"
    prefix = "c" if api == "track" else "i"
    names = ("Opened report", "Exported CSV") if api == "track" else ("Signed up", "Invited")
    times = ("2026-03-01T09:30:00Z", "2026-03-02T14:05:00Z")
    return [
        schema("users", {"id": {"type": "string"}, "plan": {"type": "string"}}, ["id"]),
        record("users", {"id": "u-7", "plan": "pro"}),
        schema(stream, TIMED_EVENT_SCHEMA, ["id"]),
        *(
            record(stream, {"id": f"{prefix}-{n}", "user_id": "u-7", "event_name": name, "at": at})
            for n, (name, at) in enumerate(zip(names, times, strict=True), start=1)
        ),
        state({"done": api}),
    ]
