"""Keys cleared: a JSON object set to null, or that lost keys, leaves none of its old keys behind.

tap-postgres declares ``jsonb`` with no properties, so ``prefs__lang`` and ``prefs__theme`` are
known only from values. The real target against the sandbox: across runs with the ledger (SQLite
and the real PostgreSQL), within one run without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import record, schema, state
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget

STREAM = "public-crm_users"
#: As tap-postgres discovers a jsonb column: every type, no properties.
JSONB_SCHEMA = {
    "properties": {
        "id": {"type": ["integer"]},
        "prefs": {
            "type": ["string", "number", "integer", "array", "object", "boolean", "null"],
            "additionalProperties": True,
        },
    }
}


def _sync(*rows: tuple[int, object]) -> list[dict[str, Any]]:
    return [
        schema(STREAM, JSONB_SCHEMA, ["id"]),
        *(record(STREAM, {"id": i, "prefs": prefs}) for i, prefs in rows),
        state({"done": True}),
    ]


@BOTH_LEDGERS
def test_keys_are_cleared_on_null_and_on_shrink_across_runs(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)
    first = run_target(
        config,
        _sync((1, {"lang": "en", "theme": "dark"}), (2, {"lang": "de", "theme": "light"})),
        tmp_path=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert sandbox.profiles("users")["1"]["metadata"] == {
        "prefs__lang": "en",
        "prefs__theme": "dark",
    }

    # Each run is a new process: what it clears it knows from the ledger only.
    second = run_target(config, _sync((1, None), (2, {"lang": "de"})), tmp_path=tmp_path)

    assert second.returncode == 0, second.stderr[-3000:]
    profiles = sandbox.profiles("users")
    assert profiles["1"]["metadata"] == {}
    assert profiles["2"]["metadata"] == {"prefs__lang": "de"}

    # Unchanged rows stay unsent: the clears are part of the row, the same in every run.
    third = run_target(config, _sync((1, None), (2, {"lang": "de"})), tmp_path=tmp_path)
    assert third.returncode == 0
    assert third.summary["total"]["unchanged"] == 2


def test_hard_delete_runs_keep_keys_in_the_ledger_too(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(hard_delete=True, state_db=str(tmp_path / "state.db"))
    assert run_target(config, _sync((1, {"lang": "en"})), tmp_path=tmp_path).returncode == 0

    run = run_target(config, _sync((1, {"theme": "dark"})), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.profiles("users")["1"]["metadata"] == {"prefs__theme": "dark"}


def test_without_a_ledger_keys_seen_earlier_in_the_run_are_cleared(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    # One row per batch: the null goes up in its own job, after the object's.
    config.update(batch_size_rows=1)

    run = run_target(
        config,
        _sync((1, {"lang": "en", "theme": "dark"}), (2, {"lang": "x"}), (1, None)),
        tmp_path=tmp_path,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.profiles("users")["1"]["metadata"] == {}
    assert not (tmp_path / ".target-userpilot").exists()  # no ledger was opened

    # The limit the README names: a later run without a ledger does not know the keys.
    assert run_target(config, _sync((2, None)), tmp_path=tmp_path).returncode == 0
    assert sandbox.profiles("users")["2"]["metadata"] == {"prefs__lang": "x"}
