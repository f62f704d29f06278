"""BATCH messages where the target's process is the subject: its memory while it reads a large
file, and a pyarrow made unimportable through PYTHONPATH.

The rest runs in process: ``tests/integration/test_batch_messages.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import (
    USER_SCHEMA,
    batch,
    encode_messages,
    record,
    schema,
    state,
    user,
    write_jsonl,
)
from support.runner import RunTarget, TargetRun, summary_counts

# Memory: a large BATCH file costs what the same records cost as RECORD messages.

N_LARGE = 60_000
#: Runs the target and, on the way out, writes its own peak RSS. VmHWM counts only this program:
#: wait4's ru_maxrss would include the forked copy of the test process before exec.
PEAK_REPORTING_TARGET = """
import atexit, sys

def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"PEAK_RSS_KIB {peak}\\n")

atexit.register(report)
from target_userpilot.target import TargetUserpilot
TargetUserpilot.cli()
"""


def _large_users() -> Iterator[dict[str, Any]]:
    for i in range(N_LARGE):
        yield user(i, tags=["a", "b"], address={"city": f"City {i % 97}"}, score=i / 3)


def _peak_rss_kib(
    config: dict[str, Any], messages: Iterable[dict[str, Any]], tmp_path: Path
) -> tuple[int, TargetRun]:
    """Run the target on ``messages`` and return its peak RSS (KiB) and its result."""
    config_path = tmp_path / "config-rss.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_REPORTING_TARGET, "--config", str(config_path)],
        input=encode_messages(messages),
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    run = TargetRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    peaks = [line.split()[1] for line in run.stderr.splitlines() if line.startswith("PEAK_RSS")]
    assert peaks, run.stderr[-3000:]
    return int(peaks[-1]), run


def test_a_large_batch_file_keeps_memory_at_the_record_path_level(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read a process's peak memory")
    head = [schema("users", USER_SCHEMA, ["id"])]
    tail = [state({"bookmarks": {"users": "done"}})]
    path = write_jsonl(tmp_path / "large.jsonl.gz", _large_users(), compress=True)
    # Only full batches and the end of input seal one: a busy machine reading slower than the
    # lane uploads would otherwise seal a part batch after batch_wait_seconds, in one run only.
    config = {**config, "batch_wait_seconds": 3600}

    record_peak, by_records = _peak_rss_kib(
        config, [*head, *(record("users", r) for r in _large_users()), *tail], tmp_path
    )
    assert by_records.returncode == 0, by_records.stderr[-3000:]
    sandbox.reset()
    batch_peak, by_batch = _peak_rss_kib(
        config, [*head, batch("users", [path.as_uri()], compression="gzip"), *tail], tmp_path
    )

    assert by_batch.returncode == 0, by_batch.stderr[-3000:]
    assert len(sandbox.profiles("users")) == N_LARGE
    assert by_batch.states == [{"bookmarks": {"users": "done"}}]
    assert summary_counts(by_batch) == summary_counts(by_records)
    # The file as a list of records (the SDK's own BATCH handling) would add over 100 MB.
    assert batch_peak < record_peak + 30_000, (batch_peak, record_peak)


# Reading manifest files (no server involved)


def test_parquet_without_pyarrow_names_the_extra_to_install(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target_process: RunTarget
) -> None:
    # A pyarrow that cannot be imported, ahead of any installed one: PYTHONPATH is read when
    # the interpreter starts, so this run is a process of its own.
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pyarrow is not installed')\n")
    path = tmp_path / "users.parquet"
    path.write_bytes(b"PAR1")
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        batch("users", [str(path)], fmt="parquet"),
        state({"bookmarks": {"users": "after"}}),
    ]

    run = run_target_process(
        config, messages, tmp_path=tmp_path, env={"PYTHONPATH": str(shadow.parent)}
    )

    assert run.returncode == 7, run.stderr[-3000:]
    assert f"The BATCH file {path} (parquet, uncompressed) cannot be read" in run.stderr
    assert "pip install 'target-userpilot[parquet]'" in run.stderr
    assert run.states == []
