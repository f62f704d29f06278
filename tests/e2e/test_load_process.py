"""STATE is written only once its records are in Userpilot, read line by line from the
process's stdout while its jobs are still running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import (
    USER_SCHEMA,
    encode_messages,
    record,
    schema,
    state,
    user,
)


def test_state_is_written_only_once_its_records_are_in_userpilot(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    """Read STATE lines as they appear and check the sandbox at that moment."""
    sandbox.set_rows_per_minute(60_000)  # 500 rows take half a second
    config["batch_size_rows"] = 500
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in range(2500):
        messages.append(record("users", user(i)))
        if (i + 1) % 250 == 0:
            messages.append(state({"last": i}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(encode_messages(messages))
    proc.stdin.close()
    seen = []
    for line in proc.stdout:
        last = json.loads(line)["last"]
        landed = sandbox.profiles("users")
        # Every record before this STATE is in a completed job.
        assert all(str(i) in landed for i in range(last + 1)), last
        seen.append((last, len(sandbox.jobs())))
    assert proc.wait(timeout=60) == 0
    assert seen[-1][0] == 2499
    # Checkpoints came as jobs completed, not all at the end.
    assert len(seen) >= 4
    assert seen[0][1] < 5
