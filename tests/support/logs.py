"""Reading the target's logs: the README's JSON logging config, stderr as JSON records, the
summary record, METRIC points (from JSON records, plain lines, or captured in process)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import metrics

from target_userpilot import logs

from support.readme import section

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override


def readme_log_config() -> str:
    """The README's logging config (the YAML block that starts ``# logging.yml``)."""
    block = re.search(r"```yaml\n(# logging\.yml\n.*?)```", section("Logs and metrics"), re.S)
    assert block, "the README's logging.yml is missing"
    return block[1]


def json_env(tmp_path: Path, extra: str = "") -> dict[str, str]:
    """The environment of a run with the README's JSON logging (plus ``extra`` YAML)."""
    path = tmp_path / "logging.yml"
    path.write_text(readme_log_config() + extra, encoding="utf-8")
    return {"SINGER_SDK_LOG_CONFIG": str(path)}


def json_records(stderr: str) -> list[dict[str, Any]]:
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


def summary_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if logs.SUMMARY_FIELD in r.get("extra", {})]


def metric_records(records: Iterable[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [
        r["metric_info"]
        for r in records
        if r.get("message") == "METRIC" and r["metric_info"]["metric"] == metric
    ]


def plain_metrics(stderr: str, metric: str) -> list[dict[str, Any]]:
    """The METRIC points of plain log lines (``... | METRIC: {json}``)."""
    points = [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in stderr.splitlines()
        if "| METRIC: " in line
    ]
    return [p for p in points if p["metric"] == metric]


class Points(logging.Handler):
    """The metric points logged while it is attached to the metrics logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.points: list[metrics.Point[Any]] = []
        self._lock2 = threading.Lock()

    @override
    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and isinstance(record.args[0], metrics.Point):
            with self._lock2:
                self.points.append(record.args[0])


def capture_metrics() -> Points:
    handler = Points()
    logger = logging.getLogger(metrics.METRICS_LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
