"""What a record becomes: plain-dict tests of ``records/decide.py`` (no SDK, no sockets, no I/O).

A stream's rules are chosen once; ``decide`` turns each record into exactly one outcome, which
the sink applies. Every test here feeds dicts and reads the outcome.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest

from target_userpilot.records.decide import (
    SKIP_DELETED,
    SKIP_IGNORED,
    SKIP_LOADER_TEST,
    Deletion,
    ImportRecord,
    Kind,
    Rejection,
    Skip,
    StreamRules,
    TrackEvent,
    Upsert,
    decide,
    rules_for,
)
from target_userpilot.records.events import event_key
from target_userpilot.records.object_keys import ObjectKeys
from target_userpilot.records.rows import NamesSeen, encode_row, to_row
from target_userpilot.records.validation import RecordValidator

MAX_BYTES = 50_000_000
USER_PROPERTIES = {
    "id": {"type": "integer"},
    "email": {"type": ["string", "null"]},
    "prefs": {"type": ["object", "null"]},
}
DELETED_AT = "2026-11-02T08:15:00Z"


def _rules(stream: str = "users", mapping: dict[str, Any] | None = None, **kw: Any) -> StreamRules:
    properties = kw.pop("properties", USER_PROPERTIES)
    keys = kw.pop("key_properties", ["id"])
    return rules_for(stream, properties, keys, mapping, max_file_bytes=MAX_BYTES, **kw)


def _schema_problem(properties: dict[str, Any]) -> Any:
    return RecordValidator({"type": "object", "properties": properties}).problem


class _Pruned(dict[str, Any]):
    """What the reader makes of a record nested too deeply to read whole."""

    reason = "it is nested 3,001 levels deep (in 'deep'), deeper than the 200 levels"
    record_json = '{"id": 4, "deep": [[[...]]]}'


# The rules, chosen once


@pytest.mark.parametrize(
    ("stream", "mapping", "events_api", "kind"),
    [
        ("users", None, "track", Kind.PROFILES),
        ("public-companies", None, "track", Kind.PROFILES),
        ("events", None, "track", Kind.TRACK),
        ("events", None, "import", Kind.IMPORT),
        ("audit", {"object": "ignore"}, "track", Kind.IGNORED),
        ("meltano_test_stream", None, "track", Kind.LOADER_TEST),
    ],
)
def test_a_streams_kind_is_chosen_once_from_its_route_and_events_api(
    stream: str, mapping: dict[str, Any] | None, events_api: str, kind: Kind
) -> None:
    assert _rules(stream, mapping, events_api=events_api).kind is kind


def test_rules_are_one_immutable_value() -> None:
    rules = _rules(hard_delete=True)

    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.hard_delete = False  # type: ignore[misc]  # frozen: the point of the test
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.route.id_property = "email"  # type: ignore[misc]  # frozen: the point


def test_only_a_profile_stream_keeps_the_marks_schema_rule() -> None:
    check = _schema_problem({"_sdc_deleted_at": {"type": "string", "format": "date-time"}})

    assert _rules(mark_problem=check).mark_problem is check
    assert _rules("events", mark_problem=check).mark_problem is None


# Profiles


def test_a_record_becomes_an_upsert_of_its_id_and_encoded_row() -> None:
    rules = _rules()
    record = {"id": 7, "email": "a@example.com", "prefs": {"lang": "en"}}

    outcome = decide(record, rules, NamesSeen())

    assert outcome == Upsert("7", encode_row(to_row(record, rules.route)[1]))
    assert json.loads(outcome.line)["metadata"] == {"email": "a@example.com", "prefs__lang": "en"}


def test_a_null_object_clears_the_keys_the_streams_rows_sent_before() -> None:
    rules = _rules()
    names = NamesSeen(ObjectKeys())
    decide({"id": 1, "prefs": {"lang": "en", "theme": "dark"}}, rules, names)

    outcome = decide({"id": 1, "prefs": None}, rules, names)

    assert isinstance(outcome, Upsert)
    assert json.loads(outcome.line)["metadata"] == {
        "prefs": None,
        "prefs__lang": None,
        "prefs__theme": None,
    }


@pytest.mark.parametrize("hard_delete", [True, False])
def test_a_date_time_mark_is_a_deletion_with_hard_delete_and_a_skip_without(
    hard_delete: bool,
) -> None:
    outcome = decide(
        {"id": 3, "_sdc_deleted_at": DELETED_AT}, _rules(hard_delete=hard_delete), NamesSeen()
    )

    assert outcome == (Deletion("3") if hard_delete else SKIP_DELETED)


def test_a_deletion_needs_only_its_id_not_the_schema() -> None:
    """A log-based tap often leaves a deleted row's other columns empty, against its schema."""
    rules = _rules(hard_delete=True, schema_problem=_schema_problem(USER_PROPERTIES))

    outcome = decide({"id": 3, "email": 5, "_sdc_deleted_at": DELETED_AT}, rules, NamesSeen())

    assert outcome == Deletion("3")


@pytest.mark.parametrize("mark", [0, "0", "false", True, " ", "yes", "2026-11-02"])
def test_a_doubtful_mark_is_a_rejection_that_keeps_its_profile(mark: object) -> None:
    outcome = decide({"id": 3, "_sdc_deleted_at": mark}, _rules(hard_delete=True), NamesSeen())

    assert isinstance(outcome, Rejection)
    assert "_sdc_deleted_at" in outcome.reason
    assert outcome.profile_id == "3"


def test_a_mark_that_breaks_the_taps_own_rule_for_it_is_a_rejection() -> None:
    check = _schema_problem({"_sdc_deleted_at": {"type": "integer"}})
    rules = _rules(hard_delete=True, mark_problem=check)

    outcome = decide({"id": 3, "_sdc_deleted_at": DELETED_AT}, rules, NamesSeen())

    assert outcome == Rejection(
        "does not match the stream's schema: property '_sdc_deleted_at' fails 'type' (\"integer\")",
        "3",
    )


def test_a_deletion_without_a_readable_id_is_a_rejection() -> None:
    outcome = decide(
        {"id": None, "_sdc_deleted_at": DELETED_AT}, _rules(hard_delete=True), NamesSeen()
    )

    assert outcome == Rejection("'id' is missing or null")


def test_a_record_off_its_schema_is_a_rejection_naming_the_rule_never_the_value() -> None:
    rules = _rules(schema_problem=_schema_problem(USER_PROPERTIES))

    outcome = decide({"id": 9, "email": 12345}, rules, NamesSeen())

    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith("does not match the stream's schema: property 'email'")
    assert "12345" not in outcome.reason
    assert outcome.profile_id == "9"


@pytest.mark.parametrize(
    ("record", "reason", "kept"),
    [
        ({"email": "x"}, "'id' is missing or null", None),
        ({"id": 2.5}, "'id' is a number with a fraction, not a string or integer", None),
        ({"id": 1, "name": "bad \ud800"}, "a text value is not valid Unicode", "1"),
    ],
    ids=["no-id", "float-id", "lone-surrogate"],
)
def test_a_record_that_cannot_become_a_row_is_a_rejection(
    record: dict[str, Any], reason: str, kept: str | None
) -> None:
    outcome = decide(record, _rules(), NamesSeen())

    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith(reason)
    assert outcome.profile_id == kept


def test_a_row_larger_than_max_file_bytes_is_a_rejection_that_keeps_its_profile() -> None:
    rules = dataclasses.replace(_rules(), max_file_bytes=100)

    outcome = decide({"id": 5, "email": "x" * 200}, rules, NamesSeen())

    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith("its row is ")
    assert outcome.reason.endswith("bytes, more than max_file_bytes (100)")
    assert outcome.profile_id == "5"


# Events


def test_a_track_event_is_its_body_and_its_key() -> None:
    rules = _rules(
        "events", properties=["event_id", "user_id", "event_name"], key_properties=["event_id"]
    )
    record = {"event_id": "e1", "user_id": 4, "event_name": "paid", "amount": 5}

    outcome = decide(record, rules, NamesSeen())

    assert outcome == TrackEvent(
        event_key(record, ["event_id"], stream="events"),
        {"user_id": "4", "event_name": "paid", "metadata": {"event_id": "e1", "amount": 5}},
    )


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"event_id": "e1", "event_name": "paid"}, "'user_id' is missing or null"),
        ({"event_id": "e1", "user_id": 4, "event_name": ""}, "'event_name' is an empty string"),
        ({"user_id": 4, "event_name": "paid"}, "key property 'event_id' is missing or null"),
        ({"event_id": "e1", "user_id": 4, "event_name": "x", "n": "\udc00"}, "a text value"),
    ],
    ids=["no-user", "empty-name", "no-key", "lone-surrogate"],
)
def test_an_event_that_cannot_be_sent_is_a_rejection_without_a_profile(
    record: dict[str, Any], reason: str
) -> None:
    rules = _rules("events", properties=["user_id"], key_properties=["event_id"])

    outcome = decide(record, rules, NamesSeen())

    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith(reason)
    assert outcome.profile_id is None


def test_an_imported_event_is_its_key_its_line_and_its_user() -> None:
    rules = _rules(
        "events",
        properties=["event_id"],
        key_properties=["event_id"],
        events_api="import",
    )
    record = {"event_id": "e1", "user_id": 4, "event_name": "paid", "timestamp": DELETED_AT}

    outcome = decide(record, rules, NamesSeen())

    assert isinstance(outcome, ImportRecord)
    assert outcome.key == event_key(record, ["event_id"], stream="events")
    assert outcome.user_id == "4"
    assert json.loads(outcome.line) == {
        "event_type": "track",
        "user_id": "4",
        "event_name": "paid",
        "source": "backend-http",
        "inserted_at": DELETED_AT,
        "metadata": {"event_id": "e1"},
    }


@pytest.mark.parametrize(
    ("time", "happened_at"),
    [("2024-01-02T03:04:05+02:00", "2024-01-02T01:04:05Z"), ("soon", None), (None, None)],
)
def test_a_track_event_says_when_it_happened_for_the_warning_about_old_events(
    time: str | None, happened_at: str | None
) -> None:
    rules = _rules("events", properties=["user_id"], key_properties=[])
    record = {"user_id": 4, "event_name": "paid", "timestamp": time}

    outcome = decide(record, rules, NamesSeen())

    assert isinstance(outcome, TrackEvent)
    assert outcome.happened_at == happened_at
    assert outcome.body["metadata"] == {"timestamp": time}  # track mode keeps it as metadata


@pytest.mark.parametrize("events_api", ["track", "import"])
def test_an_events_time_before_the_year_1000_keeps_four_year_digits(events_api: str) -> None:
    rules = _rules("events", properties=["user_id"], key_properties=[], events_api=events_api)
    record = {"user_id": 4, "event_name": "paid", "timestamp": "0001-01-01T00:00:00Z"}

    outcome = decide(record, rules, NamesSeen())

    if isinstance(outcome, TrackEvent):
        assert outcome.happened_at == "0001-01-01T00:00:00Z"
    else:
        assert isinstance(outcome, ImportRecord)
        assert json.loads(outcome.line)["inserted_at"] == "0001-01-01T00:00:00Z"


def test_a_page_view_names_the_properties_it_cannot_carry() -> None:
    rules = _rules(
        "page_views",
        {"object": "events", "event_type": "page_view"},
        properties=["user_id"],
        key_properties=[],
        events_api="import",
    )
    record = {
        "user_id": 4,
        "hostname": "app.example.com",
        "pathname": "/billing",
        "timestamp": DELETED_AT,
        "browser": "firefox",
        "plan": "pro",
        "referrer": "mail",
    }

    outcome = decide(record, rules, NamesSeen())

    assert isinstance(outcome, ImportRecord)
    assert outcome.left_out == ("plan", "referrer")
    assert json.loads(outcome.line)["browser"] == "firefox"


def test_an_imported_event_without_its_time_is_a_rejection() -> None:
    rules = _rules(
        "events", properties=["event_id"], key_properties=["event_id"], events_api="import"
    )

    outcome = decide({"event_id": "e1", "user_id": 4, "event_name": "x"}, rules, NamesSeen())

    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith("'timestamp' is missing or empty")


# Skips, records too deep to read, key properties


@pytest.mark.parametrize(
    ("stream", "mapping", "skip"),
    [
        ("audit", {"object": "ignore"}, SKIP_IGNORED),
        ("meltano_test_stream", None, SKIP_LOADER_TEST),
    ],
)
def test_streams_that_load_nothing_skip_every_record_even_a_bad_one(
    stream: str, mapping: dict[str, Any] | None, skip: Skip
) -> None:
    rules = _rules(stream, mapping, on_invalid_record="fail")

    assert decide({"id": 1}, rules, NamesSeen()) is skip
    assert decide({}, rules, NamesSeen()) is skip
    assert decide({"id": 1}, rules, NamesSeen(), _Pruned(id=1)) is skip


def test_a_record_too_deep_to_read_is_a_rejection_keeping_its_profile_and_its_json() -> None:
    outcome = decide(_Pruned(id=4), _rules(), NamesSeen(), _Pruned(id=4))

    assert outcome == Rejection(_Pruned.reason, "4", record_json=_Pruned.record_json)


def test_with_fail_a_missing_key_property_is_refused_first() -> None:
    rules = _rules(mapping={"id_property": "email"}, on_invalid_record="fail")

    outcome = decide({"email": "a@example.com"}, rules, NamesSeen())

    assert outcome == Rejection("'id' is missing or null (a key property)", missing_key=True)


def test_with_skip_the_row_rules_judge_a_record_without_its_key_property() -> None:
    rules = _rules(mapping={"id_property": "email"})

    outcome = decide({"email": "a@example.com"}, rules, NamesSeen())

    assert isinstance(outcome, Upsert)
    assert outcome.row_id == "a@example.com"


# Pure: one outcome, no exception, no log line


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"id": None},
        {"id": {"a": [1, {"b": None}]}},
        {"id": 1, "_sdc_deleted_at": {"x": 1}},
        {"id": 1, "prefs": {"a": {"b": {"c": float("nan")}}}, "prefs__a__b__c": 1},
        {"user_id": [], "event_name": 5, "timestamp": -1},
        {"id": "\ud800", "email": "\udfff"},
    ],
)
@pytest.mark.parametrize(
    ("stream", "events_api"), [("users", "track"), ("events", "track"), ("events", "import")]
)
def test_any_record_gets_exactly_one_outcome_and_nothing_is_logged(
    record: dict[str, Any], stream: str, events_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    rules = _rules(stream, events_api=events_api, hard_delete=True, on_invalid_record="fail")

    with caplog.at_level(logging.DEBUG):
        outcome = decide(record, rules, NamesSeen(ObjectKeys()))

    assert isinstance(outcome, (Upsert, Deletion, TrackEvent, ImportRecord, Rejection, Skip))
    assert caplog.records == []
