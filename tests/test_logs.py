"""Logs in the ecosystem's forms: the SDK's JSON logs line by line, and its METRIC records.

The real target runs with JSON logging turned on as a user turns it on: ``SINGER_SDK_LOG_CONFIG``
naming the README's logging config, whose handler formats with the SDK's StructuredFormatter
(what Meltano sets up for a loader with the ``structured-logging`` capability, too).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    API_KEY,
    COMPANY_SCHEMA,
    encode_messages,
    record,
    run_target,
    schema,
    state,
    user,
    users_messages,
)
from singer_sdk import metrics

from target_userpilot import logs
from target_userpilot.errors import ConfigurationError, TransientError
from target_userpilot.sandbox import Sandbox
from target_userpilot.settings import Settings
from target_userpilot.target import TargetUserpilot
from target_userpilot.userpilot.client import UserpilotClient
from target_userpilot.userpilot.transport import endpoint_of

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section() -> str:
    start = README.index("\n## Logs and metrics\n")
    return README[start : README.index("\n## ", start + 1)]


def _readme_log_config() -> str:
    """The README's logging config (the YAML block that starts ``# logging.yml``)."""
    block = re.search(r"```yaml\n(# logging\.yml\n.*?)```", _section(), re.S)
    assert block, "the README's logging.yml is missing"
    return block[1]


def _json_env(tmp_path: Path, extra: str = "") -> dict[str, str]:
    """The environment of a run with the README's JSON logging (plus ``extra`` YAML)."""
    path = tmp_path / "logging.yml"
    path.write_text(_readme_log_config() + extra, encoding="utf-8")
    return {"SINGER_SDK_LOG_CONFIG": str(path)}


def _records(stderr: str) -> list[dict[str, Any]]:
    """Every line of stderr as a JSON object; fails on the first line that is not one."""
    records = []
    for number, line in enumerate(stderr.splitlines(), start=1):
        try:
            parsed = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line {number} is not JSON: {line[:300]!r}")
        assert isinstance(parsed, dict), f"stderr line {number} is not a JSON object: {line}"
        records.append(parsed)
    assert records, "stderr is empty"
    return records


def _summary_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if logs.SUMMARY_FIELD in r.get("extra", {})]


def _metrics(records: Iterable[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [
        r["metric_info"]
        for r in records
        if r.get("message") == "METRIC" and r["metric_info"]["metric"] == metric
    ]


def _plain_metrics(stderr: str, metric: str) -> list[dict[str, Any]]:
    """The METRIC points of plain log lines (``... | METRIC: {json}``)."""
    points = [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in stderr.splitlines()
        if "| METRIC: " in line
    ]
    return [p for p in points if p["metric"] == metric]


def _mixed(n_users: int = 6) -> list[dict[str, Any]]:
    """Users (one of them invalid: a WARNING), then companies, then a STATE."""
    messages: list[dict[str, Any]] = list(users_messages(n_users))[:-1]
    messages.append(record("users", {"id": "not-a-number", "email": "x@example.com"}))
    messages.append(schema("companies", COMPANY_SCHEMA, ["company_id"]))
    messages += [record("companies", {"company_id": f"c-{i}", "name": f"C{i}"}) for i in range(3)]
    messages.append(state({"bookmarks": {"done": True}}))
    return messages


# JSON logs, line by line


def test_json_logs_parse_line_by_line_with_the_summary_as_one_record(sandbox, config, tmp_path):
    run = run_target(config, _mixed(), tmp_path=tmp_path, env=_json_env(tmp_path))

    assert run.returncode == 0, run.stderr[-3000:]
    records = _records(run.stderr)
    summaries = _summary_records(records)
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


def test_plain_logs_keep_the_table_and_the_summary_line(sandbox, config, tmp_path):
    run = run_target(config, _mixed(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary["streams"]["users"]["rejected"] == 1
    assert "| stream     object" in run.stderr
    assert (
        sum(line.startswith("TARGET_USERPILOT_SUMMARY ") for line in run.stderr.splitlines()) == 1
    )
    assert "Summary: Stream" not in run.stderr


def test_a_failed_run_logs_json_line_by_line_and_counts_what_it_read(sandbox, config, tmp_path):
    config["on_invalid_record"] = "fail"
    run = run_target(config, _mixed(), tmp_path=tmp_path, env=_json_env(tmp_path))

    assert run.returncode == 6, run.stderr[-3000:]
    records = _records(run.stderr)
    [summary] = _summary_records(records)
    assert summary["extra"][logs.SUMMARY_FIELD]["streams"]["users"]["received"] == 7
    assert any(r["level"] == "error" and "stopped" in r["message"] for r in records)
    # The SDK writes a stream's record_count only at the end of input; a failed run too.
    assert [(m["tags"]["stream"], m["value"]) for m in _metrics(records, "record_count")] == [
        ("users", 6)
    ]


def test_an_unexpected_error_is_one_json_record_without_hidden_context(tmp_path):
    """What Python would print as a traceback of plain lines is one CRITICAL record."""
    script = tmp_path / "bug.py"
    script.write_text(
        "import logging, sys\n"
        "from singer_sdk._logging import _setup_console_logging\n"
        "from target_userpilot import logs\n"
        "_setup_console_logging()\n"
        "logs.structure_stray_output(logging.getLogger('target-userpilot'))\n"
        "import warnings; warnings.warn('an old API')\n"
        "try:\n"
        "    try:\n"
        "        raise ValueError('Token secret-in-logged-context')\n"
        "    except ValueError:\n"
        "        raise RuntimeError('caught') from None\n"
        "except RuntimeError:\n"
        "    logging.getLogger('target_userpilot').error('logged', exc_info=True)\n"
        "try:\n"
        "    raise ValueError('Token secret-in-context')\n"
        "except ValueError:\n"
        "    raise KeyError('the bug') from None\n",
        encoding="utf-8",
    )
    env = {**os.environ, **_json_env(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, check=False
    )

    assert done.returncode == 1
    records = _records(done.stderr)
    assert [r["level"] for r in records] == ["warning", "error", "critical"]
    assert records[1]["exception"]["type"] == "RuntimeError"
    assert records[2]["exception"]["type"] == "KeyError"
    assert "secret-in" not in done.stderr  # `from None` hid them: they stay hidden


def test_the_summary_record_is_written_at_any_log_level(sandbox, config, tmp_path):
    """As the plain TARGET_USERPILOT_SUMMARY line: schedulers read it from a quiet run too."""
    env = _json_env(tmp_path)
    quiet = Path(env["SINGER_SDK_LOG_CONFIG"])
    quiet.write_text(quiet.read_text().replace("level: INFO", "level: WARNING"))
    run = run_target(config, users_messages(2), tmp_path=tmp_path, env=env)

    assert run.returncode == 0, run.stderr[-3000:]
    records = _records(run.stderr)
    [summary] = _summary_records(records)
    assert summary["extra"][logs.SUMMARY_FIELD]["total"]["rows_sent"] == 2
    # The target's other INFO lines are gone (METRIC records follow metrics' own level).
    assert [r for r in records if r["level"] == "info" and r["message"] != "METRIC"] == [summary]


def test_the_json_mode_is_told_from_the_handlers(monkeypatch):
    logger = logging.getLogger("target_userpilot.test_logs")
    plain = logging.StreamHandler(sys.stderr)
    structured = logging.StreamHandler(sys.stderr)
    structured.setFormatter(logs.StructuredFormatter())
    to_stdout = logging.StreamHandler(sys.stdout)
    to_stdout.setFormatter(logs.StructuredFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [plain])
    assert not logs.json_stderr(logger)
    monkeypatch.setattr(root, "handlers", [to_stdout])
    assert not logs.json_stderr(logger)  # the prefixed line goes to stderr, which is plain
    monkeypatch.setattr(root, "handlers", [structured])
    assert logs.json_stderr(logger)


# METRIC records


class _Points(logging.Handler):
    """The metric points logged while it is attached to the metrics logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.points: list[metrics.Point[Any]] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and isinstance(record.args[0], metrics.Point):
            with self._lock2:
                self.points.append(record.args[0])


def _capture_metrics() -> _Points:
    handler = _Points()
    logger = logging.getLogger(metrics.METRICS_LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def test_metric_records_count_records_per_stream_and_time_requests_per_endpoint(
    sandbox, config, tmp_path
):
    config.update(hard_delete=True, state_db=str(tmp_path / "ledger.db"))
    messages = _mixed()
    messages.insert(-1, record("users", user(0, _sdc_deleted_at="2024-05-02T06:00:00Z")))
    run = run_target(config, messages, tmp_path=tmp_path, env=_json_env(tmp_path))

    assert run.returncode == 0, run.stderr[-3000:]
    records = _records(run.stderr)
    counts = _metrics(records, "record_count")
    assert {m["tags"]["stream"]: m["value"] for m in counts} == {"users": 8, "companies": 3}
    assert all(set(m["tags"]) == {"stream", "pid"} and m["type"] == "counter" for m in counts)
    timers = _metrics(records, "http_request_duration")
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


def test_a_failed_request_and_one_without_an_answer_are_timed_as_failed(sandbox):
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


def test_request_metrics_tag_failures_as_the_sdk_does():
    seen = _capture_metrics()
    try:
        logs.request_duration("GET", "/v1/background_jobs/{id}", 503, 0.25)
        logs.request_duration("POST", "/v1/track", None, 1.5)
        logs.request_duration("POST", "/v1/users/bulk_identify", 202, 0.1)
    finally:
        logging.getLogger(metrics.METRICS_LOGGER_NAME).removeHandler(seen)

    assert [p.to_dict() for p in seen.points] == [
        {
            "type": "timer",
            "metric": "http_request_duration",
            "value": 0.25,
            "tags": {
                "endpoint": "/v1/background_jobs/{id}",
                "method": "GET",
                "http_status_code": 503,
                "status": "failed",
            },
        },
        {
            "type": "timer",
            "metric": "http_request_duration",
            "value": 1.5,
            "tags": {
                "endpoint": "/v1/track",
                "method": "POST",
                "http_status_code": None,
                "status": "failed",
            },
        },
        {
            "type": "timer",
            "metric": "http_request_duration",
            "value": 0.1,
            "tags": {
                "endpoint": "/v1/users/bulk_identify",
                "method": "POST",
                "http_status_code": 202,
                "status": "succeeded",
            },
        },
    ]


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v1/background_jobs/bulk%3Ajobs%3ANX-1%3Aabc", "/v1/background_jobs/{id}"),
        ("/v1/imports/4f0c2a", "/v1/imports/{id}"),
        ("/v1/background_jobs", "/v1/background_jobs"),
        ("/v1/imports", "/v1/imports"),
        ("/v1/users/bulk_identify", "/v1/users/bulk_identify"),
        ("/v1/companies", "/v1/companies"),
        ("/v1/track", "/v1/track"),
    ],
)
def test_an_endpoint_is_named_by_its_template_never_its_job(path, endpoint):
    assert endpoint_of(path) == endpoint


def test_metrics_log_level_warning_turns_metric_records_off(sandbox, config, tmp_path):
    config["metrics_log_level"] = "warning"
    run = run_target(config, users_messages(3), tmp_path=tmp_path, env=_json_env(tmp_path))

    assert run.returncode == 0, run.stderr[-3000:]
    records = _records(run.stderr)
    assert not [r for r in records if r["message"] == "METRIC"]
    assert _summary_records(records)  # every other INFO line stays
    assert len(sandbox.profiles("users")) == 3


def test_the_target_log_level_governs_metrics_unless_metrics_log_level_is_set(
    sandbox, config, tmp_path
):
    quiet = run_target(
        config, users_messages(2), tmp_path=tmp_path, env={"TARGET_USERPILOT_LOGLEVEL": "WARNING"}
    )
    config["metrics_log_level"] = "INFO"
    only_metrics = run_target(
        config, users_messages(2), tmp_path=tmp_path, env={"TARGET_USERPILOT_LOGLEVEL": "WARNING"}
    )

    assert quiet.returncode == only_metrics.returncode == 0
    assert "METRIC" not in quiet.stderr
    assert _plain_metrics(only_metrics.stderr, "record_count")
    assert "Uploaded" not in only_metrics.stderr  # the target's own INFO lines stay off


def test_the_readme_filter_leaves_out_track_metrics_only(sandbox, config, tmp_path):
    filters = re.search(r"```yaml\n(filters:\n.*?)```", _section(), re.S)
    assert filters, "the README's MetricExclusionFilter example is missing"
    sandbox.set_limits(track_requires_user=False)
    messages = [
        schema("events", {"user_id": {"type": "string"}, "event_name": {"type": "string"}}),
        *[record("events", {"user_id": f"u{i}", "event_name": "paid"}) for i in range(3)],
        state({"done": True}),
    ]
    config["state_db"] = str(tmp_path / "ledger.db")
    run = run_target(config, messages, tmp_path=tmp_path, env=_json_env(tmp_path, filters[1]))

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.events()) == 3
    records = _records(run.stderr)
    assert not [
        m
        for m in _metrics(records, "http_request_duration")
        if m["tags"]["endpoint"] == "/v1/track"
    ]
    assert _metrics(records, "record_count")


def test_metrics_log_level_takes_a_level_name_in_any_case():
    assert Settings.from_config({"dry_run": True, "metrics_log_level": "Warning"})
    with pytest.raises(ConfigurationError, match="metrics_log_level is 'loud'"):
        Settings.from_config({"dry_run": True, "metrics_log_level": "loud"})


def test_record_counts_follow_the_sdks_interval(tmp_path, monkeypatch):
    """A point at most every 60 s while records arrive (the SDK's counter), then one at the end."""
    now = [1_000.0]
    monkeypatch.setattr(metrics, "time", lambda: now[0])
    target = TargetUserpilot(config={"dry_run": True, "output_dir": str(tmp_path / "out")})
    seen = _capture_metrics()
    lines = encode_messages(users_messages(10)).decode().splitlines(keepends=True)
    try:
        target.process_lines(io.StringIO(lines[0]))  # the SCHEMA
        for line in lines[1:11]:
            now[0] += 25.0  # a slow tap: a record every 25 s
            target.process_lines(io.StringIO(line))
        target.process_lines(io.StringIO("".join(lines[11:])))
        target.process_endofpipe()
    finally:
        logging.getLogger(metrics.METRICS_LOGGER_NAME).removeHandler(seen)
        target.run.close()

    counts = [p.value for p in seen.points if p.metric == metrics.Metric.RECORD_COUNT]
    assert sum(counts) == 10
    assert counts == [3, 3, 3, 1]  # 75 s, 75 s, 75 s, then the end of input


# The README's example


def test_the_readme_json_logs_example_prints_what_it_shows(tmp_path):
    jq = shutil.which("jq")
    if jq is None:
        if os.environ.get("CI"):
            pytest.fail("jq is not installed: the README's example needs it")
        pytest.skip("jq is not installed")
    section = _section()
    commands = re.search(
        r"```sh\n(SINGER_SDK_LOG_CONFIG=.*?)```\n\n```text\n(.*?)```", section, re.S
    )
    assert commands, "the README's JSON logs example is missing"
    lines = commands[1].replace("\\\n", "").splitlines()
    run_line, jq_lines = lines[0], lines[1:]
    assert run_line.split() == [
        "SINGER_SDK_LOG_CONFIG=logging.yml",
        "target-userpilot",
        "--config",
        "examples/config.sandbox.json",
        "<",
        "examples/users_and_companies.singer.jsonl",
        ">",
        "state.jsonl",
        "2>",
        "log.jsonl",
    ]
    assert all(line.startswith("jq ") for line in jq_lines)
    (tmp_path / "logging.yml").write_text(_readme_log_config(), encoding="utf-8")
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "users_and_companies.singer.jsonl", tmp_path / "examples")
    example_config = json.loads((REPO / "examples" / "config.sandbox.json").read_text())

    # The README's sandbox: `userpilot-sandbox --rows-per-minute 0`, with its default key.
    with Sandbox(port=0, api_key=example_config["api_key"], rows_per_minute=0) as sb:
        example_config["api_url"] = sb.url  # a free port instead of 8765: tests run in parallel
        (tmp_path / "examples" / "config.sandbox.json").write_text(json.dumps(example_config))
        target = Path(sys.executable).parent / "target-userpilot"
        done = subprocess.run(
            ["bash", "-c", run_line.replace("target-userpilot", str(target), 1)],
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{target.parent}:{os.environ['PATH']}"},
            check=False,
        )
        assert done.returncode == 0, (tmp_path / "log.jsonl").read_text()[-3000:]

    _records((tmp_path / "log.jsonl").read_text(encoding="utf-8"))
    shown = []
    for line in jq_lines:
        out = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        shown += out.stdout.splitlines()
    assert shown == commands[2].splitlines()
