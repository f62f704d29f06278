"""Record to row: plain-dict tests of ``records/routing.py``, ``rows.py`` and ``events.py``
(no SDK, no I/O).

The SDK's own flattening (``flattening_enabled``) in real runs, which must give the same profiles
as the target's, is in ``tests/integration/test_rows_in_a_run.py``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import struct
from typing import Any

import pytest

from target_userpilot.errors import InvalidRecord
from target_userpilot.records.events import event_key, to_event
from target_userpilot.records.marks import is_deleted
from target_userpilot.records.routing import (
    COMPANIES,
    EVENTS,
    IGNORE,
    LOADER_TEST,
    USERS,
    Route,
    default_object,
    route_for,
)
from target_userpilot.records.rows import (
    NamesSeen,
    deleted_id,
    encode_row,
    identifier,
    merge_rows,
    to_row,
)
from target_userpilot.records.values import decode_line, primitive

USER_ROUTE = Route(USERS, "user_id", "company_id")
COMPANY_ROUTE = Route(COMPANIES, "company_id")


# Which stream goes where


@pytest.mark.parametrize("stream", ["companies", "company", "Companies", "COMPANY", "CoMpAnIeS"])
def test_company_stream_names_load_companies_in_any_case(stream: str) -> None:
    route = route_for(stream, ["company_id", "name"], ["company_id"])

    assert route.object == COMPANIES
    assert route.id_property == "company_id"
    assert route.company_id_property is None


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ("public-companies", COMPANIES),  # tap-postgres: schema-table
        ("crm.companies", COMPANIES),
        ("sales-Company", COMPANIES),
        ("public-events", EVENTS),
        ("analytics.event", EVENTS),
        ("public-users", USERS),
        ("public-company_accounts", USERS),
        ("companies-archive", USERS),
    ],
)
def test_default_routing_reads_the_name_after_a_taps_schema_prefix(
    stream: str, expected: str
) -> None:
    assert default_object(stream) == expected
    assert route_for(stream, ["id", "user_id", "event_name"], ["id"]).object == expected


def test_meltanos_loader_test_stream_writes_nothing_unless_mapped() -> None:
    assert route_for("meltano_test_stream", ["id", "name"], ["id"]).object == LOADER_TEST
    mapped = route_for("meltano_test_stream", ["id"], ["id"], {"object": "users"})
    assert mapped.object == USERS


@pytest.mark.parametrize(
    "stream",
    ["users", "people", "company_accounts", "my_companies", "comp", "eventsx", "my_events"],
)
def test_other_streams_load_users(stream: str) -> None:
    route = route_for(stream, ["user_id", "company_id"], ["user_id"])

    assert route.object == USERS
    assert route.id_property == "user_id"
    assert route.company_id_property == "company_id"


@pytest.mark.parametrize(
    ("stream", "mapped_object"),
    [("accounts", COMPANIES), ("companies", USERS), ("users", IGNORE), ("companies", IGNORE)],
)
def test_object_mapping_overrides_the_stream_name(stream: str, mapped_object: str) -> None:
    route = route_for(stream, ["user_id", "company_id"], None, {"object": mapped_object})

    assert route.object == mapped_object
    assert route.ignored is (mapped_object == IGNORE)


def test_unknown_mapped_object_is_a_configuration_error_naming_the_stream() -> None:
    with pytest.raises(ValueError, match="accounts") as excinfo:
        route_for("accounts", ["id"], ["id"], {"object": "contacts"})

    assert "contacts" in str(excinfo.value)


def test_mapping_without_object_keeps_default_routing() -> None:
    route = route_for("Company", ["account_id"], None, {"id_property": "account_id"})

    assert route.object == COMPANIES
    assert route.id_property == "account_id"


def test_mapping_id_property_wins_over_natural_id_and_key() -> None:
    route = route_for("users", ["user_id", "email", "id"], ["id"], {"id_property": "email"})

    assert route.id_property == "email"


def test_natural_user_id_wins_over_single_key_property() -> None:
    route = route_for("users", ["id", "user_id"], ["id"])

    assert route.id_property == "user_id"


def test_natural_company_id_wins_over_single_key_property() -> None:
    route = route_for("companies", ["id", "company_id"], ["id"])

    assert route.id_property == "company_id"


@pytest.mark.parametrize("stream", ["users", "companies"])
def test_single_key_property_is_the_id_without_a_natural_id(stream: str) -> None:
    route = route_for(stream, ["id", "name"], ["id"])

    assert route.id_property == "id"


@pytest.mark.parametrize("keys", [None, [], ["a", "b"]])
def test_without_single_key_the_natural_id_is_expected(keys: list[str] | None) -> None:
    assert route_for("users", ["a", "b"], keys).id_property == "user_id"
    assert route_for("companies", ["a", "b"], keys).id_property == "company_id"


def test_mapping_company_id_property_is_used_for_users() -> None:
    route = route_for("users", ["user_id", "org"], ["user_id"], {"company_id_property": "org"})

    assert route.company_id_property == "org"


def test_companies_have_no_company_property_even_when_mapped() -> None:
    route = route_for(
        "accounts",
        ["account_id", "parent"],
        ["account_id"],
        {"object": "companies", "company_id_property": "parent"},
    )

    assert route.company_id_property is None


def test_company_id_as_user_id_is_not_also_the_company_link() -> None:
    route = route_for("users", ["company_id"], None, {"id_property": "company_id"})

    assert route.id_property == "company_id"
    assert route.company_id_property is None


# Identifiers


@pytest.mark.parametrize(
    ("value", "expected"), [(0, "0"), (42, "42"), (-7, "-7"), (10**20, str(10**20))]
)
def test_integer_ids_become_decimal_strings(value: int, expected: str) -> None:
    assert identifier(value, "user_id") == expected


@pytest.mark.parametrize("value", ["u-1", "0042", " padded ", "ünïcødé"])
def test_string_ids_stay_as_they_are(value: str) -> None:
    assert identifier(value, "user_id") == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty-string"),
        pytest.param(None, id="none"),
        pytest.param(1.5, id="float"),
        pytest.param(2.0, id="integral-float"),
        pytest.param(decimal.Decimal("3.25"), id="decimal"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param({"id": 1}, id="dict"),
        pytest.param([1], id="list"),
    ],
)
def test_unusable_ids_are_rejected_naming_the_property(value: object) -> None:
    with pytest.raises(InvalidRecord, match="'external_ref'"):
        identifier(value, "external_ref")


def test_missing_id_in_record_is_rejected_naming_the_property() -> None:
    with pytest.raises(InvalidRecord, match="'user_id'"):
        to_row({"email": "a@example.com"}, USER_ROUTE)


def test_null_id_in_record_is_rejected_naming_the_property() -> None:
    with pytest.raises(InvalidRecord, match="'company_id'"):
        to_row({"company_id": None, "name": "Acme"}, COMPANY_ROUTE)


def test_integer_id_in_record_becomes_string_in_row() -> None:
    row_id, row = to_row({"user_id": 7, "name": "Ann"}, USER_ROUTE)

    assert row_id == "7"
    assert row["user_id"] == "7"


# Record to row: shape


def test_user_row_shape() -> None:
    row_id, row = to_row({"user_id": "u1", "company_id": "c1", "name": "Ann"}, USER_ROUTE)

    assert row_id == "u1"
    assert row == {"user_id": "u1", "company_id": "c1", "metadata": {"name": "Ann"}}


def test_company_row_shape() -> None:
    row_id, row = to_row({"company_id": 9, "name": "Acme", "plan": "pro"}, COMPANY_ROUTE)

    assert row_id == "9"
    assert row == {"company_id": "9", "metadata": {"name": "Acme", "plan": "pro"}}


def test_integer_company_link_becomes_string() -> None:
    _, row = to_row({"user_id": "u1", "company_id": 12}, USER_ROUTE)

    assert row["company_id"] == "12"


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"user_id": "u1", "company_id": None, "x": 1}, id="null"),
        pytest.param({"user_id": "u1", "x": 1}, id="absent"),
        pytest.param({"user_id": "u1", "company_id": "", "x": 1}, id="empty-string"),
    ],
)
def test_no_company_link_means_no_company_id_key(record: dict[str, Any]) -> None:
    _, row = to_row(record, USER_ROUTE)

    assert "company_id" not in row
    assert row["metadata"] == {"x": 1}


@pytest.mark.parametrize("value", [1.5, True, {"id": "c1"}])
def test_unusable_company_link_is_rejected_naming_the_property(value: object) -> None:
    route = Route(USERS, "user_id", "org")

    with pytest.raises(InvalidRecord, match="'org'"):
        to_row({"user_id": "u1", "org": value}, route)


def test_mapped_id_and_company_properties_are_used_and_left_out_of_metadata() -> None:
    route = route_for(
        "people",
        ["email", "org", "user_id", "company_id"],
        None,
        {"id_property": "email", "company_id_property": "org"},
    )
    record = {"email": "a@example.com", "org": 5, "user_id": "legacy", "company_id": "old"}

    row_id, row = to_row(record, route)

    assert row_id == "a@example.com"
    assert row == {
        "user_id": "a@example.com",
        "company_id": "5",
        "metadata": {"user_id": "legacy", "company_id": "old"},
    }


def test_identifier_and_company_properties_are_not_repeated_in_metadata() -> None:
    _, user = to_row({"user_id": "u1", "company_id": "c1", "a": 1}, USER_ROUTE)
    _, company = to_row({"company_id": "c1", "a": 1}, COMPANY_ROUTE)

    assert user["metadata"] == {"a": 1}
    assert company["metadata"] == {"a": 1}


def test_null_company_property_is_not_put_in_metadata() -> None:
    _, row = to_row({"user_id": "u1", "company_id": None}, USER_ROUTE)

    assert row["metadata"] == {}


def test_sdc_columns_are_dropped() -> None:
    record = {
        "user_id": "u1",
        "_sdc_extracted_at": "2024-01-01T00:00:00Z",
        "_sdc_batched_at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        "_sdc_deleted_at": None,
        "_sdc_sequence": 123,
        "sdc_kept": 1,
        "name": "Ann",
    }

    _, row = to_row(record, USER_ROUTE)

    assert row["metadata"] == {"sdc_kept": 1, "name": "Ann"}


# Record to row: metadata values


def test_nested_objects_are_flattened_with_double_underscore() -> None:
    record = {
        "user_id": "u1",
        "address": {"city": "Paris", "geo": {"lat": 48.85, "point": {"precision": "high"}}},
        "plan": {"name": "pro", "tags": ["a", "b"]},
    }

    _, row = to_row(record, USER_ROUTE)

    assert row["metadata"] == {
        "address__city": "Paris",
        "address__geo__lat": 48.85,
        "address__geo__point__precision": "high",
        "plan__name": "pro",
        "plan__tags": '["a","b"]',
    }


def test_null_inside_nested_object_is_kept() -> None:
    _, row = to_row({"user_id": "u1", "address": {"city": None}}, USER_ROUTE)

    assert row["metadata"] == {"address__city": None}


def test_null_stays_null() -> None:
    _, row = to_row({"user_id": "u1", "nickname": None}, USER_ROUTE)

    assert row["metadata"] == {"nickname": None}


def test_booleans_stay_booleans() -> None:
    _, row = to_row({"user_id": "u1", "active": True, "trial": False}, USER_ROUTE)

    assert row["metadata"]["active"] is True
    assert row["metadata"]["trial"] is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a", "b"], '["a","b"]'),
        ([], "[]"),
        ([1, 2, 3], "[1,2,3]"),
        (("x", 1), '["x",1]'),
        ([{"k": "v"}, [1, [2]]], '[{"k":"v"},[1,[2]]]'),
        ([True, None], "[true,null]"),
    ],
)
def test_arrays_become_compact_json_strings(value: list[Any], expected: str) -> None:
    assert primitive(value) == expected


def test_arrays_keep_non_ascii_as_is() -> None:
    assert primitive(["café", "日本", "😀"]) == '["café","日本","😀"]'


def test_decimals_and_datetimes_inside_arrays_are_converted() -> None:
    value = [
        decimal.Decimal("2"),
        decimal.Decimal("1.50"),
        decimal.Decimal("NaN"),
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.date(2024, 2, 29),
        {"amount": decimal.Decimal("9.99"), "at": dt.datetime(2024, 1, 1, 12, 0)},
    ]

    encoded = primitive(value)

    assert json.loads(encoded) == [
        2,
        1.5,
        None,
        "2024-01-02T03:04:05-05:00",
        "2024-02-29",
        {"amount": 9.99, "at": "2024-01-01T12:00:00"},
    ]
    assert " " not in encoded


def test_non_finite_floats_inside_arrays_still_give_valid_json() -> None:
    assert primitive([float("nan"), float("-inf"), 1.5]) == "[null,null,1.5]"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
            "2024-05-06T07:08:09+05:30",
        ),
        (
            dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
            "2024-05-06T07:08:09.123456+00:00",
        ),
        (
            dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
            "2024-05-06T07:08:09-08:00",
        ),
        (dt.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
        (dt.date(2024, 5, 6), "2024-05-06"),
    ],
)
def test_dates_and_datetimes_become_iso_8601_with_their_offset(
    value: dt.date, expected: str
) -> None:
    assert primitive(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("42"), 42),
        (decimal.Decimal("-3"), -3),
        (decimal.Decimal("0"), 0),
        (decimal.Decimal("1E+2"), 100),
        (decimal.Decimal("12345678901234567890"), 12345678901234567890),
    ],
)
def test_integral_decimals_become_json_integers(value: decimal.Decimal, expected: int) -> None:
    result = primitive(value)

    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("1.5"), 1.5),
        (decimal.Decimal("12.50"), 12.5),
        (decimal.Decimal("-0.25"), -0.25),
    ],
)
def test_fractional_decimals_become_json_floats(value: decimal.Decimal, expected: float) -> None:
    result = primitive(value)

    assert type(result) is float
    assert result == expected


def test_decimal_with_zero_fraction_is_still_a_json_number() -> None:
    result = primitive(decimal.Decimal("1.0"))

    assert type(result) in (int, float)
    assert result == 1


@pytest.mark.parametrize(
    "value",
    [
        decimal.Decimal("NaN"),
        decimal.Decimal("sNaN"),
        decimal.Decimal("Infinity"),
        decimal.Decimal("-Infinity"),
        float("nan"),
        float("inf"),
    ],
)
def test_non_finite_numbers_become_null(value: decimal.Decimal | float) -> None:
    assert primitive(value) is None


@pytest.mark.parametrize("value", ["text", "", 0, 7, 2.5, True, False, None])
def test_primitives_pass_through_unchanged(value: str | int | float | bool | None) -> None:
    result = primitive(value)

    assert result == value
    assert type(result) is type(value)


def test_decimal_metadata_encodes_as_a_json_number() -> None:
    _, row = to_row({"user_id": "u1", "score": decimal.Decimal("9.75")}, USER_ROUTE)

    assert encode_row(row) == b'{"user_id":"u1","metadata":{"score":9.75}}\n'


# Merging rows of one batch


def test_merge_rows_later_values_win_and_earlier_only_keys_stay() -> None:
    earlier = {"user_id": "u1", "metadata": {"name": "Ann", "plan": "free", "city": "Oslo"}}
    later = {"user_id": "u1", "metadata": {"plan": "pro", "city": None, "seats": 3}}

    merged = merge_rows(earlier, later)

    assert merged == {
        "user_id": "u1",
        "metadata": {"name": "Ann", "plan": "pro", "city": None, "seats": 3},
    }


def test_merge_rows_keeps_earlier_company_when_later_has_none() -> None:
    earlier = {"user_id": "u1", "company_id": "c1", "metadata": {}}
    later = {"user_id": "u1", "metadata": {"a": 1}}

    assert merge_rows(earlier, later) == {"user_id": "u1", "company_id": "c1", "metadata": {"a": 1}}


def test_merge_rows_later_company_wins() -> None:
    earlier = {"user_id": "u1", "company_id": "c1", "metadata": {}}
    later = {"user_id": "u1", "company_id": "c2", "metadata": {}}

    assert merge_rows(earlier, later)["company_id"] == "c2"


def test_merge_rows_adds_company_first_known_in_later_row() -> None:
    earlier = {"user_id": "u1", "metadata": {}}
    later = {"user_id": "u1", "company_id": "c9", "metadata": {}}

    assert merge_rows(earlier, later)["company_id"] == "c9"


def test_merge_rows_does_not_modify_its_inputs() -> None:
    earlier = {"company_id": "c1", "metadata": {"a": 1}}
    later = {"company_id": "c1", "metadata": {"a": 2, "b": 3}}

    merge_rows(earlier, later)

    assert earlier == {"company_id": "c1", "metadata": {"a": 1}}
    assert later == {"company_id": "c1", "metadata": {"a": 2, "b": 3}}


def test_merge_rows_matches_applying_to_row_results_in_order() -> None:
    _, first = to_row({"user_id": 1, "company_id": 5, "a": 1, "b": {"c": 2}}, USER_ROUTE)
    _, second = to_row({"user_id": 1, "company_id": None, "b": {"c": 3}, "d": [1]}, USER_ROUTE)

    assert merge_rows(first, second) == {
        "user_id": "1",
        "company_id": "5",
        "metadata": {"a": 1, "b__c": 3, "d": "[1]"},
    }


# Encoding


def test_encode_row_is_one_compact_utf8_line_ending_in_newline() -> None:
    row = {"user_id": "u1", "company_id": "c1", "metadata": {"name": "Zoë 日本", "n": 1, "x": None}}

    line = encode_row(row)

    expected = '{"user_id":"u1","company_id":"c1","metadata":{"name":"Zoë 日本","n":1,"x":null}}\n'
    assert line == expected.encode("utf-8")
    assert line.count(b"\n") == 1
    assert line.endswith(b"\n")
    assert b"\\u" not in line
    assert json.loads(line.decode("utf-8")) == row


def test_encode_row_escapes_newlines_inside_values() -> None:
    line = encode_row({"company_id": "c1", "metadata": {"note": "two\nlines\r\n"}})

    assert line.count(b"\n") == 1
    assert json.loads(line)["metadata"]["note"] == "two\nlines\r\n"


def test_encoded_array_metadata_is_a_string_inside_the_line() -> None:
    _, row = to_row({"user_id": "u1", "tags": ["ä", "b"]}, USER_ROUTE)

    assert encode_row(row) == '{"user_id":"u1","metadata":{"tags":"[\\"ä\\",\\"b\\"]"}}\n'.encode()


def _as_the_standard_library_writes(row: dict[str, Any]) -> bytes:
    """How rows were written before msgspec: what skip_unchanged's ledger hashes came from."""
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


#: Floats around the points where Python starts writing an exponent, and other awkward values.
_AWKWARD = [
    1e16,
    -1e16,
    9999999999999998.0,
    1.2345678901234568e17,
    1e-4,
    9.999e-05,
    -1.5e-07,
    5e-324,
    1.7976931348623157e308,
    -0.0,
    0.1,
    2**64,
    -(10**30),
    'é😀\u2028\x00\x1f\x7f"\\/',
    True,
    None,
]


@pytest.mark.parametrize("value", _AWKWARD, ids=repr)
def test_a_row_encodes_to_the_very_bytes_it_did_before(value: object) -> None:
    """skip_unchanged and the sync history compare hashes of encoded rows across runs."""
    record = {"user_id": 1, "v": value, "o": {"v": value, "p": {"v": value}}, "a": [value, 1]}
    _, row = to_row(record, USER_ROUTE)

    assert encode_row(row) == _as_the_standard_library_writes(row)


def test_random_floats_encode_to_the_bytes_they_did_before() -> None:
    rng = random.Random(24)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 30) for _ in range(3000)]
    values += [
        struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)
    ]

    for value in values:
        _, row = to_row({"user_id": 1, "v": value}, USER_ROUTE)
        assert encode_row(row) == _as_the_standard_library_writes(row), value


def test_a_row_read_back_for_a_merge_encodes_to_the_same_bytes() -> None:
    _, row = to_row({"user_id": 1, "big": 1e20, "small": 2e-9, "o": {"x": 3e-7}}, USER_ROUTE)
    line = encode_row(row)

    assert encode_row(decode_line(line)) == line


def test_a_null_object_clears_the_flattened_keys_its_schema_describes() -> None:
    properties = {
        "id": {"type": "integer"},
        "billing": {
            "type": ["object", "null"],
            "properties": {
                "mrr": {"type": "number"},
                "card": {"type": "object", "properties": {"brand": {}, "last4": {}}},
            },
        },
    }
    route = route_for("users", properties, ["id"])

    _, row = to_row({"id": 1, "billing": None}, route)
    assert row["metadata"] == {
        "billing": None,
        "billing__mrr": None,
        "billing__card__brand": None,
        "billing__card__last4": None,
    }
    _, row = to_row({"id": 1, "billing": {"mrr": 5, "card": None}}, route)
    assert row["metadata"] == {
        "billing__mrr": 5,
        "billing__card": None,
        "billing__card__brand": None,
        "billing__card__last4": None,
    }


def test_an_object_the_schema_does_not_describe_is_just_null() -> None:
    route = route_for("users", {"id": {}, "extra": {"type": "object"}}, ["id"])
    _, row = to_row({"id": 1, "extra": None}, route)
    assert row["metadata"] == {"extra": None}


def test_a_null_clears_the_keys_of_a_schema_the_sdk_already_flattened() -> None:
    # What the SDK's flattening_enabled (max depth 2) hands the sink for an ``address`` object.
    properties = {
        "id": {"type": "integer"},
        "address__city": {"type": ["string", "null"]},
        "address__geo__lat": {"type": ["number", "null"]},
        "address__geo__lng": {"type": ["number", "null"]},
    }
    route = route_for("users", properties, ["id"])

    _, row = to_row({"id": 1, "address": None}, route)
    assert row["metadata"] == {
        "address": None,
        "address__city": None,
        "address__geo__lat": None,
        "address__geo__lng": None,
    }
    _, row = to_row({"id": 1, "address__city": "Oslo", "address__geo": None}, route)
    assert row["metadata"] == {
        "address__city": "Oslo",
        "address__geo": None,
        "address__geo__lat": None,
        "address__geo__lng": None,
    }


def test_a_flattened_prefix_that_is_a_property_of_its_own_clears_nothing() -> None:
    route = route_for("users", {"id": {}, "first": {}, "first__name": {}}, ["id"])

    _, row = to_row({"id": 1, "first": None}, route)

    assert row["metadata"] == {"first": None}


def test_a_null_clears_flattened_names_given_as_a_plain_list_too() -> None:
    route = route_for("users", ["id", "billing__plan__name"], ["id"])

    _, row = to_row({"id": 1, "billing": None}, route)

    assert row["metadata"] == {"billing": None, "billing__plan__name": None}


# End to end: the SDK's own flattening loads what the target's flattening loads.

#: An address fully described two levels down, so a max depth of 2 flattens all of it.


# Collisions: two properties that flatten to one name


@pytest.mark.parametrize(
    ("record", "winner"),
    [
        pytest.param({"id": 1, "address__city": "Flat", "address": {"city": "Nested"}}, "Nested"),
        pytest.param({"id": 1, "address": {"city": "Nested"}, "address__city": "Flat"}, "Flat"),
        pytest.param(
            {"id": 1, "address": {"city__x": 1}, "address__city": {"x": "Later"}}, "Later"
        ),
    ],
    ids=["flat-then-nested", "nested-then-flat", "nested-then-nested"],
)
def test_colliding_names_keep_the_later_value_and_are_noted_for_the_stream(
    record: dict[str, Any], winner: str
) -> None:
    route = route_for("users", ["id"], ["id"])
    names = NamesSeen()

    _, row = to_row(record, route, names)

    assert winner in row["metadata"].values()
    assert len(row["metadata"]) == 1
    assert names.collisions == {next(iter(row["metadata"]))}


def test_a_cleared_key_beside_a_flat_key_of_the_same_name_is_a_collision() -> None:
    route = route_for("users", {"id": {}, "address": {"properties": {"city": {}}}}, ["id"])

    names = NamesSeen()

    _, row = to_row({"id": 1, "address": None, "address__city": "Oslo"}, route, names)

    assert row["metadata"] == {"address": None, "address__city": "Oslo"}
    assert names.collisions == {"address__city"}


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"id": 1, "a": {"b": 1, "c": {"d": None}}, "a__e": 2, "x": 1.5}, id="nested"),
        pytest.param({"id": 1, "address": {}, "tags": [], "n": None}, id="empty"),
        pytest.param({"id": 1, "address": None, "_sdc_deleted_at": None}, id="cleared"),
        pytest.param({"id": 1, "company_id": "c1", "_sdc_sequence": 3}, id="left-out"),
    ],
)
def test_records_without_colliding_names_note_none(record: dict[str, Any]) -> None:
    properties: dict[str, Any] = {"id": {}, "address": {"properties": {"city": {}, "zip": {}}}}
    route = route_for("users", properties, ["id"])
    names = NamesSeen()

    to_row(record, route, names)

    assert names.collisions == set()


def test_take_collisions_hands_each_name_out_once() -> None:
    route = route_for("users", ["id"], ["id"])
    names = NamesSeen()

    to_row({"id": 1, "a": {"b": 1}, "a__b": 2}, route, names)
    assert names.take_collisions() == ["a__b"]
    to_row({"id": 2, "a": {"b": 1}, "a__b": 2, "c__d": 1, "c": {"d": 2}}, route, names)
    assert names.take_collisions() == ["c__d"]
    to_row({"id": 3, "a": {"b": 1}, "a__b": 2}, route, names)
    assert names.take_collisions() == []


# Events


EVENT_ROUTE = route_for("events", ["user_id", "event_name", "amount"], ["event_id"])


@pytest.mark.parametrize("stream", ["events", "event", "Events", "EVENT"])
def test_event_stream_names_send_events_in_any_case(stream: str) -> None:
    route = route_for(stream, ["user_id", "event_name"], ["id"])

    assert route.object == EVENTS
    assert route.id_property == "user_id"
    assert route.event_name_property == "event_name"
    assert route.event_name is None
    assert route.company_id_property is None


def test_object_mapping_sends_any_stream_as_events_with_its_properties() -> None:
    route = route_for(
        "invoices",
        ["customer", "kind"],
        ["invoice_id"],
        {"object": "events", "user_id_property": "customer", "event_name_property": "kind"},
    )

    assert (route.object, route.id_property, route.event_name_property) == (
        EVENTS,
        "customer",
        "kind",
    )
    row = to_event({"invoice_id": 9, "customer": 42, "kind": "invoice_paid", "total": 5}, route)
    assert row == {
        "user_id": "42",
        "event_name": "invoice_paid",
        "metadata": {"invoice_id": 9, "total": 5},
    }


def test_a_fixed_event_name_names_every_event_and_leaves_the_name_property_in_metadata() -> None:
    route = route_for("payments", ["user_id"], None, {"object": "events", "event_name": "paid"})

    row = to_event({"user_id": "u1", "event_name": "other", "amount": 3}, route)

    assert row == {
        "user_id": "u1",
        "event_name": "paid",
        "metadata": {"event_name": "other", "amount": 3},
    }


@pytest.mark.parametrize(
    "mapping",
    [
        {"event_name": ""},
        {"event_name": 5},
        {"user_id_property": ""},
        {"user_id_property": ["a"]},
        {"event_name_property": 3},
    ],
)
def test_unusable_event_mapping_is_a_configuration_error_naming_the_stream(
    mapping: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="'events'"):
        route_for("events", ["user_id"], None, mapping)


def test_an_events_stream_mapped_to_users_loads_users() -> None:
    route = route_for("events", ["user_id"], None, {"object": "users"})

    assert route.object == USERS


def test_event_metadata_follows_the_profile_rules() -> None:
    record = {
        "user_id": 7,
        "event_name": "seat_added",
        "plan": {"name": "pro", "seats": [1, 2]},
        "at": dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
        "price": decimal.Decimal("9.50"),
        "ratio": float("nan"),
        "note": None,
        "_sdc_extracted_at": "2024-01-01",
    }

    row = to_event(record, EVENT_ROUTE)

    assert row == {
        "user_id": "7",
        "event_name": "seat_added",
        "metadata": {
            "plan__name": "pro",
            "plan__seats": "[1,2]",
            "at": "2024-01-02T03:04:00+00:00",
            "price": 9.5,
            "ratio": None,
            "note": None,
        },
    }


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"event_name": "x"}, "'user_id' is missing or null"),
        ({"user_id": 1.5, "event_name": "x"}, "'user_id' is a number with a fraction"),
        ({"user_id": "", "event_name": "x"}, "'user_id' is an empty string"),
        ({"user_id": "u1"}, "'event_name' is missing or null"),
        ({"user_id": "u1", "event_name": None}, "'event_name' is missing or null"),
        ({"user_id": "u1", "event_name": ""}, "'event_name' is an empty string"),
        ({"user_id": "u1", "event_name": 3}, "'event_name' is an integer, not a string"),
        ({"user_id": "u1", "event_name": ["a"]}, "'event_name' is an array, not a string"),
    ],
)
def test_an_event_without_a_usable_user_or_name_is_an_invalid_record(
    record: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        to_event(record, EVENT_ROUTE)

    assert str(excinfo.value).startswith(reason)


def test_an_events_route_made_by_hand_takes_its_name_from_event_name() -> None:
    route = Route(EVENTS, "user_id")

    row = to_event({"user_id": "u1", "event_name": "signed_up", "x": 1}, route)

    assert row == {"user_id": "u1", "event_name": "signed_up", "metadata": {"x": 1}}


def test_to_row_refuses_an_events_route() -> None:
    with pytest.raises(ValueError, match="to_event"):
        to_row({"user_id": "u1", "event_name": "x"}, EVENT_ROUTE)


def test_event_key_is_the_streams_key_values_prefixed_by_the_stream() -> None:
    record = {"event_id": 17, "shard": "eu", "user_id": "u1"}

    key = event_key(record, ["event_id", "shard"], stream="events")

    assert key == '["events",[17,"eu"]]'
    assert event_key(record, ["event_id", "shard"], stream="billing") != key


def test_event_key_without_key_properties_hashes_the_record_whatever_its_key_order() -> None:
    first = {"user_id": "u1", "event_name": "x", "meta": {"b": 1, "a": [1, 2]}}
    same = {"meta": {"a": [1, 2], "b": 1}, "event_name": "x", "user_id": "u1"}
    other = {**first, "event_name": "y"}

    key = event_key(first, [], stream="events")

    assert key.startswith('["events","sha256:') and len(key) == len('["events","sha256:"]') + 64
    assert event_key(same, None, stream="events") == key
    assert event_key(other, None, stream="events") != key
    assert event_key(first, None, stream="billing") != key


def test_event_key_ignores_sdc_columns_so_a_rerun_finds_the_same_key() -> None:
    record = {"user_id": "u1", "event_name": "x"}
    extracted = {**record, "_sdc_extracted_at": "2024-01-01T00:00:00Z", "_sdc_sequence": 5}

    assert event_key(extracted, None, stream="events") == event_key(record, None, stream="events")


def test_event_key_is_stable_for_values_json_has_no_type_for() -> None:
    record = {
        "user_id": "u1",
        "at": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc),
        "price": decimal.Decimal("1.10"),
        "text": "bad \ud800",
    }

    assert event_key(record, None, stream="events") == event_key(
        dict(record), None, stream="events"
    )


@pytest.mark.parametrize("record", [{"user_id": "u1"}, {"user_id": "u1", "event_id": None}])
def test_event_key_refuses_a_missing_key_property(record: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord, match="key property 'event_id' is missing or null"):
        event_key(record, ["event_id"], stream="events")


# Deletes


@pytest.mark.parametrize(
    ("record", "deleted"),
    [
        ({"id": 1, "_sdc_deleted_at": "2024-01-01T00:00:00Z"}, True),
        ({"id": 1, "_sdc_deleted_at": "2024-01-01 08:15:00.123456789+02:00"}, True),
        ({"id": 1, "_sdc_deleted_at": "2024-01-01T08:15"}, True),
        ({"id": 1, "_sdc_deleted_at": dt.datetime(2024, 1, 1)}, True),
        ({"id": 1, "_sdc_deleted_at": None}, False),
        ({"id": 1}, False),
    ],
)
def test_only_a_date_time_in_sdc_deleted_at_marks_a_deletion(
    record: dict[str, Any], deleted: bool
) -> None:
    assert is_deleted(record) is deleted


#: Values a flag column or a broken source puts in the mark: none of them certainly a deletion.
DOUBTFUL_MARKS = [0, 1, "0", "1", "false", "true", True, False, " ", "", "not a date", 1.5, []]


@pytest.mark.parametrize(
    "mark",
    [
        *DOUBTFUL_MARKS,
        "2024-01-01",  # a date: no time
        dt.date(2024, 1, 1),
        "2024-13-01T00:00:00Z",  # no such month
        "2024-01-01T24:00:00",
        " 2024-01-01T00:00:00Z",
        "1700000000",
    ],
)
def test_any_other_deletion_mark_is_an_invalid_record(mark: object) -> None:
    with pytest.raises(InvalidRecord, match=r"'_sdc_deleted_at' is .*, not a date-time"):
        is_deleted({"id": 1, "_sdc_deleted_at": mark})


def test_deleted_id_follows_the_id_rules_of_rows() -> None:
    users = route_for("users", ["id", "email"], ["id"])
    companies = route_for("companies", ["company_id"], None)

    assert deleted_id({"id": 42, "_sdc_deleted_at": "x"}, users) == "42"
    assert deleted_id({"company_id": "c1"}, companies) == "c1"
    with pytest.raises(InvalidRecord, match="'id' is missing or null"):
        deleted_id({"email": "a@example.com"}, users)
    with pytest.raises(InvalidRecord, match="'id' is a boolean"):
        deleted_id({"id": True}, users)


def test_events_cannot_be_deleted() -> None:
    with pytest.raises(ValueError, match="users and companies"):
        deleted_id({"user_id": "u1"}, EVENT_ROUTE)
