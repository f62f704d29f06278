"""The in-process runner against a process: the same input ends the same way in both.

Integration tests run the target in the test's own process (``run_target``); they are only
worth as much as that run is the one a process would do. What the in-process run leaves behind:
``tests/integration/test_runner.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import USER_SCHEMA, record, schema, state, user, users_messages
from support.runner import RunTarget


def test_a_run_in_process_ends_as_the_same_run_as_a_process(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
    run_target_process: RunTarget,
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *(record("users", user(i)) for i in range(5)),
        record("users", {"id": None, "email": "no-id@example.com"}),
        state({"bookmarks": {"users": 4}}),
    ]

    in_process = run_target(config, messages, tmp_path=tmp_path / "in")
    as_process = run_target_process(config, messages, tmp_path=tmp_path / "out")

    assert in_process.returncode == as_process.returncode == 0
    assert in_process.states == as_process.states == [{"bookmarks": {"users": 4}}]
    totals = ("received", "rows_sent", "rejected", "jobs")
    assert {k: in_process.summary["total"][k] for k in totals} == {
        k: as_process.summary["total"][k] for k in totals
    }
    assert in_process.summary["total"]["rejected"] == 1


def test_a_failed_run_in_process_has_the_exit_code_and_sentence_of_a_process(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
    run_target_process: RunTarget,
) -> None:
    refused = {**config, "api_key": "not-the-sandbox-key"}

    in_process = run_target(refused, users_messages(3), tmp_path=tmp_path / "in")
    as_process = run_target_process(refused, users_messages(3), tmp_path=tmp_path / "out")

    assert in_process.returncode == as_process.returncode == 3
    sentence = "Userpilot refused the API key (HTTP 401)"
    assert sentence in in_process.stderr
    assert sentence in as_process.stderr
    assert in_process.states == as_process.states == []
