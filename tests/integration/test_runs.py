"""Runs the ledger remembers, from real runs of the target in process: the mirror-delete guard's
stop (exit 14), a dry run that records none, a user's events on each backend; a reason kept to
one line without secrets, and what Meltano passed.

Read by ``userpilot-ledger`` after each way a run ends: ``tests/e2e/test_runs_process.py``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from target_userpilot.errors import (
    JobFailed,
)
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.memory.runs import MAX_REASON, orchestrator, run_end
from target_userpilot.sandbox import Sandbox

from support.events import user_events_config, user_events_input
from support.ledger import ledger_runs
from support.messages import (
    API_KEY,
    full_table_copy,
    users_input,
)
from support.pg import BOTH_LEDGERS, PASSWORD
from support.runner import RunTarget

README = Path(__file__).resolve().parents[2] / "README.md"


def _run_id(stderr: str) -> str:
    found = re.search(r"userpilot-ledger jobs --run (\w+)", stderr)
    assert found, stderr[-3000:]
    return found[1]


def _utc(epoch: float | None) -> str:
    """A moment as userpilot-ledger prints it."""
    assert epoch is not None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Each way a run ends


@BOTH_LEDGERS
def test_a_run_the_guard_stopped_is_stopped_by_the_guard_with_exit_14(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(hard_delete=True, state_db=state_db)
    first = run_target(config, full_table_copy(1, range(20)), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    refused = run_target(config, full_table_copy(2, range(2)), tmp_path=tmp_path)

    assert refused.returncode == 14, refused.stderr[-3000:]
    newest, older = ledger_runs(state_db)
    assert (older.outcome, newest.outcome) == ("completed", "stopped by the guard")
    assert newest.exit_code == 14
    assert newest.reason is not None and "ended without 18 of the 20 users" in newest.reason
    assert sandbox.deletions("users") == []


def test_a_dry_run_records_no_run(
    config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(
        skip_unchanged=True,
        dry_run=True,
        state_db=str(tmp_path / "state.db"),
        output_dir=str(tmp_path / "out"),
    )

    run = run_target(config, users_input(range(3)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert ledger_runs(config["state_db"]) == []


# The README's examples


@BOTH_LEDGERS
def test_events_are_kept_by_user_on_each_backend(
    tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    """Track and import: the user, name, time, run and job of each event, SQLite and PostgreSQL."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        track = run_target(
            user_events_config(sandbox, state_db, "track"),
            user_events_input("track"),
            tmp_path=tmp_path,
        )
        again = run_target(
            user_events_config(sandbox, state_db, "import"),
            user_events_input("import"),
            tmp_path=tmp_path,
        )
        job = next(j["job_id"] for j in sandbox.jobs() if j["type"] == "events_import")
        scope = account_scope(sandbox.url, API_KEY)

    assert (track.returncode, again.returncode) == (0, 0), again.stderr[-3000:]
    ledger = open_ledger(state_db, read_only=True)
    try:
        events = ledger.user_events(scope, "u-7")
        nobody = ledger.user_events(scope, "u-8")
    finally:
        ledger.close()
    assert [(e.name, e.via, e.outcome, e.job_id, e.run_id) for e in events] == [
        ("Exported CSV", "track", "accepted", None, _run_id(track.stderr)),
        ("Opened report", "track", "accepted", None, _run_id(track.stderr)),
        ("Invited", "import", "imported", job, _run_id(again.stderr)),
        ("Signed up", "import", "imported", job, _run_id(again.stderr)),
    ]
    assert [_utc(e.time) for e in events[2:]] == [
        "2026-03-02T14:05:00Z",
        "2026-03-01T09:30:00Z",
    ]
    assert nobody == []


# Without a run


def test_a_reason_is_one_line_without_secrets_and_of_bounded_length() -> None:
    key = "sk-live-3f9c1e77"
    error = JobFailed(
        f"Job j-1 failed\n  with {key} and postgresql://ledger:{PASSWORD}@db/l " + "x" * 3000
    )

    reason = run_end(error, signal_after_input=False, secrets=[key, PASSWORD]).reason

    assert reason is not None
    assert reason.startswith("Job j-1 failed with *** and postgresql://ledger:***@db/l x")
    assert "\n" not in reason and key not in reason and PASSWORD not in reason
    assert len(reason) == MAX_REASON and reason.endswith("…")


def test_what_meltano_passes_is_recorded_and_a_shell_variable_alone_is_not_meltano() -> None:
    under_meltano = {
        "MELTANO_PROJECT_ROOT": "/srv/project",
        "MELTANO_LOADER_NAME": "target-userpilot",
        "MELTANO_ENVIRONMENT": "prod",
        "MELTANO_EXTRACTOR_NAME": "tap-postgres",
        "MELTANO_RUN_ID": "0191aaaa-0000-7000-8000-000000000001",
        "MELTANO_PARENT_CONTEXT_UUID": "01a25151-a5fe-766e-99ca-76ce3ee4c406",  # telemetry
    }

    assert orchestrator(under_meltano) == {
        "name": "meltano",
        "run_id": "0191aaaa-0000-7000-8000-000000000001",
        "environment": "prod",
        "extractor": "tap-postgres",
        "loader": "target-userpilot",
    }
    assert orchestrator({**under_meltano, "MELTANO_RUN_ID": "", "MELTANO_STATE_ID": "s1"}) == {
        "name": "meltano",
        "state_id": "s1",
        "environment": "prod",
        "extractor": "tap-postgres",
        "loader": "target-userpilot",
    }
    assert orchestrator({"MELTANO_PROJECT_ROOT": "/srv/project"}) is None
    assert orchestrator({}) is None
