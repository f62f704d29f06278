"""Mirror deletes across a kill: ids recorded before a STATE survive it, and the copy the tap
resumes deletes only what it lacks.

The rest runs in process: ``tests/integration/test_mirror.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import (
    MIRRORED_STREAM,
    full_table_copy,
    state,
)
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget, TargetProcess


def _deleted(sandbox: Sandbox) -> list[str]:
    return sandbox.deletions("users")


# The taps' real patterns (issue 23): a resumed copy, the opening sent twice, an empty table.


@BOTH_LEDGERS
def test_ids_recorded_before_a_state_survive_a_kill_and_a_resumed_copy(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(100)), tmp_path=tmp_path).returncode == 0
    )
    first_half = full_table_copy(2, range(50), closing=False, final_state=False)
    first_half.append(
        state({"bookmarks": {MIRRORED_STREAM: {"version": 2, "last_pk_fetched": 49}}})
    )
    killed = TargetProcess({**mirror_config, "batch_wait_seconds": 0.2}, tmp_path)
    killed.send(first_half)
    try:
        assert killed.next_state() == first_half[-1]["value"]
    finally:
        killed.kill()  # kill -9 once the STATE is out: a rerun starts from it

    resumed = run_target(mirror_config, full_table_copy(2, range(50, 100)), tmp_path=tmp_path)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _deleted(sandbox) == []
