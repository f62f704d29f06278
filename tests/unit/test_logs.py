"""Logs in the ecosystem's forms, the rules alone: when the JSON mode is on, the METRIC points
(request metrics tagged as the SDK tags them, endpoints by their template, record counts at the
SDK's interval) and ``metrics_log_level``.

The real target with JSON logging turned on: ``tests/integration/test_logs_in_a_run.py``; as a
process: ``tests/e2e/test_logs_process.py``.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
from singer_sdk import metrics
from singer_sdk.logging import StructuredFormatter

from target_userpilot import logs
from target_userpilot.errors import ConfigurationError
from target_userpilot.settings import Settings
from target_userpilot.target import TargetUserpilot
from target_userpilot.userpilot.transport import endpoint_of

from support.logs import capture_metrics
from support.messages import (
    encode_messages,
    users_messages,
)

# JSON logs, line by line


def test_the_json_mode_is_told_from_the_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("target_userpilot.test_logs")
    plain = logging.StreamHandler(sys.stderr)
    structured = logging.StreamHandler(sys.stderr)
    structured.setFormatter(StructuredFormatter())
    to_stdout = logging.StreamHandler(sys.stdout)
    to_stdout.setFormatter(StructuredFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [plain])
    assert not logs.json_stderr(logger)
    monkeypatch.setattr(root, "handlers", [to_stdout])
    assert not logs.json_stderr(logger)  # the prefixed line goes to stderr, which is plain
    monkeypatch.setattr(root, "handlers", [structured])
    assert logs.json_stderr(logger)


def test_request_metrics_tag_failures_as_the_sdk_does() -> None:
    seen = capture_metrics()
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
def test_an_endpoint_is_named_by_its_template_never_its_job(path: str, endpoint: str) -> None:
    assert endpoint_of(path) == endpoint


def test_metrics_log_level_takes_a_level_name_in_any_case() -> None:
    settings = Settings.from_config({"dry_run": True, "metrics_log_level": "Warning"})
    assert settings.metrics_log_level == "Warning"
    with pytest.raises(ConfigurationError, match="metrics_log_level is 'loud'"):
        Settings.from_config({"dry_run": True, "metrics_log_level": "loud"})


def test_record_counts_follow_the_sdks_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point at most every 60 s while records arrive (the SDK's counter), then one at the end."""
    now = [1_000.0]
    monkeypatch.setattr(metrics, "time", lambda: now[0])
    target = TargetUserpilot(config={"dry_run": True, "output_dir": str(tmp_path / "out")})
    seen = capture_metrics()
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
