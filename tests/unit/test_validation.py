"""Record validation: the compiled fast path must agree with the SDK's jsonschema validator."""

from __future__ import annotations

import decimal
import math
import random
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator, JSONSchemaValidator

from target_userpilot.records.validation import RecordValidator

USERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"], "maxLength": 20},
        "plan": {"type": "string", "enum": ["free", "pro"]},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
        "score": {"type": ["number", "null"], "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": ["object", "null"],
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["id"],
}


def verdict(validator: BaseJSONSchemaValidator, record: dict[str, Any]) -> str | None:
    """None when valid, else the error message."""
    try:
        validator.validate(record)
    except InvalidRecord as exc:
        return exc.error_message
    return None


def sdk_verdict(validator: BaseJSONSchemaValidator, record: dict[str, Any]) -> object:
    """The SDK's verdict; CRASH where jsonschema itself fails (multipleOf on NaN, Decimal...)."""
    try:
        return verdict(validator, record)
    except (ArithmeticError, TypeError, ValueError):
        return CRASH


CRASH = object()


def test_a_typical_schema_is_compiled() -> None:
    assert RecordValidator(USERS).check is not None


@pytest.mark.parametrize(
    "record",
    [
        {"id": 1, "email": None, "plan": "pro", "tags": ["a"], "address": {"city": "X"}},
        {"id": 2, "score": 0.5, "seen_at": "2024-01-01T00:00:00Z", "extra": {"any": 1}},
        {"id": 3, "score": decimal.Decimal("1.5"), "address": None},
    ],
)
def test_valid_records_pass_on_the_fast_path(record: dict[str, Any]) -> None:
    validator = RecordValidator(USERS)

    assert validator.check is not None and validator.check(record)
    assert verdict(validator, record) is None


@pytest.mark.parametrize(
    "record",
    [
        {"email": "a@b.c"},
        {"id": "1"},
        {"id": True},
        {"id": 1, "email": "someone.with.a.long.name@example.com"},
        {"id": 1, "plan": "gold"},
        {"id": 1, "score": -1},
        {"id": 1, "score": True},
        {"id": 1, "tags": ["a", 2]},
        {"id": 1, "address": {"town": "X"}},
    ],
)
def test_invalid_records_fail_with_the_sdk_message(record: dict[str, Any]) -> None:
    sdk = JSONSchemaValidator(USERS)

    message = verdict(RecordValidator(USERS), record)

    assert message is not None
    assert message == verdict(sdk, record)


def test_values_the_fast_path_is_unsure_of_are_decided_by_jsonschema() -> None:
    """A float holding an integer is an integer to JSON Schema; NaN passes a minimum."""
    validator = RecordValidator(USERS)

    assert verdict(validator, {"id": 1.0}) is None
    assert verdict(validator, {"id": 1, "score": math.nan}) is None


def test_a_schema_with_unsupported_keywords_is_validated_by_jsonschema_alone() -> None:
    schema = {"type": "object", "properties": {"v": {"oneOf": [{"type": "integer"}, {}]}}}
    validator = RecordValidator(schema)

    assert validator.check is None
    assert verdict(validator, {"v": "x"}) is None
    assert verdict(validator, {"v": 1}) is not None


def test_formats_are_checked_only_when_asked() -> None:
    schema = {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}

    assert verdict(RecordValidator(schema), {"d": "not a date"}) is None
    assert verdict(RecordValidator(schema, validate_formats=True), {"d": "not a date"})


# The differential test: random schemas and records, verdicts compared with the SDK's.

_LEAVES = [
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["string", "null"]},
    {"type": ["integer", "string"]},
    {"type": "string", "maxLength": 3},
    {"minLength": 2},
    {"type": "integer", "minimum": 0, "maximum": 10},
    {"maximum": 1.5},
    {"enum": ["a", "b", None, 1, True]},
    {"enum": [1.0, False]},
    {"const": 1},
    {"multipleOf": 0.5},
    {"type": "string", "pattern": "^a"},
    {"format": "date-time"},
    {},
    True,
]
_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -3,
    11,
    1.0,
    1.5,
    2.25,
    math.nan,
    math.inf,
    decimal.Decimal("1"),
    decimal.Decimal("0.5"),
    "",
    "a",
    "abc",
    "abcd",
    "b",
    "2024-01-01T00:00:00Z",
    [],
    ["a"],
    [1, "a"],
    {},
    {"a": 1},
]


def _schema(rng: random.Random, depth: int) -> object:
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return rng.choice(_LEAVES)
    if roll < 0.55:
        return {"type": ["array", "null"], "items": _schema(rng, depth - 1)}
    if roll < 0.62:
        return {"anyOf": [_schema(rng, depth - 1), _schema(rng, depth - 1)]}
    if roll < 0.67:
        return {"allOf": [_schema(rng, depth - 1), _schema(rng, depth - 1)]}
    names = rng.sample("abcde", rng.randint(1, 4))
    node: dict[str, Any] = {"properties": {name: _schema(rng, depth - 1) for name in names}}
    if rng.random() < 0.7:
        node["type"] = rng.choice(["object", ["object", "null"]])
    if rng.random() < 0.3:
        node["required"] = rng.sample(names, 1)
    if rng.random() < 0.3:
        node["additionalProperties"] = rng.choice([False, True, {"type": "integer"}])
    return node


def _value(rng: random.Random, depth: int) -> object:
    roll = rng.random()
    if depth <= 0 or roll < 0.5:
        return rng.choice(_VALUES)
    if roll < 0.65:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {name: _value(rng, depth - 1) for name in rng.sample("abcdef", rng.randint(0, 4))}


def test_verdicts_and_messages_match_the_sdk_validator_on_random_schemas() -> None:
    rng = random.Random(20240601)
    compiled = 0
    for _ in range(400):
        schema = {"type": "object", "properties": {"r": _schema(rng, 3)}}
        formats = rng.random() < 0.2
        ours = RecordValidator(schema, validate_formats=formats)
        sdk = JSONSchemaValidator(schema, validate_formats=formats)
        compiled += ours.check is not None
        for _ in range(30):
            record = {"r": _value(rng, 3)}
            expected = sdk_verdict(sdk, record)
            if expected is CRASH:
                continue  # no verdict to agree with
            assert verdict(ours, record) == expected, (schema, record)
    assert compiled == 400
