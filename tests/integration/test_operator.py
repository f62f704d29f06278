"""What an operator watches: progress lines during long jobs, and the end-of-run summary."""

from __future__ import annotations

import io
import json
import logging
import re
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.lanes import jobs as lane
from target_userpilot.sandbox import Sandbox
from target_userpilot.target import TargetUserpilot

from support.messages import (
    API_KEY,
    COMPANY_SCHEMA,
    USER_SCHEMA,
    encode_messages,
    record,
    schema,
    state,
    user,
    users_messages,
)
from support.runner import RunTarget, TargetRun, run_in_process

PROGRESS = re.compile(
    r"Job (?P<job>\S+) \(stream 'users'\): (?P<done>\d+) of (?P<total>\d+) rows done, "
    r"(?P<rate>\d+) rows/min \((?:expected|observed)\), about (?P<eta>\d+) s left\."
)
COMPLETED = re.compile(
    r"Job (?P<job>\S+) completed: (?P<rows>\d+) users rows of stream 'users' "
    r"in (?P<seconds>[\d.]+) s"
)
UPLOADED = re.compile(r"Uploaded \d+ users rows of stream 'users' as job (?P<job>\S+)\.")


def test_progress_is_reported_every_30_seconds_by_default() -> None:
    assert lane.PROGRESS_EVERY_SECONDS == 30


def test_long_jobs_report_progress_with_rate_and_eta_then_their_end(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    interval = 0.5
    rate = 30_000  # rows per minute: each 1,250-row job takes 2.5 s
    # A short interval keeps the test fast; polls far more often than it prove the throttle.
    monkeypatch.setattr(lane, "PROGRESS_EVERY_SECONDS", interval)
    monkeypatch.setattr(lane, "MAX_POLL_INTERVAL", 0.1)
    monkeypatch.setattr(lane, "MIN_POLL_INTERVAL", 0.05)
    caplog.set_level(logging.INFO, logger="target_userpilot")

    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=rate) as sandbox:
        target = TargetUserpilot(
            config={
                "api_url": sandbox.url,
                "api_key": API_KEY,
                "batch_size_rows": 1250,
                "rows_per_minute": rate,
            },
            validate_config=True,
        )
        target.listen(file_input=io.StringIO(encode_messages(users_messages(2500)).decode()))
        jobs = {t["job_id"]: t for t in sandbox.stats()["job_timings"]}

    assert capsys.readouterr().out.strip().splitlines()[-1] == json.dumps(
        {"bookmarks": {"users": 2499, "done": True}}
    )
    assert len(jobs) == 2
    uploaded, progress, completed = {}, defaultdict(list), {}
    for rec in caplog.records:
        message = rec.getMessage()
        if match := UPLOADED.fullmatch(message):
            uploaded[match["job"]] = rec.created
        elif match := PROGRESS.fullmatch(message):
            assert rec.levelno == logging.INFO
            progress[match["job"]].append((rec.created, match))
        elif match := COMPLETED.match(message):
            assert rec.levelno == logging.INFO
            assert match["job"] not in completed, "one end line per job"
            completed[match["job"]] = (rec.created, match)

    assert set(uploaded) == set(progress) == set(completed) == set(jobs)
    for job_id, lines in progress.items():
        assert len(lines) >= 2, lines
        # Never more often than the interval, counted from the upload (small clock slack:
        # log times are wall-clock, the lane's are monotonic).
        times = [uploaded[job_id]] + [created for created, _ in lines]
        gaps = [later - earlier for earlier, later in pairwise(times)]
        assert min(gaps) >= interval - 0.02, gaps
        assert jobs[job_id]["polls"] > 2 * len(lines), "polls outnumber progress lines"
        done = [int(m["done"]) for _, m in lines]
        assert done == sorted(done) and len(set(done)) == len(done)
        for _, m in lines:
            assert int(m["total"]) == 1250
            assert 0 < int(m["done"]) < 1250
            observed = int(m["rate"])
            assert rate * 0.6 <= observed <= rate * 1.6
            expected_eta = (1250 - int(m["done"])) / observed * 60
            assert abs(int(m["eta"]) - expected_eta) <= 1
        end_time, end = completed[job_id]
        assert end_time >= times[-1]
        assert int(end["rows"]) == 1250
        assert 2.0 <= float(end["seconds"]) <= 4.5  # the job takes 2.5 s in the sandbox


# The end-of-run summary


def _summary_input() -> list[dict[str, Any]]:
    """Companies with a duplicate, users (100 unchanged, 50 new, a duplicate, two without a
    usable id) and an ignored stream."""
    return [
        schema("companies", COMPANY_SCHEMA, ["company_id"]),
        record("companies", {"company_id": "c-1", "name": "Acme", "employees": 1}),
        record("companies", {"company_id": "c-2", "name": "Globex", "employees": 2}),
        record("companies", {"company_id": "c-1", "name": "Acme Inc.", "employees": 3}),
        record("companies", {"company_id": "c-3", "name": "Initech", "employees": 4}),
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(150)],
        record("users", user(120, plan="enterprise")),
        record("users", user(998, id=None)),
        record("users", {"email": "no-id@example.com"}),
        schema("audit_log", {"id": {"type": "integer"}}, ["id"]),
        *[record("audit_log", {"id": i}) for i in range(5)],
        state({"bookmarks": {"done": True}}),
    ]


COUNTS = ("received", "rows_sent", "merged", "unchanged", "rejected", "jobs")
EXPECTED: dict[str, dict[str, Any]] = {
    "audit_log": {"object": "ignore", "received": 5, "rows_sent": 0, "merged": 0}
    | {"unchanged": 0, "rejected": 0, "jobs": 0},
    "companies": {"object": "companies", "received": 4, "rows_sent": 3, "merged": 1}
    | {"unchanged": 0, "rejected": 0, "jobs": 1},
    "users": {"object": "users", "received": 153, "rows_sent": 50, "merged": 1}
    | {"unchanged": 100, "rejected": 2, "jobs": 1},
}
TOTAL = {"received": 162, "rows_sent": 53, "merged": 2, "unchanged": 100, "rejected": 2, "jobs": 2}


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory: pytest.TempPathFactory) -> TargetRun:
    """A run whose every counter has something to count: the first 100 users were confirmed
    by an earlier run, so skip_unchanged leaves them out. Shared by the summary tests."""
    tmp_path = tmp_path_factory.mktemp("summary")
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "skip_unchanged": True,
            "state_db": str(tmp_path / "state.db"),
            "object_mapping": {"audit_log": {"object": "ignore"}},
        }
        earlier = [schema("users", USER_SCHEMA, ["id"])]
        earlier += [record("users", user(i)) for i in range(100)]
        assert run_in_process(config, earlier, tmp_path=tmp_path).returncode == 0
        run = run_in_process(config, _summary_input(), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_summary_json_line_has_exact_counts_per_stream_and_in_total(summary_run: TargetRun) -> None:
    summary = summary_run.summary

    assert summary["dry_run"] is False
    assert {
        name: {k: s[k] for k in ("object", *COUNTS)} for name, s in summary["streams"].items()
    } == EXPECTED
    assert {k: summary["total"][k] for k in COUNTS} == TOTAL
    users = summary["streams"]["users"]
    assert 0 < users["seconds"] <= summary["total"]["seconds"]
    assert users["rows_per_minute"] == pytest.approx(50 / users["seconds"] * 60, rel=0.01)
    assert summary["streams"]["audit_log"]["seconds"] == 0
    assert summary["streams"]["audit_log"]["rows_per_minute"] == 0
    assert summary["total"]["rows_per_minute"] == pytest.approx(
        53 / summary["total"]["seconds"] * 60, rel=0.01
    )
    assert summary_run.stderr.count("TARGET_USERPILOT_SUMMARY ") == 1


def _table(stderr: str) -> list[list[str]]:
    """The summary table's rows, cells split on the two-space column gaps."""
    messages = [
        line.split(" | target_userpilot ", 1)[1].split("| ", 1)[1]
        for line in stderr.splitlines()
        if " | target_userpilot " in line
    ]
    start = next(i for i, m in enumerate(messages) if m.startswith("stream "))
    rows = []
    for message in messages[start:]:
        cells = re.split(r" {2,}", message.strip())
        if cells[0] == "TOTAL":
            cells.insert(1, "")
        rows.append(cells)
        if cells[0] == "TOTAL":
            break
    return rows


def test_summary_table_on_stderr_matches_the_json_line(summary_run: TargetRun) -> None:
    rows = _table(summary_run.stderr)

    assert rows[0] == [
        "stream",
        "object",
        "received",
        "rows sent",
        "merged",
        "unchanged",
        "rejected",
        "jobs",
        "time",
        "rows/min",
    ]
    by_name = {row[0]: row for row in rows[1:]}
    assert list(by_name) == ["audit_log", "companies", "users", "TOTAL"]
    summary = summary_run.summary
    for name, expected in [*EXPECTED.items(), ("TOTAL", TOTAL)]:
        row = by_name[name]
        assert [int(cell) for cell in row[2:8]] == [expected[k] for k in COUNTS], row
        data = summary["total"] if name == "TOTAL" else summary["streams"][name]
        assert row[8] == f"{data['seconds']:.1f} s"
        assert row[9] == f"{data['rows_per_minute']:.0f}"
    assert "Sent 53 rows to Userpilot in 2 jobs" in summary_run.stderr


def test_a_failed_run_still_ends_with_its_summary(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["api_key"] = "not-the-key"
    run = run_in_process(config, users_messages(20), tmp_path=tmp_path)

    assert run.returncode == 3
    assert run.summary["total"]["received"] == 20
    assert run.summary["total"]["rows_sent"] == 0
    assert "not-the-key" not in run.stderr
