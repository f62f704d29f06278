"""BATCH messages load exactly like RECORD messages; ACTIVATE_VERSION is acknowledged.

Every test runs the real target against the sandbox over loopback HTTP. The BATCH runs are
compared with the same records sent as RECORD messages: what lands in Userpilot, the STATE
written and the summary's counts must be equal.
"""

from __future__ import annotations

import datetime
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.errors import BatchFileError
from target_userpilot.input.manifest import BatchEncoding, file_records
from target_userpilot.sandbox import Sandbox

from support.messages import (
    COMPANY_SCHEMA,
    USER_SCHEMA,
    batch,
    record,
    schema,
    state,
    user,
    write_jsonl,
)
from support.runner import RunTarget, summary_counts


def _company(c: int) -> dict[str, Any]:
    return {"company_id": f"c-{c}", "name": f"Company {c}", "employees": c}


def test_batch_files_land_exactly_as_the_same_records_sent_as_record_messages(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    users_1 = [user(i) for i in range(300)]
    # A record the schema refuses: rejected and counted on both paths.
    users_1[7] = {**users_1[7], "score": "high"}
    companies = [_company(c) for c in range(40)]
    # A later file updates records of the first one: later values must win.
    users_2 = [{"id": i, "plan": "enterprise", "email": None} for i in range(0, 300, 7)]
    users_2 += [user(i) for i in range(300, 350)]
    files = {
        "users-1": write_jsonl(tmp_path / "users-1.jsonl.gz", users_1, compress=True),
        "companies": write_jsonl(tmp_path / "companies.jsonl", companies),
        "users-2": write_jsonl(tmp_path / "users-2.jsonl", users_2),
    }
    heads = [
        schema("companies", COMPANY_SCHEMA, ["company_id"]),
        schema("users", USER_SCHEMA, ["id"]),
    ]
    as_records = [
        *heads,
        *[record("users", r) for r in users_1],
        *[record("companies", r) for r in companies],
        state({"bookmarks": {"users": "first"}}),
        *[record("users", r) for r in users_2],
        state({"bookmarks": {"users": "second"}}),
    ]
    as_batches = [
        *heads,
        # A file:// URL, gzip, as the SDK's batcher writes them.
        batch("users", [files["users-1"].as_uri()], compression="gzip"),
        # A plain path, relative to where the target runs, uncompressed.
        batch("companies", [files["companies"].name]),
        state({"bookmarks": {"users": "first"}}),
        batch("users", [str(files["users-2"])]),
        state({"bookmarks": {"users": "second"}}),
    ]
    # Stream maps apply to records from files as to RECORD messages.
    config["stream_maps"] = {"users": {"tier": "plan", "plan": None}}
    config["batch_wait_seconds"] = 30  # batches close at end of input only: equal job counts

    by_records = run_target(config, as_records, tmp_path=tmp_path)
    assert by_records.returncode == 0, by_records.stderr[-3000:]
    landed = {obj: sandbox.profiles(obj) for obj in ("users", "companies")}
    sandbox.reset()
    by_batches = run_target(config, as_batches, tmp_path=tmp_path)

    assert by_batches.returncode == 0, by_batches.stderr[-3000:]
    assert sandbox.profiles("users") == landed["users"]
    assert sandbox.profiles("companies") == landed["companies"]
    assert by_batches.states == by_records.states
    assert by_batches.states[-1] == {"bookmarks": {"users": "second"}}
    assert summary_counts(by_batches) == summary_counts(by_records)
    assert summary_counts(by_batches)["users"]["received"] == 350 + 43
    assert summary_counts(by_batches)["users"]["rejected"] == 1
    users = sandbox.profiles("users")
    assert len(users) == 350  # the rejected record's later update still lands
    assert users["14"]["metadata"]["tier"] == "enterprise"
    assert "email" not in users["14"]["metadata"]  # null removes the property
    assert users["15"]["metadata"]["tier"] == "free"
    assert "plan" not in users["15"]["metadata"]
    assert "read 300 records from BATCH file" in by_batches.stderr


def test_a_missing_batch_file_stops_the_run_with_no_state_past_it(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    missing = tmp_path / "gone" / "users-2.jsonl.gz"
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(20)],
        state({"bookmarks": {"users": "before"}}),
        batch("users", [missing.as_uri()], compression="gzip"),
        state({"bookmarks": {"users": "after"}}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    assert f"The BATCH file {missing.as_uri()} (jsonl, gzip) cannot be read" in run.stderr
    assert "there is no such file" in run.stderr
    assert {"bookmarks": {"users": "after"}} not in run.states
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "case",
    [
        ({"format": "csv", "compression": "none"}, b"id\n1\n", "the format 'csv' is not one"),
        ({"format": "jsonl", "compression": "zstd"}, b"{}\n", "the compression 'zstd'"),
        ({"format": "jsonl", "compression": "gzip"}, b'{"id": 1}\n', "not gzip-compressed"),
        ({"format": "jsonl", "compression": "none"}, b'{"id": 1}\n{"id": \n', "line 2 is not"),
        ({"format": "jsonl", "compression": "none"}, b'{"id": 1}\n[1]\n', "not a record"),
    ],
)
def test_a_batch_file_that_cannot_be_read_names_the_file_and_its_encoding(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    case: tuple[dict[str, str], bytes, str],
    run_target: RunTarget,
) -> None:
    encoding, content, reason = case
    path = tmp_path / "users.batch"
    path.write_bytes(content)
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        {**batch("users", [str(path)]), "encoding": encoding},
        state({"bookmarks": {"users": "after"}}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 7, run.stderr[-3000:]
    named = f"The BATCH file {path} ({encoding['format']}, "
    assert named in run.stderr
    assert reason in run.stderr
    assert run.states == []
    assert '{"id": 1}' not in run.stderr  # the file's content is never echoed


def test_a_batch_record_nested_too_deeply_is_rejected_like_the_same_record_message(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """The parser reads 500 levels, but the record path did not (a RecursionError, exit 1)."""
    config["rejects_path"] = str(tmp_path / "rejects.ndjson")
    deep = '{"id": 2, "deep": ' + "[" * 500 + "1" + "]" * 500 + "}"
    gone_deeper = '{"id": 3, "deep": ' + "[" * 3000 + "1" + "]" * 3000 + "}"
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join([json.dumps(user(1)), deep, gone_deeper, json.dumps(user(4))]))
    messages = [
        schema(
            "users",
            {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "deep": {}}},
            ["id"],
        ),
        batch("users", [str(path)]),
        state({"bookmarks": {"users": "after"}}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1", "4"}
    assert run.states == [{"bookmarks": {"users": "after"}}]
    assert run.summary["streams"]["users"]["rejected"] == 2
    assert "Rejected record #2 of stream 'users': it is nested 501 levels deep" in run.stderr
    assert "Rejected record #3 of stream 'users': it is nested 3,001 levels deep" in run.stderr
    entries = [json.loads(line) for line in Path(config["rejects_path"]).read_text().splitlines()]
    assert [e["record_json"] for e in entries] == [deep, gone_deeper]


def _parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(records), path, compression="gzip", row_group_size=64)
    return path


def test_parquet_batch_files_land_like_json_ones(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    signed_up = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    records = [user(i, score=i / 4, active=bool(i % 2), signed_up_at=signed_up) for i in range(200)]
    path = _parquet(tmp_path / "users.parquet.gz", records)
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        batch("users", [path.as_uri()], fmt="parquet", compression="gzip"),
        state({"bookmarks": {"users": "done"}}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states == [{"bookmarks": {"users": "done"}}]
    users = sandbox.profiles("users")
    assert len(users) == 200
    assert users["5"]["metadata"]["score"] == 1.25
    assert users["5"]["metadata"]["active"] is True
    assert users["5"]["company_id"] == "c-5"
    # A Parquet timestamp arrives as the ISO 8601 text a RECORD message would carry.
    assert users["5"]["metadata"]["signed_up_at"] == "2024-01-02T03:04:05+00:00"


# Memory: a large BATCH file costs what the same records cost as RECORD messages.

#: Runs the target and, on the way out, writes its own peak RSS. VmHWM counts only this program:
#: wait4's ru_maxrss would include the forked copy of the test process before exec.


# ACTIVATE_VERSION


def test_activate_version_gives_one_info_line_per_stream_and_no_warning(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    def activate(stream: str, version: int) -> dict[str, Any]:
        return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}

    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        schema("companies", COMPANY_SCHEMA, ["company_id"]),
        activate("users", 1),
        activate("companies", 1),
        *[record("users", user(i)) for i in range(5)],
        record("companies", _company(1)),
        activate("users", 1),
        activate("companies", 1),
        state({"bookmarks": {"users": "done"}}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    acknowledged = [line for line in run.stderr.splitlines() if "sent ACTIVATE_VERSION" in line]
    assert len(acknowledged) == 2, acknowledged
    assert all("INFO" in line for line in acknowledged)
    assert any("Stream 'users'" in line for line in acknowledged)
    assert any("Stream 'companies'" in line for line in acknowledged)
    assert "WARNING" not in run.stderr
    assert len(sandbox.profiles("users")) == 5
    assert run.states == [{"bookmarks": {"users": "done"}}]


# Reading manifest files (no server involved)


def test_file_urls_and_plain_paths_read_the_same_records_and_skip_blank_lines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users 1.jsonl"
    path.write_text('{"id": 1, "score": 2.5}\n\n{"id": 2}\n')
    jsonl = BatchEncoding.from_message({"format": "jsonl", "compression": "none"})
    urls = [str(path), path.as_uri(), f"file://localhost{path.as_uri()[len('file://') :]}"]

    for url in urls:
        assert list(file_records(url, jsonl)) == [{"id": 1, "score": 2.5}, {"id": 2}], url


def test_other_url_schemes_are_read_through_fsspec() -> None:
    fsspec = pytest.importorskip("fsspec")
    with fsspec.open("memory://batches/users.jsonl.gz", "wb") as out:
        out.write(gzip.compress(b'{"id": 7}\n'))

    records = file_records("memory://batches/users.jsonl.gz", BatchEncoding("jsonl", "gzip"))

    assert list(records) == [{"id": 7}]


def test_a_password_in_a_batch_file_url_stays_out_of_the_message() -> None:
    url = "memory://reader:s3cret@batches/missing.jsonl"

    with pytest.raises(BatchFileError) as refused:
        list(file_records(url, BatchEncoding("jsonl")))

    assert "s3cret" not in str(refused.value)
    assert "reader:***@batches/missing.jsonl (jsonl, uncompressed)" in str(refused.value)
