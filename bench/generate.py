"""Benchmark input: Singer messages for a `users` stream shaped like a warehouse export.

Every benchmark reads files written here, so all figures are measured on the same kind of row:
about fifteen properties with nested objects, arrays, date-times, decimals, integers, booleans
and nulls. Records are deterministic: user ``i`` at ``version`` ``v`` is always the same record,
which is what the repeated-update and unchanged-rerun benchmarks rely on.
"""

from __future__ import annotations

import datetime
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STREAM = "users"

_NULLABLE_STRING = {"type": ["string", "null"]}
_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user_id": {"type": "integer"},
        "email": {"type": "string"},
        "name": _NULLABLE_STRING,
        "company_id": {"type": ["string", "null"]},
        "plan": {"type": "string", "enum": ["free", "starter", "pro", "enterprise"]},
        "created_at": {"type": "string", "format": "date-time"},
        "last_seen_at": _DATE_TIME,
        "trial_ends_on": {"type": ["string", "null"], "format": "date"},
        "mrr": {"type": ["number", "null"]},
        "seats": {"type": ["integer", "null"]},
        "score": {"type": ["number", "null"]},
        "is_admin": {"type": "boolean"},
        "locale": _NULLABLE_STRING,
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "city": _NULLABLE_STRING,
                "country": _NULLABLE_STRING,
                "geo": {
                    "type": ["object", "null"],
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                },
            },
        },
        "preferences": {
            "type": ["object", "null"],
            "properties": {
                "theme": _NULLABLE_STRING,
                "weekly_digest": {"type": ["boolean", "null"]},
            },
        },
        "_sdc_extracted_at": _DATE_TIME,
    },
}

_CITIES = [
    ("Berlin", "DE", 52.52, 13.405),
    ("Lisbon", "PT", 38.7223, -9.1393),
    ("Austin", "US", 30.2672, -97.7431),
    ("Toronto", "CA", 43.6532, -79.3832),
    ("Osaka", "JP", 34.6937, 135.5023),
    ("São Paulo", "BR", -23.5505, -46.6333),
]
_PLANS = ["free", "starter", "pro", "enterprise"]
_TAGS = ["beta", "champion", "churn-risk", "vip", "api", "sso", "mobile", "nps-promoter"]
_EPOCH = datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)


def user_record(user_id: int, version: int = 0) -> dict[str, Any]:
    """User ``user_id`` as exported at ``version``: later versions change activity fields."""
    rng = random.Random(user_id)
    city, country, lat, lon = rng.choice(_CITIES)
    created = _EPOCH + datetime.timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))
    plan = rng.choice(_PLANS)
    paid = plan != "free"
    seen = created + datetime.timedelta(hours=rng.randrange(1, 5000) + 24 * version)
    return {
        "user_id": user_id,
        "email": f"user{user_id}@example.com",
        "name": f"User Number {user_id}" if rng.random() > 0.05 else None,
        "company_id": f"acct-{rng.randrange(1, 2000):05d}" if rng.random() > 0.1 else None,
        "plan": plan,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "last_seen_at": seen.strftime("%Y-%m-%dT%H:%M:%S.%f+02:00") if version or paid else None,
        "trial_ends_on": (created + datetime.timedelta(days=14)).date().isoformat()
        if not paid
        else None,
        "mrr": round(rng.uniform(10, 2000), 2) if paid else None,
        "seats": rng.randrange(1, 250) if paid else None,
        "score": round(rng.random() * 100 + version, 3),
        "is_admin": rng.random() < 0.1,
        "locale": rng.choice(["en-US", "de-DE", "pt-BR", "ja-JP", None]),
        "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
        "address": {
            "city": city,
            "country": country,
            "geo": {"lat": lat + rng.random() / 10, "lon": lon + rng.random() / 10},
        },
        "preferences": {
            "theme": rng.choice(["light", "dark", None]),
            "weekly_digest": rng.choice([True, False, None]),
        },
        "_sdc_extracted_at": "2026-11-28T12:00:00.000000Z",
    }


def messages(
    records: Iterable[dict[str, Any]], *, state_every: int = 5000
) -> Iterator[dict[str, Any]]:
    """SCHEMA, the RECORD messages, a STATE every ``state_every`` records and one at the end."""
    yield {"type": "SCHEMA", "stream": STREAM, "schema": SCHEMA, "key_properties": ["user_id"]}
    n = 0
    for n, rec in enumerate(records, start=1):
        yield {"type": "RECORD", "stream": STREAM, "record": rec}
        if state_every and n % state_every == 0:
            yield {"type": "STATE", "value": {"bookmarks": {STREAM: {"position": n}}}}
    yield {"type": "STATE", "value": {"bookmarks": {STREAM: {"position": n, "done": True}}}}


def write(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write Singer input for ``records`` to ``path`` (one JSON message per line)."""
    with path.open("w", encoding="utf-8") as handle:
        for message in messages(records):
            handle.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
    return path


def distinct_users(count: int, *, version: int = 0) -> Iterator[dict[str, Any]]:
    """``count`` different users, each once."""
    return (user_record(i, version) for i in range(1, count + 1))


def repeated_updates(records: int, users: int) -> Iterator[dict[str, Any]]:
    """``records`` updates cycling over ``users`` users, each update a newer version."""
    return (user_record(i % users + 1, version=i // users) for i in range(records))


def some_changed(count: int, changed: int) -> Iterator[dict[str, Any]]:
    """``count`` users of which ``changed``, spread evenly, are at a newer version."""
    step = count // changed
    return (
        user_record(i, version=1 if i % step == 0 and i // step <= changed else 0)
        for i in range(1, count + 1)
    )


COMPANY_STREAM = "companies"

COMPANY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "company_id": {"type": "string"},
        "name": {"type": "string"},
        "plan": {"type": "string", "enum": _PLANS},
        "seats": {"type": ["integer", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
}


def company_record(company_id: int) -> dict[str, Any]:
    """Company ``company_id``, as the ``acct-NNNNN`` the users' ``company_id`` points at."""
    rng = random.Random(-company_id)
    created = _EPOCH + datetime.timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))
    return {
        "company_id": f"acct-{company_id:05d}",
        "name": f"Company {company_id}",
        "plan": rng.choice(_PLANS),
        "seats": rng.randrange(1, 500),
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }
