"""Logs in the ecosystem's forms: the SDK's JSON logs line by line, and its METRIC records.

The real target runs with JSON logging turned on as a user turns it on: ``SINGER_SDK_LOG_CONFIG``
naming the README's logging config, whose handler formats with the SDK's StructuredFormatter
(what Meltano sets up for a loader with the ``structured-logging`` capability, too).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from target_userpilot import logs
from target_userpilot.errors import TransientError
from target_userpilot.sandbox import Sandbox
from target_userpilot.userpilot.client import UserpilotClient

from support.logs import (
    json_env,
    json_records,
    metric_records,
    plain_metrics,
    summary_records,
)
from support.messages import (
    API_KEY,
    COMPANY_SCHEMA,
    record,
    schema,
    state,
    user,
    users_messages,
)
from support.readme import section
from support.runner import RunTarget

REPO = Path(__file__).resolve().parents[2]


def _mixed(n_users: int = 6) -> list[dict[str, Any]]:
    """Users (one of them invalid: a WARNING), then companies, then a STATE."""
    messages: list[dict[str, Any]] = list(users_messages(n_users))[:-1]
    messages.append(record("users", {"id": "not-a-number", "email": "x@example.com"}))
    messages.append(schema("companies", COMPANY_SCHEMA, ["company_id"]))
    messages += [record("companies", {"company_id": f"c-{i}", "name": f"C{i}"}) for i in range(3)]
    messages.append(state({"bookmarks": {"done": True}}))
    return messages


# JSON logs, line by line


def test_json_logs_parse_line_by_line_with_the_summary_as_one_record(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(config, _mixed(), tmp_path=tmp_path, env=json_env(tmp_path))

    assert run.returncode == 0, run.stderr[-3000:]
    records = json_records(run.stderr)
    summaries = summary_records(records)
    assert len(summaries) == 1
    summary = summaries[0]["extra"][logs.SUMMARY_FIELD]
    assert summary["total"]["rows_sent"] == len(sandbox.profiles("users")) + len(
        sandbox.profiles("companies")
    )
    assert summary["streams"]["users"]["received"] == 7
    assert summary["streams"]["users"]["rejected"] == 1
    assert summary["streams"]["companies"]["rows_sent"] == 3
    # Its message says it in prose; no table, no prefixed line anywhere.
    message = summaries[0]["message"]
    assert message.startswith("Summary: Stream 'companies' (companies): 3 received, 3 rows sent")
    assert "Stream 'users' (users): 7 received, 6 rows sent, 1 rejected, 1 job." in message
    assert "Sent 9 rows to Userpilot in 2 jobs" in message
    assert "TARGET_USERPILOT_SUMMARY" not in run.stderr
    assert not any(r["message"].startswith("stream  object") for r in records)
    assert any(r["level"] == "warning" and "users" in r["message"] for r in records)
    assert API_KEY not in run.stderr


def test_plain_logs_keep_the_table_and_the_summary_line(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(config, _mixed(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary["streams"]["users"]["rejected"] == 1
    assert "| stream     object" in run.stderr
    assert (
        sum(line.startswith("TARGET_USERPILOT_SUMMARY ") for line in run.stderr.splitlines()) == 1
    )
    assert "Summary: Stream" not in run.stderr


def test_a_failed_run_logs_json_line_by_line_and_counts_what_it_read(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["on_invalid_record"] = "fail"
    run = run_target(config, _mixed(), tmp_path=tmp_path, env=json_env(tmp_path))

    assert run.returncode == 6, run.stderr[-3000:]
    records = json_records(run.stderr)
    [summary] = summary_records(records)
    assert summary["extra"][logs.SUMMARY_FIELD]["streams"]["users"]["received"] == 7
    assert any(r["level"] == "error" and "stopped" in r["message"] for r in records)
    # The SDK writes a stream's record_count only at the end of input; a failed run too.
    assert [(m["tags"]["stream"], m["value"]) for m in metric_records(records, "record_count")] == [
        ("users", 6)
    ]


def test_the_summary_record_is_written_at_any_log_level(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """As the plain TARGET_USERPILOT_SUMMARY line: schedulers read it from a quiet run too."""
    env = json_env(tmp_path)
    quiet = Path(env["SINGER_SDK_LOG_CONFIG"])
    quiet.write_text(quiet.read_text().replace("level: INFO", "level: WARNING"))
    run = run_target(config, users_messages(2), tmp_path=tmp_path, env=env)

    assert run.returncode == 0, run.stderr[-3000:]
    records = json_records(run.stderr)
    [summary] = summary_records(records)
    assert summary["extra"][logs.SUMMARY_FIELD]["total"]["rows_sent"] == 2
    # The target's other INFO lines are gone (METRIC records follow metrics' own level).
    assert [r for r in records if r["level"] == "info" and r["message"] != "METRIC"] == [summary]


# METRIC records


def test_metric_records_count_records_per_stream_and_time_requests_per_endpoint(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(hard_delete=True, state_db=str(tmp_path / "ledger.db"))
    messages = _mixed()
    messages.insert(-1, record("users", user(0, _sdc_deleted_at="2024-05-02T06:00:00Z")))
    run = run_target(config, messages, tmp_path=tmp_path, env=json_env(tmp_path))

    assert run.returncode == 0, run.stderr[-3000:]
    records = json_records(run.stderr)
    counts = metric_records(records, "record_count")
    assert {m["tags"]["stream"]: m["value"] for m in counts} == {"users": 8, "companies": 3}
    assert all(set(m["tags"]) == {"stream", "pid"} and m["type"] == "counter" for m in counts)
    timers = metric_records(records, "http_request_duration")
    assert {(m["tags"]["method"], m["tags"]["endpoint"]) for m in timers} == {
        ("POST", "/v1/users/bulk_identify"),
        ("POST", "/v1/companies/bulk_identify"),
        ("GET", "/v1/background_jobs/{id}"),
        ("DELETE", "/v1/users"),
    }
    assert len(timers) == len(sandbox.request_log())  # every request, once
    for timer in timers:
        assert set(timer["tags"]) == {"endpoint", "method", "http_status_code", "status"}
        assert timer["tags"]["status"] == "succeeded"
        assert timer["tags"]["http_status_code"] in (200, 202)
        assert timer["type"] == "timer" and timer["value"] >= 0
    # Tags name endpoints, never a job, a key or a profile.
    shown = json.dumps([r for r in records if r["message"] == "METRIC"])
    for job in sandbox.jobs():
        assert job["job_id"] not in shown
    assert API_KEY not in shown
    assert '"0"' not in shown  # the deleted profile's id


def test_a_failed_request_and_one_without_an_answer_are_timed_as_failed(sandbox: Sandbox) -> None:
    seen: list[tuple[str, str, int | None]] = []

    def observe(method: str, endpoint: str, status: int | None, seconds: float) -> None:
        assert seconds >= 0
        seen.append((method, endpoint, status))

    sandbox.answer_next("list", 503)
    client = UserpilotClient(sandbox.url, API_KEY, observe=observe)
    with pytest.raises(TransientError):
        client.transport.request("GET", "/v1/background_jobs")
    client.transport.request("GET", "/v1/background_jobs")
    refused = UserpilotClient("http://127.0.0.1:9", API_KEY, observe=observe)
    with pytest.raises(TransientError):
        refused.transport.request("GET", "/v1/background_jobs")
    client.close()
    refused.close()

    assert seen == [
        ("GET", "/v1/background_jobs", 503),
        ("GET", "/v1/background_jobs", 200),
        ("GET", "/v1/background_jobs", None),
    ]


def test_metrics_log_level_warning_turns_metric_records_off(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["metrics_log_level"] = "warning"
    run = run_target(config, users_messages(3), tmp_path=tmp_path, env=json_env(tmp_path))

    assert run.returncode == 0, run.stderr[-3000:]
    records = json_records(run.stderr)
    assert not [r for r in records if r["message"] == "METRIC"]
    assert summary_records(records)  # every other INFO line stays
    assert len(sandbox.profiles("users")) == 3


def test_the_target_log_level_governs_metrics_unless_metrics_log_level_is_set(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    quiet = run_target(
        config, users_messages(2), tmp_path=tmp_path, env={"TARGET_USERPILOT_LOGLEVEL": "WARNING"}
    )
    config["metrics_log_level"] = "INFO"
    only_metrics = run_target(
        config, users_messages(2), tmp_path=tmp_path, env={"TARGET_USERPILOT_LOGLEVEL": "WARNING"}
    )

    assert quiet.returncode == only_metrics.returncode == 0
    assert "METRIC" not in quiet.stderr
    assert plain_metrics(only_metrics.stderr, "record_count")
    assert "Uploaded" not in only_metrics.stderr  # the target's own INFO lines stay off


def test_the_readme_filter_leaves_out_track_metrics_only(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    filters = re.search(r"```yaml\n(filters:\n.*?)```", section("Logs and metrics"), re.S)
    assert filters, "the README's MetricExclusionFilter example is missing"
    sandbox.set_limits(track_requires_user=False)
    messages = [
        schema("events", {"user_id": {"type": "string"}, "event_name": {"type": "string"}}),
        *[record("events", {"user_id": f"u{i}", "event_name": "paid"}) for i in range(3)],
        state({"done": True}),
    ]
    config["state_db"] = str(tmp_path / "ledger.db")
    run = run_target(config, messages, tmp_path=tmp_path, env=json_env(tmp_path, filters[1]))

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.events()) == 3
    records = json_records(run.stderr)
    assert not [
        m
        for m in metric_records(records, "http_request_duration")
        if m["tags"]["endpoint"] == "/v1/track"
    ]
    assert metric_records(records, "record_count")


# The README's example
