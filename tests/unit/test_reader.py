"""The input reader on its own: which lines reach the SDK's handlers, and how bad ones stop.

Plain text in, handlers that only record what they were given: no target, no sandbox. The
end-to-end behaviour (exit 7, STATE, what landed) is proven in ``test_bad_input.py``.
"""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidInputLine

from target_userpilot.input import reader as reader_module
from target_userpilot.input.nesting import MAX_DEPTH, PrunedRecord
from target_userpilot.input.reader import InputFeed, InputReader

SCHEMA: dict[str, Any] = {"type": "SCHEMA", "stream": "users", "schema": {"properties": {"id": {}}}}
TYPES = ("SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION", "BATCH")


def _read(*lines: str | dict[str, Any]) -> tuple[InputReader, list[dict[str, Any]], dict[str, Any]]:
    """Run a reader over ``lines``; return it, the messages handed on, and its counts."""
    handed: list[dict[str, Any]] = []
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    reader = InputReader()
    counts = reader.process_lines(io.StringIO(text), dict.fromkeys(TYPES, handed.append))
    return reader, handed, counts


def _refusal(*lines: str | dict[str, Any]) -> str:
    with pytest.raises(InvalidInputLine) as excinfo:
        _read(*lines)
    return str(excinfo.value)


def test_well_formed_messages_reach_their_handlers_unchanged_and_counted() -> None:
    messages: list[dict[str, Any]] = [
        SCHEMA,
        {"type": "RECORD", "stream": "users", "record": {"id": 1, "score": 1.5}},
        {"type": "STATE", "value": {"n": 1}},
        {"type": "ACTIVATE_VERSION", "stream": "users", "version": 3},
        {"type": "BATCH", "stream": "users", "encoding": {"format": "jsonl"}, "manifest": []},
        {"type": "STATE", "value": None},
    ]

    reader, handed, counts = _read(*messages)

    assert handed == messages
    assert counts == {"SCHEMA": 1, "RECORD": 1, "STATE": 2, "ACTIVATE_VERSION": 1, "BATCH": 1}
    assert reader.streams == {"users"}


def test_blank_lines_are_skipped_but_counted_as_lines() -> None:
    reader, handed, counts = _read("", SCHEMA, "  ", "\t", "\r", SCHEMA, "")

    assert handed == [SCHEMA, SCHEMA]
    assert counts == {"SCHEMA": 2}
    assert reader.line_number == 7


def test_a_bad_line_is_named_by_its_line_in_the_input_blank_lines_included() -> None:
    assert _refusal("", SCHEMA, "", "nope").startswith("Input line 4 is not valid JSON")


def test_fractions_become_floats_and_integers_stay_exact() -> None:
    big = 12345678901234567890123
    line = json.dumps({"type": "RECORD", "stream": "users", "record": {"id": big, "x": 0.1}})

    _, handed, _ = _read(SCHEMA, line)

    assert handed[1]["record"] == {"id": big, "x": 0.1}
    assert type(handed[1]["record"]["x"]) is float


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ([1, 2], "an array"),
        ("secret@example.com", "a string"),
        ("", "an empty string"),
        (None, "null"),
        (42, "a number"),
        (True, "a boolean"),
    ],
)
def test_a_record_that_is_not_an_object_is_refused_by_its_type_never_its_value(
    value: object, named: str
) -> None:
    message = {"type": "RECORD", "stream": "users", "record": value}

    refusal = _refusal(SCHEMA, message)

    assert refusal.startswith(f"Input line 2 is a RECORD message whose 'record' is {named}")
    assert "secret@example.com" not in refusal
    assert "fix the tap and rerun" in refusal


def test_messages_for_a_stream_without_schema_are_refused_except_records() -> None:
    """A RECORD before its SCHEMA is the SDK's own check (its message names the stream)."""
    record = {"type": "RECORD", "stream": "orders", "record": {"id": 1}}
    _, handed, _ = _read(record)
    assert handed == [record]

    version = {"type": "ACTIVATE_VERSION", "stream": "orders", "version": 1}
    assert "for stream 'orders', which has had no SCHEMA" in _refusal(SCHEMA, version)


def test_a_refused_schema_does_not_register_its_stream() -> None:
    bad = {**SCHEMA, "key_properties": "id"}
    reader = InputReader()

    with pytest.raises(InvalidInputLine):
        reader.process_lines(io.StringIO(json.dumps(bad) + "\n"), {})

    assert reader.streams == set()


def test_a_long_stream_name_is_cut_short_in_the_message() -> None:
    message = {"type": "ACTIVATE_VERSION", "stream": "s" * 5000, "version": 1}

    refusal = _refusal(message)

    assert len(refusal) < 400
    assert "s" * 79 + "…" in refusal


def test_an_unknown_message_type_is_refused_naming_it() -> None:
    refusal = _refusal({"type": "RECROD", "stream": "users"})

    assert refusal.startswith("Input line 1 has unknown Singer message type 'RECROD'")


def test_a_message_without_type_is_refused_naming_the_key() -> None:
    refusal = _refusal({"stream": "users", "record": {"email": "secret@example.com"}})

    assert refusal.startswith("Input line 1 is missing the key(s) type")
    assert "secret@example.com" not in refusal


def test_json_nested_beyond_the_parsers_depth_is_refused_not_a_crash() -> None:
    assert _refusal("[" * 100_000 + "]" * 100_000) == (
        "Input line 1 is not a Singer message (a JSON object)."
    )
    assert _refusal("[" * 100_000).startswith(
        "Input line 1 is not a Singer message (a JSON object)."
    )


def _deep(depth: int) -> str:
    return '{"a":' * depth + '"secret@example.com"' + "}" * depth


def test_a_record_nested_too_deeply_reaches_the_handler_as_a_pruned_record_to_reject() -> None:
    deep = _deep(3000)
    line = f'{{"type":"RECORD","stream":"users","version":4,"record":{{"id":7,"x":{deep}}}}}'

    _, handed, counts = _read(SCHEMA, line)

    message = handed[1]
    assert message == {"type": "RECORD", "stream": "users", "version": 4, "record": {"id": 7}}
    record = message["record"]
    assert isinstance(record, PrunedRecord)
    assert record.reason == (
        f"it is nested 3,001 levels deep (in 'x'), deeper than the {MAX_DEPTH} levels the "
        "target reads"
    )
    assert record.record_json == f'{{"id":7,"x":{deep}}}'
    assert counts == {"SCHEMA": 1, "RECORD": 1}


def test_a_record_whose_message_is_too_deep_beside_it_is_rejected_whole() -> None:
    line = f'{{"type":"RECORD","stream":"users","record":{{"id":7}},"extra":{_deep(500)}}}'

    _, handed, _ = _read(SCHEMA, line)

    record = handed[1]["record"]
    assert isinstance(record, PrunedRecord)
    assert dict(record) == {"id": 7}
    assert record.reason.startswith("its RECORD message is nested 501 levels deep (in 'extra',")


def test_a_record_just_within_the_limit_is_parsed_whole() -> None:
    line = json.dumps({"type": "RECORD", "stream": "users", "record": {"x": [[[1]]]}})
    within = line.replace("[[[1]]]", "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1))

    _, handed, _ = _read(SCHEMA, within)

    assert type(handed[1]["record"]) is dict


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            f'{{"type":"SCHEMA","stream":"users","schema":{_deep(3000)}}}',
            "Input line 1 is a SCHEMA message nested 3,001 levels deep; the target reads "
            f"messages nested at most {MAX_DEPTH + 1} levels, and sets aside only a RECORD "
            "nested deeper (as a rejected record). Fix the tap and rerun",
            id="schema",
        ),
        pytest.param(
            f'{{"type":"STATE","value":{_deep(300)}}}',
            "Input line 1 is a STATE message nested 301 levels deep;",
            id="state",
        ),
        pytest.param(
            f'{{"type":{_deep(3000)},"stream":"users"}}',
            "Input line 1 is a message nested 3,001 levels deep;",
            id="type-too-deep",
        ),
        pytest.param(
            f'{{"type":"RECORD","record":{_deep(3000)}}}',
            "Input line 1 is a RECORD message without a 'stream'.",
            id="record-without-stream",
        ),
        pytest.param(
            f'{{"type":"RECORD","stream":{_deep(3000)},"record":{{}}}}',
            "Input line 1 is a RECORD message whose 'stream' is an object, not a string.",
            id="record-stream-too-deep",
        ),
        pytest.param(
            '{"type":"RECORD","stream":"users","record":[' + "[" * 3000 + "]" * 3000 + "]}",
            "Input line 1 is a RECORD message whose 'record' is an array, not an object.",
            id="record-array",
        ),
        pytest.param(
            '{"type":"RECORD","stream":"users","record":{"x":' + "[" * 3000 + "1" + "]" * 2999,
            "Input line 1 is not valid JSON (it ends before its brackets close, 3,002 levels "
            "deep).",
            id="truncated",
        ),
    ],
)
def test_a_message_nested_too_deeply_that_is_no_readable_record_is_refused(
    line: str, expected: str
) -> None:
    refusal = _refusal(line)

    assert refusal.startswith(expected), refusal
    assert "secret@example.com" not in refusal


@pytest.mark.parametrize(
    ("version", "named"), [("3", "a string"), (1.5, "a number"), (True, "a boolean")]
)
def test_an_activate_version_needs_an_integer_version(version: object, named: str) -> None:
    message = {"type": "ACTIVATE_VERSION", "stream": "users", "version": version}

    refusal = _refusal(SCHEMA, message)

    assert f"whose 'version' is {named}, not an integer" in refusal


# Parsing: the fast parser and the standard library agree on every line


@pytest.mark.parametrize(
    "record",
    [
        '{"id": 1, "x": NaN, "y": Infinity}',
        '{"id": 1, "x": 1e400}',
        '{"id": 1, "name": "bad \\ud800"}',
        '{"id": 1, "id": 2}',
        '{"id": 123456789012345678901234567890, "x": -0.0, "y": 1E5, "z": 5e-324}',
        '{"id": 1, "s": "\\u00e9\\ud83d\\ude00\\u0000"}',
    ],
    ids=["nan", "huge-float", "lone-surrogate", "repeated-key", "numbers", "escapes"],
)
def test_each_line_reads_as_the_standard_library_reads_it(record: str) -> None:
    line = '{"type": "RECORD", "stream": "users", "record": ' + record + "}"

    _, handed, _ = _read(SCHEMA, line)

    assert repr(handed[1]["record"]) == repr(json.loads(line)["record"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "RECORD", "stream": "users", "record": {"id": 1}} x', "Extra data"),
        ('{"type": "RECORD", "stream": "users", "record": {"id": 01}}', "Expecting ','"),
        ('{"type": "RECORD", "stream": "users", "record": {"n": "a\tb"}}', "Invalid control"),
    ],
)
def test_a_line_the_fast_parser_refuses_is_named_as_the_standard_library_names_it(
    line: str, expected: str
) -> None:
    assert _refusal(SCHEMA, line).startswith(f"Input line 2 is not valid JSON ({expected}")


# The feed: the main thread reads the input itself, and a stop reaches it while the tap is silent


_STREAMS: list[object] = []  # the feeds' streams stay open as long as the tests run


def _pipe_feed() -> tuple[InputFeed, int]:
    read_end, write_end = os.pipe()
    stream = open(read_end, encoding="utf-8")  # noqa: SIM115 (closed with the process)
    _STREAMS.append(stream)
    return InputFeed(stream, read_end), write_end


def test_lines_split_across_reads_come_out_whole_and_in_order() -> None:
    feed, write_end = _pipe_feed()
    text = "".join(
        json.dumps({"type": "STATE", "value": {"n": i, "é": "é" * i}}, ensure_ascii=False) + "\n"
        for i in range(2000)
    )
    data = text.encode()

    def tap() -> None:
        # Chunks that cut lines, and two-byte characters, in two.
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            for start in range(0, len(data), 777):
                pipe.write(data[start : start + 777])

    writer = threading.Thread(target=tap)
    writer.start()
    lines = list(feed.lines(lambda: None))
    writer.join()

    assert lines == text.split("\n")[:-1]


def test_a_last_line_without_its_newline_is_read() -> None:
    feed, write_end = _pipe_feed()
    os.write(write_end, b'{"a": 1}\n{"b": 2}')
    os.close(write_end)

    assert list(feed.lines(lambda: None)) == ['{"a": 1}', '{"b": 2}']


class _Stop(Exception):
    pass


def test_a_wake_reaches_the_main_thread_waiting_for_a_silent_tap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No quarter-second check here: only the wake can end the wait (else the test times out)."""
    monkeypatch.setattr(reader_module, "IDLE_CHECK_SECONDS", 3600)
    feed, write_end = _pipe_feed()
    stopping = threading.Event()

    def check() -> None:
        if stopping.is_set():
            raise _Stop

    def stop() -> None:
        stopping.set()
        feed.wake()

    os.write(write_end, b'{"a": 1}\n')
    lines = feed.lines(check)
    assert next(lines) == '{"a": 1}'
    threading.Thread(target=stop).start()
    with pytest.raises(_Stop):
        next(lines)
    os.close(write_end)


def test_a_wake_after_the_input_ended_writes_nowhere() -> None:
    feed, write_end = _pipe_feed()
    os.close(write_end)
    assert list(feed.lines(lambda: None)) == []

    feed.wake()  # the run stops late: its wake pipe is closed, and no other file is written
