"""Singer messages for tests: the sandbox's API key, the schemas, and builders of each message."""

from __future__ import annotations

import gzip
import json
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

API_KEY = "sandbox-key-3f9c1e77"

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "company_id": {"type": ["string", "integer", "null"]},
        "plan": {"type": ["string", "null"]},
        "address": {
            "type": ["object", "null"],
            "properties": {"city": {"type": "string"}, "geo": {"type": "object"}},
        },
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "signed_up_at": {"type": ["string", "null"], "format": "date-time"},
        "score": {"type": ["number", "null"]},
        "active": {"type": ["boolean", "null"]},
    },
}
COMPANY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "company_id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "employees": {"type": ["integer", "null"]},
    },
}


def schema(
    stream: str, properties: dict[str, Any], key_properties: list[str] | None = None
) -> dict[str, Any]:
    """A SCHEMA message."""
    body = properties if "properties" in properties else {"properties": properties}
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": body,
        "key_properties": key_properties or [],
    }


def record(stream: str, rec: dict[str, Any]) -> dict[str, Any]:
    """A RECORD message."""
    return {"type": "RECORD", "stream": stream, "record": rec}


def state(value: Any) -> dict[str, Any]:
    """A STATE message."""
    return {"type": "STATE", "value": value}


def user(i: int, **extra: Any) -> dict[str, Any]:
    """A plausible user record with id ``i``."""
    rec = {
        "id": i,
        "email": f"user{i}@example.com",
        "name": f"User {i}",
        "company_id": f"c-{i % 40}",
        "plan": "pro" if i % 3 else "free",
    }
    rec.update(extra)
    return rec


def users_messages(n: int, *, start: int = 0, state_every: int = 0) -> Iterator[dict[str, Any]]:
    """SCHEMA + ``n`` user records, with a STATE after every ``state_every`` records."""
    yield schema("users", USER_SCHEMA, ["id"])
    for i in range(start, start + n):
        yield record("users", user(i))
        if state_every and (i - start + 1) % state_every == 0:
            yield state({"bookmarks": {"users": i}})
    yield state({"bookmarks": {"users": start + n - 1, "done": True}})


def users_input(ids: Iterable[int], **extra: Any) -> list[dict[str, Any]]:
    """SCHEMA, a user record per id of ``ids`` (with ``extra`` fields), and a last STATE."""
    return [
        schema("users", USER_SCHEMA, ["id"]),
        *(record("users", user(i, **extra)) for i in ids),
        state({"done": True}),
    ]


def changed_users(
    n: int, changed: Collection[int] = frozenset(), state_every: int = 0
) -> list[dict[str, Any]]:
    """SCHEMA and ``n`` users on plan 'pro' but those of ``changed`` ('changed'), with a STATE
    after every ``state_every`` records and a last one."""
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in range(n):
        messages.append(record("users", user(i, plan="changed" if i in changed else "pro")))
        if state_every and (i + 1) % state_every == 0:
            messages.append(state({"upto": i}))
    messages.append(state({"done": n}))
    return messages


def encode_messages(messages: Iterable[dict[str, Any] | str]) -> bytes:
    """Singer input: one JSON message per line (strings are passed through as raw lines)."""
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    return ("\n".join(lines) + "\n").encode()


#: What `meltano config test <loader>` sends (Meltano 4.4, LoaderTestService).
MELTANO_TEST_MESSAGES = [
    schema(
        "meltano_test_stream",
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        ["id"],
    ),
    record(
        "meltano_test_stream",
        {"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"},
    ),
    state({"bookmarks": {"meltano_test_stream": {"last_record": 1}}}),
    {"type": "ACTIVATE_VERSION", "stream": "meltano_test_stream", "version": 1},
]


# Deletions and events

DELETED_AT = "2026-11-02T08:15:00Z"


#: A log-based tap's schema: the deletion mark is a column of the stream.
TAP_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **USER_SCHEMA["properties"],
        "plan": {"type": "string"},  # not nullable: a deleted row's null plan breaks it
        "_sdc_deleted_at": {"type": ["null", "string"], "format": "date-time"},
    },
}


def deleted_user(i: int) -> dict[str, Any]:
    """A user deleted in the source, as log-based taps send it: the key and the mark."""
    return {"id": i, "email": None, "name": None, "plan": None, "_sdc_deleted_at": DELETED_AT}


EVENT_SCHEMA: dict[str, Any] = {
    "event_id": {"type": "string"},
    "user_id": {"type": "integer"},
    "event_name": {"type": "string"},
    "invoice": {
        "type": "object",
        "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
    },
    "seats": {"type": "array", "items": {"type": "integer"}},
    "paid_at": {"type": "string", "format": "date-time"},
}


def event(i: int, user_id: int, **extra: Any) -> dict[str, Any]:
    """An 'invoice_paid' event of user ``user_id`` with a nested object and an array."""
    rec = {
        "event_id": f"e-{i}",
        "user_id": user_id,
        "event_name": "invoice_paid",
        "invoice": {"amount": i + 0.5, "currency": "EUR"},
        "seats": [1, i],
        "paid_at": "2026-01-02T03:04:05+01:00",
    }
    rec.update(extra)
    return rec


def events_schema() -> dict[str, Any]:
    """The SCHEMA message of an events stream keyed by ``event_id``."""
    return schema("events", EVENT_SCHEMA, ["event_id"])


# Full-table copies (mirror deletes)

#: The stream of the full-table copies: tap-postgres's name for a table.
MIRRORED_STREAM = "public-crm_users"


def activate_version(version: int, stream: str = MIRRORED_STREAM) -> dict[str, Any]:
    """An ACTIVATE_VERSION message of ``stream``."""
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


def full_table_copy(
    version: int,
    ids: Iterable[int],
    *,
    opening: bool = True,
    closing: bool = True,
    stream: str = MIRRORED_STREAM,
    final_state: bool = True,
) -> list[dict[str, Any]]:
    """One full-table copy of ``ids`` as a tap sends it."""
    messages: list[dict[str, Any]] = [schema(stream, USER_SCHEMA, ["id"])]
    if opening:
        messages.append(activate_version(version, stream))
    for i in ids:
        messages.append({**record(stream, user(i)), "version": version})
    if closing:
        messages.append(activate_version(version, stream))
    if final_state:
        messages.append(state({"bookmarks": {stream: {"version": version}}}))
    return messages


# BATCH messages


def batch(
    stream: str, files: list[str], *, fmt: str = "jsonl", compression: str = "none"
) -> dict[str, Any]:
    """A BATCH message."""
    return {
        "type": "BATCH",
        "stream": stream,
        "encoding": {"format": fmt, "compression": compression},
        "manifest": files,
    }


def write_jsonl(path: Path, records: Iterable[dict[str, Any]], *, compress: bool = False) -> Path:
    """A batch file as the SDK's JSONL batcher writes it: one record per line."""
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as out:
        for rec in records:
            out.write(json.dumps(rec) + "\n")
    return path
