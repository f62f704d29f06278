"""STATE when its consumer closed stdout: before the run starts, and while it runs (exit 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import (
    encode_messages,
    users_messages,
)

# STATE messages as the target writes them (issue 9 items 13 and 16)


def test_stdout_closed_by_the_consumer_stops_with_exit_11_and_a_sentence(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config_path = tmp_path / "config.json"
    config["batch_size_rows"] = 10
    config_path.write_text(json.dumps(config))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the consumer is gone before the first STATE
    with open(write_end, "wb") as stdout:
        proc = subprocess.run(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            input=encode_messages(users_messages(30, state_every=10)),
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    stderr = proc.stderr.decode()

    assert proc.returncode == 11, stderr[-3000:]
    assert "target-userpilot stopped: STATE could not be written to standard output" in stderr
    assert "Traceback" not in stderr
    assert len(sandbox.profiles("users")) >= 10  # what went up before stays in Userpilot


def test_started_with_stdout_closed_stops_before_reading_input(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [
            "sh",
            "-c",
            'exec "$0" -m target_userpilot --config "$1" >&-',
            sys.executable,
            str(config_path),
        ],
        input=encode_messages(users_messages(5)),
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    stderr = proc.stderr.decode()

    assert proc.returncode == 11, stderr[-3000:]
    assert "STATE could not be written" in stderr
    assert sandbox.profiles("users") == {}
