"""Record to row in a real run: the SDK's own flattening (``flattening_enabled``) must give the
same profiles as the target's, a null object clearing its keys either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import record, schema, state
from support.runner import RunTarget

# End to end: the SDK's own flattening loads what the target's flattening loads.

#: An address fully described two levels down, so a max depth of 2 flattens all of it.
ADDRESS_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "city": {"type": ["string", "null"]},
                "zip": {"type": ["string", "null"]},
                "geo": {
                    "type": ["object", "null"],
                    "properties": {
                        "lat": {"type": ["number", "null"]},
                        "lng": {"type": ["number", "null"]},
                    },
                },
            },
        },
    },
}


def _address_messages() -> list[dict[str, Any]]:
    paris = {"city": "Paris", "zip": "75001", "geo": {"lat": 48.86, "lng": 2.35}}
    oslo = {"city": "Oslo", "zip": "0150", "geo": {"lat": 59.91, "lng": 10.75}}
    return [
        schema("users", ADDRESS_SCHEMA, ["id"]),
        record("users", {"id": 1, "tags": ["a", "b"], "address": paris}),
        record("users", {"id": 2, "address": oslo}),
        state({"n": 2}),
        record("users", {"id": 1, "address": None}),
        record("users", {"id": 2, "address": {"city": "Bergen", "zip": None, "geo": None}}),
        state({"n": 4}),
    ]


@pytest.mark.parametrize("batch_size_rows", [1, 2, 100])
@pytest.mark.parametrize(
    "flattening",
    [
        pytest.param({}, id="target-flattens"),
        pytest.param({"flattening_enabled": True, "flattening_max_depth": 2}, id="sdk-depth-2"),
        pytest.param({"flattening_enabled": True, "flattening_max_depth": 9}, id="sdk-depth-9"),
    ],
)
def test_a_null_object_clears_its_keys_with_or_without_the_sdks_flattening(
    flattening: dict[str, Any],
    batch_size_rows: int,
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
) -> None:
    config.update(flattening, batch_size_rows=batch_size_rows, rows_per_minute=600_000)

    run = run_target(config, _address_messages(), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states[-1] == {"n": 4}
    assert sandbox.profiles("users") == {
        "1": {"user_id": "1", "company_id": None, "metadata": {"tags": '["a","b"]'}},
        "2": {"user_id": "2", "company_id": None, "metadata": {"address__city": "Bergen"}},
    }


def test_a_null_object_clears_what_a_shallow_sdk_flattening_sent(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """At max depth 1 the SDK sends ``address__geo`` as a JSON string; a null clears it too."""
    config.update(flattening_enabled=True, flattening_max_depth=1, batch_size_rows=1)
    messages = _address_messages()

    run = run_target(config, messages[:4], tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.profiles("users")["1"]["metadata"] == {
        "tags": '["a","b"]',
        "address__city": "Paris",
        "address__zip": "75001",
        "address__geo": '{"lat":48.86,"lng":2.35}',
    }

    run = run_target(config, [messages[0], *messages[4:]], tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.profiles("users")["1"]["metadata"] == {"tags": '["a","b"]'}
    assert sandbox.profiles("users")["2"]["metadata"] == {"address__city": "Bergen"}


# Deletes


#: Values a flag column or a broken source puts in the mark: none of them certainly a deletion.
