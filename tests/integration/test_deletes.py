"""Deletes: records whose ``_sdc_deleted_at`` is set, with ``hard_delete`` off and on.

Off, they are neither upserted nor deleted, only counted. On, their ids become Userpilot deletion
requests (``DELETE /v1/users`` / ``/v1/companies``), paced one per 2 s, split on 413, and STATE
waits for Userpilot's 202. The tests run the real target (or the deletion lane with the real
client) against the sandbox over loopback HTTP and check what the sandbox scheduled.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.batching.batch import BatchFile
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.lanes.deletions import DeletionLane
from target_userpilot.memory.unchanged import ConfirmedRows
from target_userpilot.records.rows import encode_row
from target_userpilot.sandbox import Sandbox
from target_userpilot.summary import RunSummary
from target_userpilot.userpilot.client import UserpilotClient

from support.messages import (
    API_KEY,
    COMPANY_SCHEMA,
    DELETED_AT,
    TAP_USER_SCHEMA,
    USER_SCHEMA,
    deleted_user,
    record,
    schema,
    state,
    user,
)
from support.readme import readme_recipe
from support.runner import RunTarget
from support.waiting import eventually


def deleted_company(company_id: str) -> dict[str, Any]:
    return {"company_id": company_id, "name": None, "_sdc_deleted_at": DELETED_AT}


def _delete_calls(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.request_log() if r["endpoint"] == "delete"]


def _log_lines(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


def _table_total(stderr: str) -> dict[str, str]:
    """The summary table's TOTAL row, by column heading."""
    messages = [line.rsplit("| ", 1)[-1] for line in stderr.splitlines() if "| " in line]
    head = re.split(r" {2,}", next(m for m in messages if m.startswith("stream ")).strip())
    cells = re.split(r" {2,}", next(m for m in messages if m.startswith("TOTAL ")).strip())
    cells.insert(1, "")
    return dict(zip(head, cells, strict=True))


# hard_delete off (the default)


def test_with_hard_delete_off_deleted_records_are_counted_and_neither_upserted_nor_deleted(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(1, 4)],
        record("users", deleted_user(2)),
        record("users", deleted_user(7)),
        record("users", user(3, plan="enterprise")),
        schema(
            "companies",
            COMPANY_SCHEMA
            | {
                "properties": {
                    **COMPANY_SCHEMA["properties"],
                    "_sdc_deleted_at": {"type": ["null", "string"]},
                }
            },
            ["company_id"],
        ),
        record("companies", {"company_id": "c-1", "name": "Acme"}),
        record("companies", deleted_company("c-2")),
        state({"done": True}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    users = sandbox.profiles("users")
    # The live rows are updated; the deleted ones are not upserted (7 would be created, and
    # 2's earlier row stays as the tap sent it before the delete).
    assert set(users) == {"1", "2", "3"}
    assert users["3"]["metadata"]["plan"] == "enterprise"
    assert users["2"]["metadata"]["plan"] == user(2)["plan"]
    assert set(sandbox.profiles("companies")) == {"c-1"}
    assert _delete_calls(sandbox) == []
    assert sandbox.deletions("users") == [] and sandbox.deletions("companies") == []
    assert run.states == [{"done": True}]
    # Counted as ignored, one INFO line per stream pointing to hard_delete.
    summary = run.summary
    assert summary["streams"]["users"]["deleted_ignored"] == 2
    assert summary["streams"]["companies"]["deleted_ignored"] == 1
    assert summary["total"]["deleted"] == 0
    assert summary["total"]["deleted_ignored"] == 3
    notes = _log_lines(run.stderr, "marked deleted in the source (_sdc_deleted_at): they are")
    assert len(notes) == 2 and all("INFO" in line and "hard_delete" in line for line in notes)
    total = _table_total(run.stderr)
    assert total["deleted"] == "3 ignored"
    assert "superseded" not in total
    assert "3 records marked deleted in the source" in run.stderr


# hard_delete on


def test_hard_delete_requests_exactly_the_deleted_ids_paced_and_upserts_none_of_them(
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    # Userpilot's own pace: one deletion request every 2 s, else 429.
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, delete_interval=2.0) as sandbox:
        config = {"api_url": sandbox.url, "api_key": API_KEY, "hard_delete": True}
        messages = [
            schema("users", TAP_USER_SCHEMA, ["id"]),
            *[record("users", user(i)) for i in range(1, 6)],
            record("users", deleted_user(2)),  # supersedes the row of 2 in the open batch
            record("users", deleted_user(4)),
            record("users", deleted_user(9)),  # never loaded: deleted all the same
            record("users", {**deleted_user(0), "id": None}),  # no usable id: rejected
            state({"users": "done"}),
            schema(
                "companies",
                {
                    "properties": {
                        **COMPANY_SCHEMA["properties"],
                        "_sdc_deleted_at": {"type": ["null", "string"]},
                    }
                },
                ["company_id"],
            ),
            record("companies", {"company_id": "c-1", "name": "Acme"}),
            record("companies", deleted_company("c-2")),
            state({"companies": "done"}),
        ]

        run = run_target(config, messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert sorted(sandbox.deletions("users")) == ["2", "4", "9"]
        assert sandbox.deletions("companies") == ["c-2"]
        assert set(sandbox.profiles("users")) == {"1", "3", "5"}
        assert set(sandbox.profiles("companies")) == {"c-1"}
        calls = _delete_calls(sandbox)
        assert len(calls) >= 2  # users and companies cannot share a request
        assert all(call["status"] == 202 for call in calls)
        gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(calls)]
        assert all(gap >= 2.0 for gap in gaps), gaps
        assert sandbox.stats()["by_endpoint"]["delete"]["rate_limited"] == 0
    assert run.states[-1] == {"companies": "done"}
    users = run.summary["streams"]["users"]
    assert users["deleted"] == 3
    assert users["superseded"] == 2  # the rows of 2 and 4 in the open batch
    assert users["rejected"] == 1
    assert users["rows_sent"] == 3
    assert run.summary["streams"]["companies"]["deleted"] == 1
    assert run.summary["total"]["deleted"] == 4
    assert "Userpilot accepted the deletion of 4 profiles" in run.stderr
    total = _table_total(run.stderr)
    assert (total["deleted"], total["superseded"], total["rejected"]) == ("4", "2", "1")


#: What a flag column mapped onto _sdc_deleted_at, or a broken source, puts in the mark. Only a
#: date-time marks a deletion: each of these is an invalid record, never an erasure.
DOUBTFUL_MARKS = [0, 1, "0", "1", "false", "true", True, False, " ", "", "not a date", "2026-11-02"]


@pytest.mark.parametrize("hard_delete", [True, False])
def test_a_deletion_mark_that_is_not_a_date_time_is_rejected_and_never_an_erasure(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    hard_delete: bool,
    run_target: RunTarget,
) -> None:
    sandbox.set_limits(delete_interval=0)
    rejects = tmp_path / "rejects.ndjson"
    config |= {"hard_delete": hard_delete, "rejects_path": str(rejects)}
    doubtful = {100 + n: mark for n, mark in enumerate(DOUBTFUL_MARKS)}
    messages = [  # USER_SCHEMA does not declare the mark: no schema rule to lean on
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        *[record("users", user(i, _sdc_deleted_at=mark)) for i, mark in doubtful.items()],
        record("users", user(2, _sdc_deleted_at=None)),
        state({"done": True}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    # No deletion request at all, and none of the doubtful ids upserted either.
    assert _delete_calls(sandbox) == []
    assert sandbox.deletions("users") == []
    assert set(sandbox.profiles("users")) == {"1", "2"}
    users = run.summary["streams"]["users"]
    assert users["rejected"] == len(DOUBTFUL_MARKS)
    assert (users["deleted"], users["deleted_ignored"], users["rows_sent"]) == (0, 0, 2)
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [entry["record"]["id"] for entry in kept] == list(doubtful)
    assert [entry["position"] for entry in kept] == list(range(2, 2 + len(DOUBTFUL_MARKS)))
    assert all(entry["stream"] == "users" for entry in kept)
    assert all("'_sdc_deleted_at' is" in entry["reason"] for entry in kept)
    assert all("not a date-time" in entry["reason"] for entry in kept)
    warnings = _log_lines(run.stderr, "'_sdc_deleted_at' is")
    assert len(warnings) == len(DOUBTFUL_MARKS)
    assert all("WARNING" in line and "of stream 'users'" in line for line in warnings)
    assert run.states == [{"done": True}]


def test_a_deletion_mark_is_checked_against_its_declared_schema_too(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_limits(delete_interval=0)
    config |= {"hard_delete": True}
    declared = {
        "type": "object",
        "properties": {
            **USER_SCHEMA["properties"],
            # A source that declares its mark as a number (an epoch, say).
            "_sdc_deleted_at": {"type": ["null", "integer"]},
        },
    }
    messages = [
        schema("users", declared, ["id"]),
        record("users", user(1)),
        record("users", {"id": 5, "_sdc_deleted_at": DELETED_AT}),  # breaks the schema
        record("users", {"id": 6, "_sdc_deleted_at": 1}),  # keeps it, but is no date-time
        record("users", user(2)),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _delete_calls(sandbox) == []
    assert set(sandbox.profiles("users")) == {"1", "2"}
    assert run.summary["streams"]["users"]["rejected"] == 2
    (schema_line,) = _log_lines(run.stderr, "Rejected record #2 of stream 'users'")
    assert "property '_sdc_deleted_at' fails 'type'" in schema_line
    (flag_line,) = _log_lines(run.stderr, "Rejected record #3 of stream 'users'")
    assert "'_sdc_deleted_at' is an integer, not a date-time" in flag_line


def test_an_upsert_after_a_delete_of_the_same_id_is_sent_with_one_warning(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_limits(delete_interval=0)
    config["hard_delete"] = True
    messages = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        record("users", user(1, plan="free")),
        record("users", deleted_user(1)),
        record("users", {"id": 1, "name": "Back again"}),
        record("users", {"id": 1, "plan": "pro"}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.deletions("users") == ["1"]
    # The row before the delete was superseded: only the rows after it reached Userpilot.
    assert sandbox.profiles("users")["1"]["metadata"] == {"name": "Back again", "plan": "pro"}
    warnings = _log_lines(run.stderr, "again after its deletion earlier in this run")
    assert len(warnings) == 1 and "WARNING" in warnings[0]
    assert "02:00 UTC" in warnings[0]
    assert run.summary["streams"]["users"]["superseded"] == 1


def test_debug_logs_count_deletions_and_never_name_the_people_erased(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_limits(delete_interval=0)
    config |= {"hard_delete": True}
    erased = ["erase-me-7f3a", "erase-me-91c2"]
    messages = [
        schema("users", {"user_id": {"type": "string"}, "_sdc_deleted_at": {}}, ["user_id"]),
        record("users", {"user_id": "kept-5be1"}),
        *[record("users", {"user_id": i, "_sdc_deleted_at": DELETED_AT}) for i in erased],
    ]

    run = run_target(
        config,
        messages,
        tmp_path=tmp_path,
        env={"LOGLEVEL": "DEBUG", "TARGET_USERPILOT_LOGLEVEL": "DEBUG"},
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(sandbox.deletions("users")) == erased
    assert " DEBUG " in run.stderr  # it did log at DEBUG
    assert "erase-me" not in run.stdout + run.stderr
    # Requests are counted, never named: the first may go before the second id is read.
    accepted = re.findall(r"accepted deletion request \d+ \((\d+) ids? of users\)", run.stderr)
    assert accepted and sum(int(n) for n in accepted) == 2


def test_a_429_on_a_deletion_request_is_waited_out_for_retry_after(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.answer_next("delete", 429, times=1, retry_after=1.0)
    config["hard_delete"] = True
    messages = [schema("users", TAP_USER_SCHEMA, ["id"]), record("users", deleted_user(5))]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.deletions("users") == ["5"]
    calls = _delete_calls(sandbox)
    assert [call["status"] for call in calls] == [429, 202]
    assert calls[1]["at"] - calls[0]["at"] >= 1.0


def test_dry_run_writes_each_deletion_request_body_as_a_file(
    tmp_path: Path, run_target: RunTarget
) -> None:
    out = tmp_path / "batches"
    config = {"dry_run": True, "output_dir": str(out), "hard_delete": True}
    messages = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(3)],
        *[record("users", deleted_user(i)) for i in (1, 10, 11)],
        schema(
            "companies",
            {
                "properties": {
                    **COMPANY_SCHEMA["properties"],
                    "_sdc_deleted_at": {"type": ["null", "string"]},
                }
            },
            ["company_id"],
        ),
        record("companies", deleted_company("c-ü")),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert "users-1.ndjson" in files
    deleted: dict[str, list[str]] = {"users": [], "companies": []}
    for obj in deleted:
        names = sorted(
            (f for f in files if f.startswith(f"{obj}-delete-")),
            key=lambda f: int(f.rsplit("-", 1)[1].split(".")[0]),
        )
        assert names, files
        for name in names:
            data = (out / name).read_bytes()
            ids = json.loads(data)[obj]
            # Exactly the body the real client sends: {"users": [...]}.
            assert data == json.dumps({obj: ids}).encode()
            assert (out / name).stat().st_mode & 0o777 == 0o600
            deleted[obj] += ids
    assert deleted == {"users": ["1", "10", "11"], "companies": ["c-ü"]}
    rows = [json.loads(line) for line in (out / "users-1.ndjson").read_bytes().splitlines()]
    assert [row["user_id"] for row in rows] == ["0", "2"]
    assert run.summary["total"]["deleted"] == 4
    assert "4 deletions would have been requested" in run.stderr


@pytest.mark.skipif(
    not hasattr(ConfirmedRows, "forget"), reason="the ledger has no forget() on this branch yet"
)
def test_a_deleted_id_leaves_the_skip_unchanged_ledger(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_limits(delete_interval=0)
    config |= {"skip_unchanged": True, "state_db": str(tmp_path / "state.db"), "hard_delete": True}
    live = [schema("users", TAP_USER_SCHEMA, ["id"]), record("users", user(1))]
    assert run_target(config, live, tmp_path=tmp_path).returncode == 0
    deleted = [schema("users", TAP_USER_SCHEMA, ["id"]), record("users", deleted_user(1))]
    assert run_target(config, deleted, tmp_path=tmp_path).returncode == 0
    assert sandbox.deletions("users") == ["1"]
    sandbox.run_deletions()
    assert "1" not in sandbox.profiles("users")

    # The same row again: the ledger no longer says Userpilot holds it, so it is sent.
    again = run_target(config, live, tmp_path=tmp_path)

    assert again.returncode == 0, again.stderr[-3000:]
    assert again.summary["total"]["unchanged"] == 0
    assert "1" in sandbox.profiles("users")


#: A flag as sources hold it -> deleted (True), live (False) or neither (None: rejected).
FLAGS = [
    (True, True),
    (1, True),  # tap-mysql TINYINT
    ("1", True),
    ("true", True),
    (False, False),
    (0, False),
    ("0", False),
    ("false", False),
    (None, False),
    ("yes", None),
    ("", None),
    (2, None),
]


def test_a_source_is_deleted_column_becomes_a_deletion_through_stream_maps(
    tmp_path: Path, run_target: RunTarget
) -> None:
    """The README's recipe: a stream map converts the source's own flag, in every form."""
    out = tmp_path / "batches"
    rejects = tmp_path / "rejects.ndjson"
    recipe = readme_recipe("Delete profiles a source marks with its own column")
    config = {"dry_run": True, "output_dir": str(out), "rejects_path": str(rejects), **recipe}
    assert config["hard_delete"] is True
    properties = {
        "id": {"type": "integer"},
        "plan": {"type": ["string", "null"]},
        "is_deleted": {"type": ["boolean", "integer", "string", "null"]},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
    }
    at = "2026-11-02T08:15:00Z"
    messages = [schema("accounts", properties, ["id"])]
    for i, (flag, _) in enumerate(FLAGS, start=1):
        messages.append(
            record("accounts", {"id": i, "plan": "pro", "is_deleted": flag, "updated_at": at})
        )
    messages.append(  # deleted without an updated_at: still a deletion
        record("accounts", {"id": 99, "plan": "pro", "is_deleted": 1, "updated_at": None})
    )

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    deleted = [str(i) for i, (_, d) in enumerate(FLAGS, start=1) if d is True] + ["99"]
    bodies = [json.loads(path.read_bytes()) for path in sorted(out.glob("users-delete-*.json"))]
    assert [i for body in bodies for i in body["users"]] == deleted
    rows = [json.loads(line) for line in (out / "users-1.ndjson").read_bytes().splitlines()]
    live = [str(i) for i, (_, d) in enumerate(FLAGS, start=1) if d is False]
    assert [row["user_id"] for row in rows] == live
    assert rows[0] == {"user_id": live[0], "metadata": {"plan": "pro", "updated_at": at}}
    refused = [i for i, (_, d) in enumerate(FLAGS, start=1) if d is None]
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [entry["record"]["id"] for entry in kept] == refused


def test_the_readme_conversion_of_empty_csv_cells_makes_them_live(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """A CSV's empty _sdc_deleted_at cell is no date-time; the README's one-liner makes it null."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    expression = re.search(r'`\{"_sdc_deleted_at": "(None if [^`]*)"\}`', readme)
    assert expression, "README lost the conversion of empty CSV cells"
    config |= {
        "hard_delete": True,
        "stream_maps": {"people": {"_sdc_deleted_at": expression[1]}},
    }
    sandbox.set_limits(delete_interval=0)
    properties = {"id": {"type": "string"}, "_sdc_deleted_at": {"type": "string"}}
    messages = [  # tap-csv: every cell a string
        schema("people", properties, ["id"]),
        record("people", {"id": "1", "_sdc_deleted_at": ""}),
        record("people", {"id": "2", "_sdc_deleted_at": DELETED_AT}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1"}
    assert sandbox.deletions("users") == ["2"]


def test_an_undeclared_deletion_mark_is_read_with_add_record_metadata(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_limits(delete_interval=0)
    config |= {"hard_delete": True, "add_record_metadata": True}
    messages = [  # USER_SCHEMA does not declare _sdc_deleted_at
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        record("users", {"id": 2, "_sdc_deleted_at": DELETED_AT}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.deletions("users") == ["2"]
    assert set(sandbox.profiles("users")) == {"1"}
    assert not any(k.startswith("_sdc") for k in sandbox.profiles("users")["1"]["metadata"])


@pytest.mark.parametrize("hard_delete", [True, False])
def test_an_undeclared_deletion_mark_is_honoured_without_add_record_metadata(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    hard_delete: bool,
    run_target: RunTarget,
) -> None:
    """A tap that sends _sdc_deleted_at without declaring it: the row is never upserted."""
    sandbox.set_limits(delete_interval=0)
    config |= {"hard_delete": hard_delete}
    messages = [  # USER_SCHEMA does not declare _sdc_deleted_at
        schema("users", USER_SCHEMA, ["id"]),
        record("users", {**user(1), "_sdc_deleted_at": None}),
        record("users", {"id": 2, "_sdc_deleted_at": DELETED_AT}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1"}
    assert sandbox.deletions("users") == (["2"] if hard_delete else [])
    users = run.summary["streams"]["users"]
    assert (users["deleted"], users["deleted_ignored"]) == ((1, 0) if hard_delete else (0, 1))


# The lane itself, with the real client over loopback HTTP


def _lane(sandbox: Sandbox, written: list[Any], **kwargs: Any) -> tuple[DeletionLane, Checkpoints]:
    client = UserpilotClient(sandbox.url, API_KEY)
    checkpoints = Checkpoints(write=written.append)
    return DeletionLane(client, checkpoints, RunSummary(), interval=0.2, **kwargs), checkpoints


def test_a_413_halves_the_ids_per_request_and_the_size_that_worked_is_kept(
    deletion_paced_sandbox: Sandbox,
) -> None:
    deletion_paced_sandbox.set_limits(max_delete_ids=3)
    lane, checkpoints = _lane(deletion_paced_sandbox, [])
    try:
        lane.add("users", "users", "warm-up", checkpoints.record())
        eventually(lambda: deletion_paced_sandbox.deletions("users"), what="the first request")
        # The pace now holds the next request for 0.2 s: these eight gather into one.
        ids = [f"u-{i}" for i in range(8)]
        for row_id in ids:
            lane.add("users", "users", row_id, checkpoints.record())
        lane.wait_idle()
        assert lane.size == 2  # 8 refused, 4 refused, 2 accepted
        later = [f"v-{i}" for i in range(5)]
        for row_id in later:
            lane.add("users", "users", row_id, checkpoints.record())
        lane.wait_idle()
    finally:
        lane.close()

    assert deletion_paced_sandbox.deletions("users") == ["warm-up", *ids, *later]
    statuses = [call["status"] for call in _delete_calls(deletion_paced_sandbox)]
    assert statuses.count(413) == 2
    # Once a size worked, no request was refused again.
    assert 413 not in statuses[statuses.index(202, statuses.index(413)) :]
    assert deletion_paced_sandbox.stats()["by_endpoint"]["delete"]["rate_limited"] == 0


def test_skip_unchanged_forgets_deleted_rows_once_per_request_before_it_is_sent(
    deletion_paced_sandbox: Sandbox,
) -> None:
    """Each record's deletion marks its profile at once (no ledger I/O on the reading thread);
    the ledger forgets the request's ids in one call, before the request goes out."""
    calls: list[tuple[str, list[str], list[str]]] = []

    def mark(object: str, ids: Iterable[str]) -> None:
        calls.append(("mark", list(ids), deletion_paced_sandbox.deletions(object)))

    def forget(object: str, ids: Iterable[str]) -> None:
        calls.append(("forget", list(ids), deletion_paced_sandbox.deletions(object)))

    lane, checkpoints = _lane(deletion_paced_sandbox, [], mark_deleted=mark, forget=forget)
    try:
        lane.add("users", "users", "warm-up", checkpoints.record())
        eventually(lambda: deletion_paced_sandbox.deletions("users"), what="the first request")
        for row_id in ("u-1", "u-2", "u-3"):  # within the pace's 0.2 s: one request
            lane.add("users", "users", row_id, checkpoints.record())
        lane.wait_idle()
    finally:
        lane.close()

    assert [c[:2] for c in calls if c[0] == "mark"] == [
        ("mark", ["warm-up"]),
        ("mark", ["u-1"]),
        ("mark", ["u-2"]),
        ("mark", ["u-3"]),
    ]
    # Forgotten before Userpilot was asked: nothing of the request deleted yet at that moment.
    assert [c for c in calls if c[0] == "forget"] == [
        ("forget", ["warm-up"], []),
        ("forget", ["u-1", "u-2", "u-3"], ["warm-up"]),
    ]
    assert deletion_paced_sandbox.deletions("users") == ["warm-up", "u-1", "u-2", "u-3"]


def test_state_is_written_only_after_userpilot_accepted_the_deletion(
    deletion_paced_sandbox: Sandbox,
) -> None:
    written: list[Any] = []
    client = UserpilotClient(deletion_paced_sandbox.url, API_KEY)
    # Each STATE notes what Userpilot had scheduled at the moment it was written.
    checkpoints = Checkpoints(
        write=lambda value: written.append((value, deletion_paced_sandbox.deletions("users")))
    )
    lane = DeletionLane(client, checkpoints, RunSummary(), interval=0.2)
    deletion_paced_sandbox.answer_next("delete", 503, times=2)
    try:
        lane.add("users", "users", "u-1", checkpoints.record())
        checkpoints.add_state({"after": "u-1"})
        eventually(
            lambda: [c for c in _delete_calls(deletion_paced_sandbox) if c["status"] == 503],
            what="a refused deletion request",
        )
        assert written == []  # refused so far: STATE waits
        lane.wait_idle()
    finally:
        lane.close()

    assert written == [({"after": "u-1"}, ["u-1"])]


def test_a_delete_supersedes_the_earlier_rows_of_its_id_in_an_open_batch(tmp_path: Path) -> None:
    batch = BatchFile("users", "users", max_rows=100, max_bytes=10_000, spool_dir=str(tmp_path))
    rows: list[dict[str, Any]] = [
        {"user_id": "1", "metadata": {"plan": "free"}},
        {"user_id": "2", "metadata": {"plan": "pro"}},
        {"user_id": "1", "metadata": {"plan": "pro"}},
    ]
    for row in rows:
        batch.add(row["user_id"], encode_row(row))
    assert batch.supersede("1") is True
    assert batch.supersede("9") is False
    batch.add("1", encode_row({"user_id": "1", "metadata": {"name": "new"}}))

    sealed = batch.seal()

    lines = [json.loads(line) for line in sealed.read_lines()]
    assert lines == [
        {"user_id": "2", "metadata": {"plan": "pro"}},
        {"user_id": "1", "metadata": {"name": "new"}},
    ]
    assert sealed.rows == 2
    sealed.discard()
