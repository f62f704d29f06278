"""Nesting deeper than the target reads, told apart without recursion (``nesting.py``).

Plain text in, no target: the depth measurement and the scanner are checked against what
Python's own parser says of the same text, on seeded random JSON, broken copies of it, and lines
far deeper than any recursive code could walk.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from target_userpilot.input.nesting import (
    MAX_DEPTH,
    NotAnObject,
    NotJSON,
    nested_deeper,
    object_members,
    pruned_record,
)

#: Strings that would fool a count of brackets or quotes: brackets, escaped quotes, backslashes.
TRICKY = ["x{y[", "]]}}", 'a"b', "\\", '\\"[', "\u00e9\ud800", "", "\b[\n"]


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    roll = rnd.random()
    if depth > 6 or roll < 0.35:
        return rnd.choice([1, -0.5, 1e300, True, False, None, 0, float("nan"), *TRICKY])
    if roll < 0.7:
        return {rnd.choice(["a", "{", '"q', "[]"]): _random_value(rnd, depth + 1) for _ in range(3)}
    return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random_json(seed: int) -> str:
    rnd = random.Random(seed)
    value = {"record": _random_value(rnd), "n": 1}
    return json.dumps(value, ensure_ascii=rnd.random() < 0.5)


def _nested(depth: int, inner: str = "1", *, arrays: bool = False) -> str:
    if arrays:
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


@pytest.mark.parametrize("seed", range(150))
def test_the_depth_measured_is_the_parsers_and_strings_do_not_count(seed: int) -> None:
    text = _random_json(seed)
    depth = _depth(json.loads(text))

    for limit in range(depth + 2):
        expected = depth if depth > limit else None
        assert nested_deeper(text, limit) == expected, (text, limit)
        assert nested_deeper(text.encode("utf-8", "surrogatepass"), limit) == expected


@pytest.mark.parametrize("seed", range(150))
def test_the_scanner_reads_members_as_the_parser_does_and_refuses_what_it_refuses(
    seed: int,
) -> None:
    text = _random_json(seed)
    rnd = random.Random(seed)
    cut = rnd.randrange(len(text))
    broken = rnd.choice([text[:cut], text[:cut] + text[cut + 1 :], text[:cut] + '"' + text[cut:]])

    members = object_members(text)
    parsed = json.loads(text)
    assert [m.name for m in members] == list(parsed)
    for member in members:
        value = json.loads(text[member.start : member.end])
        assert json.dumps(value) == json.dumps(parsed[member.name])
        assert member.depth == _depth(value)
    try:
        json.loads(broken)
    except ValueError:
        with pytest.raises((NotJSON, NotAnObject)):  # never members of text that is not JSON
            object_members(broken)


def test_a_line_nested_far_beyond_the_parsers_limit_is_measured_and_scanned_without_recursion() -> (
    None
):
    line = '{"type":"RECORD","stream":"users","record":{"id":7,"x":' + _nested(100_000) + "}}"

    assert nested_deeper(line, MAX_DEPTH) == 100_002
    members = object_members(line)

    assert [(m.name, m.depth) for m in members] == [("type", 0), ("stream", 0), ("record", 100_001)]


def test_a_truncated_deep_line_is_not_json_whatever_its_depth() -> None:
    line = '{"type":"RECORD","stream":"users","record":{"x":' + "[" * 3000 + "1" + "]" * 2000

    with pytest.raises(NotJSON) as refused:
        object_members(line)

    assert refused.value.position == len(line)


@pytest.mark.parametrize(
    "text", ["[" * 3000 + "]" * 3000, '"a string"', "12", '{"a": 1} {"b": 2}', "{'a': 1}"]
)
def test_only_one_valid_json_object_is_scanned(text: str) -> None:
    with pytest.raises((NotJSON, NotAnObject)):
        object_members(text)


def test_a_wide_but_shallow_line_is_not_deeper_than_the_limit() -> None:
    """Hundreds of brackets side by side: the cheap count passes it on, the measure settles it."""
    items = [{"sku": f"s-{i}", "tags": ["a", "]"], "meta": {"k": "{{"}} for i in range(300)]
    line = json.dumps({"type": "RECORD", "stream": "orders", "record": {"id": 1, "items": items}})

    assert line.count("{") + line.count("[") > MAX_DEPTH
    assert nested_deeper(line, MAX_DEPTH) is None


def test_a_pruned_record_keeps_its_shallow_properties_and_the_whole_record_as_text() -> None:
    deep = _nested(MAX_DEPTH, arrays=True)  # the record adds one level: one too many
    text = '{"id": 7, "deep": ' + deep + ', "address": {"city": "X"}, "other": ' + deep + "}"

    record = pruned_record(text, 0, len(text), MAX_DEPTH + 1)

    assert dict(record) == {"id": 7, "address": {"city": "X"}}
    assert record.reason == (
        f"it is nested {MAX_DEPTH + 1} levels deep (in 'deep', 'other'), deeper than the "
        f"{MAX_DEPTH} levels the target reads"
    )
    assert record.record_json == text


def test_a_record_at_the_limit_keeps_every_property() -> None:
    text = '{"id": 7, "deep": ' + _nested(MAX_DEPTH - 1) + "}"

    assert nested_deeper(text, MAX_DEPTH) is None
    assert [m.depth for m in object_members(text)] == [0, MAX_DEPTH - 1]
