"""What the target tells people: numbers and nouns that agree, and sentences that say what was sent.

One helper, ``summary.count``, writes "1 id" and "2 ids" wherever a log line counts something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import (
    TAP_USER_SCHEMA,
    deleted_user,
    record,
    schema,
    state,
    user,
    users_messages,
)
from support.runner import RunTarget


def test_one_deletion_and_one_status_poll_read_in_the_singular(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(hard_delete=True, state_db=str(tmp_path / "ledger.db"))
    messages = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        record("users", user(1)),
        record("users", deleted_user(2)),
        state({"done": True}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.deletions("users") == ["2"]
    assert "Userpilot accepted deletion request 1 (1 id of users)." in run.stderr
    assert "Uploaded 1 users row of stream 'users' as job" in run.stderr
    assert "completed: 1 users row of stream 'users' in " in run.stderr
    assert "(1 status poll)." in run.stderr
    assert "ids of" not in run.stderr and "status polls" not in run.stderr


def test_plural_counts_stay_plural(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(config, users_messages(2), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert "Uploaded 2 users rows of stream 'users' as job" in run.stderr
    assert "Sent 2 rows to Userpilot in 1 job, in " in run.stderr
