"""A plan as a process: a signal stops it like a run, and it leaves no plan file behind."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import USER_SCHEMA, record, schema, state, user
from support.runner import TargetProcess
from support.waiting import eventually


def test_a_plan_stopped_by_sigterm_writes_no_plan_and_removes_an_earlier_one(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    """The input stops half way (the tap is still running): the plan would describe part of an
    input, so it writes none, and an earlier file at its path, which describes another, goes."""
    plan_path = tmp_path / "plan.json"
    plan_path.write_text('{"outcome": {"completes": true}}', encoding="utf-8")
    planning = TargetProcess({**config, "plan_path": str(plan_path)}, tmp_path)
    try:
        planning.send([schema("users", USER_SCHEMA, ["id"])])
        planning.send([*(record("users", user(i)) for i in range(20)), state({"at": 20})])
        eventually(lambda: "Stream 'users' loads users" in planning.stderr, what="the records read")
        planning.proc.send_signal(signal.SIGTERM)
        code = planning.drain()
    finally:
        planning.kill()

    assert code == 10, planning.stderr[-3000:]
    assert planning.states == []  # a plan writes no STATE, stopped or not
    assert not plan_path.exists()
    assert sandbox.request_log() == []
