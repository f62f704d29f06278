"""A STATE message with a null value, in a real run: ignored with a warning, the one before
it goes out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import (
    USER_SCHEMA,
    record,
    schema,
    state,
    user,
)
from support.runner import RunTarget

# STATE messages as the target writes them (issue 9 items 13 and 16)


def test_a_null_state_is_ignored_with_a_warning_and_the_one_before_it_goes_out(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [schema("users", USER_SCHEMA, ["id"]), record("users", user(1))]
    messages += [state({"last": 1}), state(None)]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states == [{"last": 1}]
    assert "A STATE message with a null value" in run.stderr
