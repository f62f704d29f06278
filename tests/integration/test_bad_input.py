"""Bad input: bad records are skipped and reported (or stop the run), bad lines stop the run.

Good records around the bad ones always land. Bad records carry a distinctive e-mail address:
it may reach ``rejects_path`` (that is what the file is for) but never stdout or stderr, since
records carry personal data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.errors import InvalidRecordError
from target_userpilot.rejects import RejectLog
from target_userpilot.sandbox import Sandbox
from target_userpilot.summary import RunSummary

from support.messages import API_KEY, USER_SCHEMA, record, schema, state, user
from support.runner import RunTarget, TargetRun

PII = "do-not-log-7731@example.com"
#: The id may be of any type here, so the target's own row rules judge it, not the schema.
ANY_ID_SCHEMA = {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "id": {}}}


def _stopped(run: TargetRun) -> str:
    """The one 'target-userpilot stopped:' sentence of a failed run."""
    lines = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0].split("target-userpilot stopped: ", 1)[1]


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _good_ids(n: int) -> set[str]:
    return {str(i) for i in range(n)}


def test_records_without_a_usable_id_are_skipped_reported_and_the_rest_lands(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    bad: dict[str, dict[str, Any]] = {
        "missing": {"email": PII, "plan": "pro"},
        "null": {"id": None, "email": PII},
        "empty string": {"id": "", "email": PII},
    }
    messages = [schema("users", ANY_ID_SCHEMA, ["id"])]
    positions = {}  # kind: 1-based position of the record in its stream
    for i in range(300):
        messages.append(record("users", user(i)))
        if i % 100 == 50:  # a bad record in the middle of each batch
            kind = list(bad)[i // 100]
            messages.append(record("users", bad[kind]))
            positions[kind] = sum(m["type"] == "RECORD" for m in messages)
        if (i + 1) % 100 == 0:
            messages.append(state({"last": i}))
    quick_poll_config["batch_size_rows"] = 100
    quick_poll_config["rejects_path"] = str(tmp_path / "rejects.ndjson")

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == _good_ids(300)
    assert run.states[-1] == {"last": 299}
    counts = run.summary["streams"]["users"]
    assert counts["received"] == 303
    assert counts["rejected"] == 3
    assert counts["rows_sent"] == 300
    warnings = [
        line for line in run.stderr.splitlines() if "WARNING" in line and "Rejected" in line
    ]
    assert len(warnings) == 3
    for kind, position in positions.items():
        reason = "'id' is an empty string" if kind == "empty string" else "'id' is missing or null"
        assert any(
            f"record #{position} of stream 'users'" in w and reason in w for w in warnings
        ), (kind, position, warnings)
    assert PII not in run.stdout + run.stderr
    rejected = _rejects(tmp_path / "rejects.ndjson")
    assert [r["position"] for r in rejected] == sorted(positions.values())
    assert all(r["stream"] == "users" and r["reason"] for r in rejected)
    assert [r["record"] for r in rejected] == list(bad.values())


def test_invalid_record_with_fail_stops_after_the_job_in_flight_with_exit_6(
    tmp_path: Path, run_target: RunTarget
) -> None:
    """Jobs take half a second, so the second batch is still in Userpilot when the bad record
    arrives: the run waits for it, writes its STATE, and writes nothing past the bad record."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=12_000) as sandbox:
        quick_poll_config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "batch_size_rows": 100,
            "rows_per_minute": 12_000,
            "on_invalid_record": "fail",
            "rejects_path": str(tmp_path / "rejects.ndjson"),
        }
        messages = [schema("users", ANY_ID_SCHEMA, ["id"])]
        for i in range(250):
            messages.append(record("users", user(i)))
            if (i + 1) % 50 == 0:
                messages.append(state({"last": i}))
        messages.append(record("users", {"email": PII}))  # record #251
        for i in range(250, 400):
            messages.append(record("users", user(i)))
            if (i + 1) % 50 == 0:
                messages.append(state({"last": i}))

        run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

        assert run.returncode == 6, run.stderr[-3000:]
        message = _stopped(run)
        assert message.startswith("Rejected record #251 of stream 'users': 'id' is missing")
        assert "on_invalid_record" in message
        # The job in flight (records 100-199) ended and its STATE went out; nothing after.
        assert run.states[-1] == {"last": 199}
        assert all(s["last"] < 250 for s in run.states)
        landed = sandbox.profiles("users")
        assert set(landed) == _good_ids(200)
        assert all(job["status"] == "completed" for job in sandbox.jobs())
        assert PII not in run.stdout + run.stderr
        assert _rejects(tmp_path / "rejects.ndjson")[0]["record"] == {"email": PII}


def test_every_rejection_is_counted_once_even_the_one_that_stops_the_run() -> None:
    summary = RunSummary()
    RejectLog("skip", summary=summary).reject("users", 1, "why", {"id": 1})
    with pytest.raises(InvalidRecordError):
        RejectLog("fail", summary=summary).reject("users", 2, "why", {"id": 2})

    assert summary.streams["users"].rejected == 2


def test_with_fail_a_record_missing_its_key_is_counted_before_the_run_stops(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["on_invalid_record"] = "fail"
    messages = [
        schema("users", ANY_ID_SCHEMA, ["id"]),
        record("users", user(1)),
        record("users", {"email": PII}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 6, run.stderr[-3000:]
    assert _stopped(run).startswith("Rejected record #2 of stream 'users': 'id' is missing")
    assert run.summary["streams"]["users"]["rejected"] == 1


def test_with_fail_the_records_of_an_ignored_stream_are_not_judged(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """``ignore`` drops a stream: a record of it that lacks its key stops nothing."""
    config["on_invalid_record"] = "fail"
    config["object_mapping"] = {"audit_log": {"object": "ignore"}}
    messages = [
        schema("audit_log", ANY_ID_SCHEMA, ["id"]),
        record("audit_log", {"email": PII}),
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        state({"last": 1}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1"}
    assert run.states == [{"last": 1}]
    assert run.summary["streams"]["audit_log"]["rejected"] == 0


@pytest.mark.parametrize(
    ("bad_id", "reason"),
    [
        (2.5, "'id' is a number with a fraction"),
        (3.0, "'id' is a number with a fraction"),
        (True, "'id' is a boolean"),
        ({"a": 1}, "object, not a string or integer"),
        ([1], "array, not a string or integer"),
    ],
    ids=["float", "integral-float", "bool", "object", "array"],
)
def test_ids_of_the_wrong_type_are_rejected_not_guessed(
    bad_id: object,
    reason: str,
    sandbox: Sandbox,
    quick_poll_config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    messages = [
        schema("users", ANY_ID_SCHEMA, ["id"]),
        record("users", user(1)),
        record("users", user(2, id=bad_id, email=PII)),
        record("users", user(3)),
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1", "3"}  # no profile "2.5", "True", ...
    assert run.summary["streams"]["users"]["rejected"] == 1
    warning = next(line for line in run.stderr.splitlines() if "Rejected record #2" in line)
    assert reason in warning
    assert PII not in run.stdout + run.stderr


def test_a_record_larger_than_max_file_bytes_is_rejected_and_the_others_land(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    quick_poll_config["max_file_bytes"] = 4000
    quick_poll_config["rejects_path"] = str(tmp_path / "rejects.ndjson")
    messages = [schema("users", USER_SCHEMA, ["id"])]
    messages += [record("users", user(i)) for i in range(40)]
    messages.append(record("users", user(40, name="x" * 5000, email=PII)))
    messages += [record("users", user(i)) for i in range(41, 80)]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == _good_ids(80) - {"40"}
    assert all(job["file_size"] <= 4000 for job in sandbox.jobs())
    assert run.summary["streams"]["users"]["rejected"] == 1
    assert re.search(r"Rejected record #41 of stream 'users': .*max_file_bytes", run.stderr)
    assert PII not in run.stdout + run.stderr
    (entry,) = _rejects(tmp_path / "rejects.ndjson")
    assert entry["record"]["email"] == PII


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "RECORD", "stream": "users", "record": {"id": 2', "is not valid JSON"),
        ("[1, 2, 3]", "is not a Singer message"),
    ],
    ids=["truncated-json", "not-an-object"],
)
def test_a_malformed_line_stops_with_exit_7_naming_the_line(
    line: str,
    expected: str,
    sandbox: Sandbox,
    quick_poll_config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    quick_poll_config["batch_size_rows"] = 100
    messages: list[dict[str, Any] | str] = [schema("users", USER_SCHEMA, ["id"])]
    messages += [record("users", user(i)) for i in range(100)]
    messages.append(state({"last": 99}))
    messages.append(line)  # line 103
    messages += [record("users", user(i)) for i in range(100, 150)]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    message = _stopped(run)
    assert message.startswith(f"Input line 103 {expected}"), message
    # The batch before it was uploaded and its job awaited: its STATE still went out.
    assert run.states == [{"last": 99}]
    assert set(sandbox.profiles("users")) == _good_ids(100)


def test_a_record_before_its_schema_stops_with_exit_7(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        record("companies", {"company_id": "c-1", "name": PII}),
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    assert "stream 'companies' was encountered before a corresponding schema" in _stopped(run)
    assert PII not in run.stdout + run.stderr
    assert run.states == []


def test_an_unknown_message_type_stops_with_exit_7(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        {"type": "RECROD", "stream": "users", "record": {"id": 2, "email": PII}},
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    message = _stopped(run)
    assert message.startswith("Input line 3 has unknown Singer message type 'RECROD'")
    assert PII not in run.stdout + run.stderr


def test_a_message_without_a_type_stops_with_exit_7_without_echoing_the_record(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        {"stream": "users", "record": {"id": 2, "email": PII}},
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    assert "line 2" in _stopped(run).lower()
    assert PII not in run.stdout + run.stderr


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_schema_invalid_records_follow_on_invalid_record(
    policy: str,
    sandbox: Sandbox,
    quick_poll_config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    quick_poll_config["validate_records"] = True
    quick_poll_config["on_invalid_record"] = policy
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(10)],
        record("users", user(10, score="high", email=PII)),
        *[record("users", user(i)) for i in range(11, 20)],
        state({"last": 19}),
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert PII not in run.stdout + run.stderr
    if policy == "skip":
        assert run.returncode == 0, run.stderr[-3000:]
        assert set(sandbox.profiles("users")) == _good_ids(20) - {"10"}
        assert run.summary["streams"]["users"]["rejected"] == 1
        assert re.search(r"Rejected record #11 of stream 'users': .*schema", run.stderr)
        assert run.states == [{"last": 19}]
    else:
        assert run.returncode == 6, run.stderr[-3000:]
        assert _stopped(run).startswith("Rejected record #11 of stream 'users'")
        assert run.states == []
        assert sandbox.profiles("users") == {}


def test_a_string_that_is_not_valid_unicode_is_a_rejected_record(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages: list[dict[str, Any] | str] = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        '{"type": "RECORD", "stream": "users", "record": {"id": 2, "name": "bad \\ud800"}}',
        record("users", user(3)),
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1", "3"}
    assert run.summary["streams"]["users"]["rejected"] == 1


def test_good_records_land_when_every_other_record_is_bad(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """Rejections interleaved with good records across several batches and a STATE each."""
    quick_poll_config["batch_size_rows"] = 50
    messages = [schema("users", ANY_ID_SCHEMA, ["id"])]
    for i in range(200):
        messages.append(record("users", user(i)))
        messages.append(record("users", {"id": None, "email": PII}))
        if (i + 1) % 50 == 0:
            messages.append(state({"last": i}))
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == _good_ids(200)
    assert run.summary["streams"]["users"]["rejected"] == 200
    assert run.states[-1] == {"last": 199}
    assert PII not in run.stdout + run.stderr


def test_a_rejects_file_that_already_exists_is_made_owner_only(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    rejects = tmp_path / "rejects.ndjson"
    rejects.write_text('{"stream": "users", "position": 9, "reason": "an earlier run"}\n')
    rejects.chmod(0o644)
    quick_poll_config["rejects_path"] = str(rejects)
    messages = [schema("users", USER_SCHEMA, ["id"]), record("users", user(1, id=None))]
    messages.append(record("users", user(2)))

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert rejects.stat().st_mode & 0o777 == 0o600
    assert [entry["position"] for entry in _rejects(rejects)] == [9, 1]  # appended, kept


def test_rejects_file_is_owner_only_and_keeps_a_record_with_a_lone_surrogate(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    rejects = tmp_path / "rejects.ndjson"
    quick_poll_config["rejects_path"] = str(rejects)
    messages: list[dict[str, Any] | str] = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        '{"type": "RECORD", "stream": "users", "record": {"id": 2, "name": "bad \\ud800 Zürich"}}',
        record("users", user(3)),
        state({"done": True}),
    ]
    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1", "3"}
    assert run.states == [{"done": True}]
    assert rejects.stat().st_mode & 0o777 == 0o600
    (rejected,) = _rejects(rejects)
    assert rejected["record"] == {"id": 2, "name": "bad \ud800 Zürich"}  # read back unchanged
    assert rejected["stream"] == "users"


_PII_RECORD = {"id": 7, "email": PII}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            {"type": ["RECORD"], "stream": "users", "record": _PII_RECORD},
            "has a 'type' that is an array, not a string.",
            id="type-list",
        ),
        pytest.param(
            {"type": None, "stream": "users", "record": _PII_RECORD},
            "has a 'type' that is null, not a string.",
            id="type-null",
        ),
        pytest.param(
            {"type": "RECORD", "stream": ["users"], "record": _PII_RECORD},
            "is a RECORD message whose 'stream' is an array, not a string.",
            id="stream-list",
        ),
        pytest.param(
            {"type": "RECORD", "stream": 5, "record": _PII_RECORD},
            "is a RECORD message whose 'stream' is a number, not a string.",
            id="stream-integer",
        ),
        pytest.param(
            {"type": "RECORD", "record": _PII_RECORD},
            "is a RECORD message without a 'stream'.",
            id="stream-missing",
        ),
        pytest.param(
            {"type": "RECORD", "stream": "users", "record": [1, 2]},
            "is a RECORD message whose 'record' is an array, not an object.",
            id="record-list",
        ),
        pytest.param(
            {"type": "RECORD", "stream": "users", "record": PII},
            "is a RECORD message whose 'record' is a string, not an object.",
            id="record-string",
        ),
        pytest.param(
            {"type": "RECORD", "stream": "users", "record": None},
            "is a RECORD message whose 'record' is null, not an object.",
            id="record-null",
        ),
        pytest.param(
            {"type": "RECORD", "stream": "users"},
            "is a RECORD message without a 'record'.",
            id="record-missing",
        ),
        pytest.param(
            {"type": "SCHEMA", "stream": "users", "schema": [PII], "key_properties": ["id"]},
            "is a SCHEMA message whose 'schema' is an array, not an object.",
            id="schema-list",
        ),
        pytest.param(
            {"type": "SCHEMA", "stream": "users", "schema": {"properties": [PII]}},
            "is a SCHEMA message whose 'schema' has 'properties' that are an array, not an object.",
            id="schema-properties-list",
        ),
        pytest.param(
            {"type": "SCHEMA", "stream": "users", "schema": {"type": "object"}},
            "is a SCHEMA message whose 'schema' has no 'properties'.",
            id="schema-properties-missing",
        ),
        pytest.param(
            schema("users", USER_SCHEMA, "id"),  # type: ignore[arg-type]  # wrong on purpose
            "is a SCHEMA message whose 'key_properties' is not a list of property names",
            id="key-properties-string",
        ),
        pytest.param(
            schema("users", USER_SCHEMA, [1]),  # type: ignore[list-item]  # wrong on purpose
            "is a SCHEMA message whose 'key_properties' is not a list of property names",
            id="key-properties-integers",
        ),
        pytest.param(
            {"type": "SCHEMA", "stream": {"name": "users"}, "schema": USER_SCHEMA},
            "is a SCHEMA message whose 'stream' is an object, not a string.",
            id="schema-stream-object",
        ),
        pytest.param(
            {"type": "ACTIVATE_VERSION", "stream": "companies", "version": 1},
            "is an ACTIVATE_VERSION message for stream 'companies', which has had no SCHEMA "
            "message before it.",
            id="activate-version-unknown-stream",
        ),
        pytest.param(
            {"type": "ACTIVATE_VERSION", "stream": None, "version": 1},
            "is an ACTIVATE_VERSION message whose 'stream' is null, not a string.",
            id="activate-version-null-stream",
        ),
        pytest.param(
            {"type": "ACTIVATE_VERSION", "stream": "users"},
            "is an ACTIVATE_VERSION message whose 'version' is missing, not an integer.",
            id="activate-version-without-version",
        ),
        pytest.param(
            {"type": "STATE", "bookmarks": {"users": 150}},
            "is a STATE message without a 'value'.",
            id="state-without-value",
        ),
        pytest.param(
            {"type": "BATCH", "stream": "companies", "encoding": {"format": "jsonl"}},
            "is a BATCH message for stream 'companies', which has had no SCHEMA message",
            id="batch-unknown-stream",
        ),
        pytest.param(
            {"type": "BATCH", "stream": "users", "encoding": {"format": "jsonl"}, "manifest": 3},
            "is a BATCH message whose 'manifest' is not a list of file names.",
            id="batch-manifest-number",
        ),
    ],
)
def test_a_malformed_message_stops_with_exit_7_and_a_sentence_naming_the_line(
    message: dict[str, Any],
    expected: str,
    sandbox: Sandbox,
    quick_poll_config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    """The batch before the bad line is awaited and its STATE written; nothing after it."""
    quick_poll_config["batch_size_rows"] = 100
    messages: list[dict[str, Any] | str] = [schema("users", USER_SCHEMA, ["id"])]
    messages += [record("users", user(i)) for i in range(100)]
    messages.append(state({"last": 99}))
    messages += [record("users", user(i)) for i in range(100, 120)]
    messages.append(message)  # line 123
    messages += [record("users", user(i)) for i in range(120, 150)]
    messages.append(state({"last": 149}))

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    sentence = _stopped(run)
    assert sentence.startswith(f"Input line 123 {expected}"), sentence
    assert "Traceback" not in run.stderr
    assert PII not in run.stdout + run.stderr
    assert run.states == [{"last": 99}]
    assert set(sandbox.profiles("users")) == _good_ids(100)


def test_blank_lines_between_messages_are_skipped(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    quick_poll_config["batch_size_rows"] = 10
    messages: list[dict[str, Any] | str] = ["", "   ", schema("users", USER_SCHEMA, ["id"]), "\t"]
    for i in range(30):
        messages.append(record("users", user(i)))
        if i % 7 == 0:
            messages += ["", " \r"]
    messages += [state({"last": 29}), "", ""]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == _good_ids(30)
    assert run.states == [{"last": 29}]
    assert run.summary["streams"]["users"]["received"] == 30


def test_a_bad_line_after_blank_lines_is_named_by_its_line_in_the_file(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages: list[dict[str, Any] | str] = [
        schema("users", USER_SCHEMA, ["id"]),
        "",
        "",
        record("users", user(1)),
        "{bad",
    ]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    assert _stopped(run).startswith("Input line 5 is not valid JSON")


# A run that loads nothing is not a success; reject positions count per stream


def test_a_server_refusing_every_row_as_too_large_ends_with_exit_12(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_faults(max_rows=0)
    quick_poll_config["batch_size_rows"] = 4
    messages = [schema("users", USER_SCHEMA, ["id"])]
    messages += [record("users", user(i)) for i in range(8)]
    messages.append(state({"last": 7}))

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 12, run.stderr[-3000:]
    assert _stopped(run).startswith("Every record that should have become a Userpilot row")
    assert sandbox.profiles("users") == {}
    assert run.summary["total"]["rejected"] == 8


def test_a_run_with_some_rows_loaded_and_some_rejected_still_exits_0(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [schema("users", ANY_ID_SCHEMA, ["id"])]
    messages += [record("users", user(1)), record("users", {"email": PII})]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1"}


def test_reject_positions_keep_counting_across_a_schema_change(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [schema("users", ANY_ID_SCHEMA, ["id"])]
    messages += [record("users", user(i)) for i in range(3)]
    changed = {**ANY_ID_SCHEMA, "properties": {**ANY_ID_SCHEMA["properties"], "extra": {}}}
    messages.append(schema("users", changed, ["id"]))
    messages.append(record("users", user(3)))
    messages.append(record("users", {"email": PII}))  # the 5th record of the stream

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert "Rejected record #5 of stream 'users'" in run.stderr
    assert "Rejected record #1 " not in run.stderr


# Records nested deeper than the target reads (nesting.py): rejected, never a stop or a traceback


def _deep_record_line(stream: str, rec: dict[str, Any], depth: int, *, arrays: bool = False) -> str:
    """A RECORD line whose record has a property ``deep`` nested ``depth`` levels below it."""
    inner = json.dumps(PII)
    deep = "[" * depth + inner + "]" * depth if arrays else '{"a":' * depth + inner + "}" * depth
    return json.dumps(record(stream, {**rec, "deep": "DEEP"})).replace('"DEEP"', deep)


def test_a_record_nested_3000_deep_with_fail_stops_with_exit_6_and_no_state_past_it(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    quick_poll_config["on_invalid_record"] = "fail"
    quick_poll_config["batch_size_rows"] = 3  # the first three go up before the deep record is read
    messages: list[dict[str, Any] | str] = [schema("users", ANY_ID_SCHEMA, ["id"])]
    messages += [record("users", user(i)) for i in range(3)]
    messages += [state({"last": 2}), _deep_record_line("users", {"id": 3}, 3000)]
    messages += [record("users", user(4)), state({"last": 4})]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 6, run.stderr[-3000:]
    assert _stopped(run).startswith(
        "Rejected record #4 of stream 'users': it is nested 3,001 levels deep (in 'deep')"
    )
    assert run.states == [{"last": 2}]
    assert set(sandbox.profiles("users")) == {"0", "1", "2"}
    assert PII not in run.stdout + run.stderr


def test_a_schema_nested_3000_deep_stops_with_exit_7_naming_the_line(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    quick_poll_config["batch_size_rows"] = 1  # the first record's job is awaited, its STATE written
    deep_schema = json.dumps(schema("users", ANY_ID_SCHEMA, ["id"]))
    deep_schema = deep_schema.replace('"id": {}', '"id": ' + '{"items":' * 3000 + "{}" + "}" * 3000)
    messages: list[dict[str, Any] | str] = [
        schema("users", ANY_ID_SCHEMA, ["id"]),
        record("users", user(1)),
    ]
    messages += [state({"last": 1}), deep_schema, record("users", user(2)), state({"last": 2})]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    assert _stopped(run).startswith(
        "Input line 4 is a SCHEMA message nested 3,004 levels deep; the target reads messages "
        "nested at most 201 levels, and sets aside only a RECORD nested deeper"
    )
    assert run.states == [{"last": 1}]
    assert set(sandbox.profiles("users")) == {"1"}


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"flattening_enabled": True, "flattening_max_depth": 1000},
        {"validate_records": False},
        {"stream_maps": {"users": {"id": "id + 100"}}},
        {"add_record_metadata": True},
    ],
    ids=["plain", "sdk-flattening", "no-validation", "stream-maps", "record-metadata"],
)
def test_records_nested_to_the_limit_load_and_deeper_ones_are_rejected_not_a_traceback(
    settings: dict[str, Any],
    sandbox: Sandbox,
    quick_poll_config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    """The parser reads 500 levels, but the record path recursed further than Python allows
    (arrays as JSON text: a RecursionError, exit 1): 200 levels load, any deeper is rejected."""
    quick_poll_config.update(settings)
    deep_schema = {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "deep": {}}}
    messages: list[dict[str, Any] | str] = [schema("users", deep_schema, ["id"])]
    messages += [
        _deep_record_line("users", {"id": 1}, 199, arrays=True),  # 200 levels with the record
        _deep_record_line("users", {"id": 2}, 200, arrays=True),
        _deep_record_line("users", {"id": 3}, 500, arrays=True),
        _deep_record_line("users", {"id": 4}, 500),
        record("users", user(5)),
    ]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    offset = 100 if "stream_maps" in settings else 0
    assert set(sandbox.profiles("users")) == {str(1 + offset), str(5 + offset)}
    assert run.summary["streams"]["users"]["rejected"] == 3
    for position, depth in ((2, 201), (3, 501), (4, 501)):
        assert f"Rejected record #{position} of stream 'users': it is nested {depth} levels" in (
            run.stderr
        )


def test_a_record_too_deep_for_its_stream_map_is_still_rejected_not_a_map_error(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """The map needs the property that was too deep to read: the record is rejected all the
    same (neither exit 2 for the map, nor left out without a word)."""
    quick_poll_config["stream_maps"] = {"users": {"__filter__": "deep != 'x'"}}
    deep_schema = {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "deep": {}}}
    messages: list[dict[str, Any] | str] = [
        schema("users", deep_schema, ["id"]),
        record("users", user(1, deep=[1])),
        _deep_record_line("users", {"id": 2}, 3000),
        record("users", user(3, deep=[1])),
    ]

    run = run_target(quick_poll_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1", "3"}
    assert run.summary["streams"]["users"]["rejected"] == 1
    assert "Rejected record #2 of stream 'users': it is nested 3,001 levels deep" in run.stderr
