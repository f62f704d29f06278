"""A flat key colliding with a nested one is named once per stream, in a real run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import record, schema
from support.runner import RunTarget


def test_a_flat_key_colliding_with_a_nested_one_is_named_once_per_stream(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    properties = {
        "id": {"type": "integer"},
        "address__city": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    rows = [{"id": i, "address__city": "Flat", "address": {"city": "Nested"}} for i in range(3)]
    messages = [schema("users", properties, ["id"]), *[record("users", r) for r in rows]]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [line for line in run.stderr.splitlines() if "got two values" in line]
    assert len(warnings) == 1, warnings
    assert "'address__city'" in warnings[0]
    assert sandbox.profiles("users")["0"]["metadata"]["address__city"] == "Nested"
