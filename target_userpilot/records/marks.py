"""The Singer deletion mark: which records say that the source deleted them.

A deletion is irreversible in Userpilot (the profile and all its events are erased), so only a
value that certainly means "deleted at this time" counts: a date-time in ``_sdc_deleted_at``.
Null or absent means live; every other value is an invalid record, never guessed either way.
Pure functions, no I/O; the sink adds the schema's own rule for the column.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from target_userpilot.errors import InvalidRecord

#: An ISO 8601 date-time in the extended format, with a time and an optional offset:
#: ``2026-11-02T08:15:00Z``, ``2026-11-02 08:15:00.123+02:00``. The fields are range-checked
#: by ``datetime`` afterwards (see ``_is_date_time``).
_DATE_TIME = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?:[.,]\d+)?)?"
    r"(?:[Zz]|[+-](?P<oh>\d{2})(?::?(?P<om>\d{2}))?)?"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Why a deletion mark was refused, after what it is.
_MARK_RULE = (
    "not a date-time: only a date-time marks a deletion and null means live, so the record "
    "is neither deleted nor upserted (convert flag columns with stream_maps)"
)
#: How a refused mark of each type is named (never its value).
_KINDS = {
    bool: "a boolean",
    int: "an integer",
    float: "a number with a fraction",
    dict: "an object",
    list: "an array",
    datetime.date: "a date",
}


def is_deleted(record: Mapping[str, Any]) -> bool:
    """Whether the source marked the record deleted; :class:`InvalidRecord` when unsure.

    Only a date-time in ``_sdc_deleted_at`` (the Singer deletion mark) is a deletion, and null
    or absent means live. Any other value is refused rather than guessed: a flag column
    mapped onto the mark holds ``0``/``1``, ``"false"``/``"true"`` or booleans whose meaning
    depends on the column (``is_deleted`` or ``is_active``), and reading one the wrong way
    either erases a live profile for good or refreshes a deleted one. The empty string is
    refused too: it is no date-time, and an empty CSV cell is converted to null with a stream
    map (README, "Delete profiles a source marks with its own column").
    """
    value = record.get("_sdc_deleted_at")
    if value is None:
        return False
    if isinstance(value, datetime.datetime):  # Parquet files of a BATCH message
        return True
    if isinstance(value, str) and _is_date_time(value):
        return True
    raise InvalidRecord(f"'_sdc_deleted_at' is {_mark_kind(value)}, {_MARK_RULE}")


def _is_date_time(text: str) -> bool:
    """Whether ``text`` is an ISO 8601 date-time (a date with a time) that exists."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return False
    fields = {name: int(value) for name, value in match.groupdict().items() if value}
    try:
        datetime.datetime(
            fields["y"],
            fields["mo"],
            fields["d"],
            fields["h"],
            fields["mi"],
            min(fields.get("s", 0), 59),  # 60: a leap second
        )
    except ValueError:
        return False
    return fields.get("oh", 0) < 24 and fields.get("om", 0) < 60


def _mark_kind(value: Any) -> str:
    """What a refused deletion mark is, in words (never the value: it may be anything)."""
    if isinstance(value, str):
        if not value:
            return "an empty string"
        if not value.strip():
            return "blank text"
        if _DATE.fullmatch(value):
            return "a date without a time"
        return "text"
    return _KINDS.get(type(value), f"a {type(value).__name__}")
