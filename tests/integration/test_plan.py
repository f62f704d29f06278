"""A plan (``plan_path``): what a real run would do, counted, with nothing sent or written.

Each test plans an input after an earlier load, checks the plan file, checks that the plan left
the ledger, stdout and the sandbox untouched, then runs the real target on the same input and
checks that the plan's counts are the run's summary counts. On a SQLite ledger and on the real
PostgreSQL one (``tests/support/pg.py``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from target_userpilot.plan.tally import SUMMARY_COUNTERS
from target_userpilot.sandbox import Sandbox

from support.messages import (
    MIRRORED_STREAM,
    TAP_USER_SCHEMA,
    USER_SCHEMA,
    activate_version,
    deleted_user,
    event,
    events_schema,
    full_table_copy,
    record,
    schema,
    state,
    user,
)
from support.pg import BOTH_LEDGERS
from support.readme import section
from support.runner import RunTarget, TargetRun


def _ledger_snapshot(state_db: str) -> Any:
    """Everything the ledger holds: the file's bytes (SQLite), and every table's rows."""
    if not state_db.startswith("postgresql"):
        path = Path(state_db)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = list(db.iterdump())
        return hashlib.sha256(path.read_bytes()).hexdigest(), rows
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(state_db.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            tables = sorted(inspect(connection).get_table_names())
            return {
                table: sorted(
                    repr(tuple(row))
                    for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
                )
                for table in tables
            }
    finally:
        engine.dispose()


def _plan(
    run_target: RunTarget,
    config: dict[str, Any],
    messages: list[dict[str, Any]],
    tmp_path: Path,
    sandbox: Sandbox,
) -> tuple[dict[str, Any], TargetRun]:
    """Plan ``messages``; check it wrote nothing anywhere; return the plan file and the run."""
    state_db = config.get("state_db")
    before = _ledger_snapshot(state_db) if state_db and _exists(state_db) else None
    requests = len(sandbox.request_log())
    plan_path = tmp_path / "plan.json"
    plan_path.unlink(missing_ok=True)
    planned = run_target({**config, "plan_path": str(plan_path)}, messages, tmp_path=tmp_path)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert planned.stdout == ""  # no STATE
    assert len(sandbox.request_log()) == requests  # no request at all
    if before is not None:
        assert state_db is not None
        assert _ledger_snapshot(state_db) == before
    assert plan_path.stat().st_mode & 0o077 == 0  # it names profiles: owner-only
    plan: dict[str, Any] = json.loads(plan_path.read_text(encoding="utf-8"))
    return plan, planned


def _exists(state_db: str) -> bool:
    return state_db.startswith("postgresql") or Path(state_db).exists()


def _predicted(plan: dict[str, Any], stream: str) -> dict[str, int]:
    summary: dict[str, int] = plan["streams"][stream]["summary"]
    return summary


def _counted(run: TargetRun, stream: str) -> dict[str, int]:
    counts: dict[str, int] = run.summary["streams"][stream]
    return {name: counts[name] for name in SUMMARY_COUNTERS}


@BOTH_LEDGERS
def test_a_plan_counts_what_the_following_run_does(
    sandbox: Sandbox, config: dict[str, Any], state_db: str, tmp_path: Path, run_target: RunTarget
) -> None:
    config = {**config, "skip_unchanged": True, "hard_delete": True, "state_db": state_db}
    config.update(events_per_minute=6000, batch_wait_seconds=0.2)
    first = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        *(record("users", user(i)) for i in range(20)),
        events_schema(),
        *(record("events", event(i, i)) for i in range(3)),
        state({"run": 1}),
    ]
    assert run_target(config, first, tmp_path=tmp_path).returncode == 0

    second = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        # 0-9 as they were, 10-14 changed, 15-16 deleted in the source, 20-22 new, one refused.
        *(record("users", user(i)) for i in range(10)),
        *(record("users", user(i, plan="enterprise")) for i in range(10, 15)),
        *(record("users", deleted_user(i)) for i in (15, 16)),
        *(record("users", user(i)) for i in range(20, 23)),
        record("users", {"email": "no-id@example.com", "plan": "pro"}),
        events_schema(),
        # e-0 to e-2 were sent by the first run; e-3 and e-4 are new, e-4 comes twice.
        *(record("events", event(i, i)) for i in (0, 1, 2, 3, 4, 4)),
        state({"run": 2}),
    ]
    plan, planned = _plan(run_target, config, second, tmp_path, sandbox)

    users = plan["streams"]["users"]
    assert users["profiles"] == {
        "new": 3,
        "changed": 5,
        "unchanged": 10,
        "repeated": 0,
        "merged": 0,
        "to_send": 8,
    }
    assert users["deletions"]["marked"] == 2 and users["deletions"]["to_delete"] == 2
    assert users["rejected"] == {"count": 1, "reasons": {"'id' is missing or null": 1}}
    assert users["samples"]["rejected"] == ["record 21"]  # no id: its position
    assert users["samples"]["new"] == ["20", "21", "22"]
    assert users["samples"]["to_delete"] == ["15", "16"]
    assert plan["streams"]["events"]["events"] == {"new": 2, "already_sent": 3, "repeated": 1}
    assert plan["outcome"]["completes"] is True
    assert "users (users): 21 records: 3 new, 5 changed, 10 unchanged; 2 to delete" in (
        planned.stderr
    )
    assert "'15'" not in planned.stderr  # ids of deletions are never logged

    run = run_target(config, second, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _counted(run, "users") == _predicted(plan, "users")
    assert _counted(run, "events") == _predicted(plan, "events")
    assert sorted(sandbox.deletions("users")) == ["15", "16"]


@BOTH_LEDGERS
def test_a_plan_gives_the_guards_verdict_on_a_new_version(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(100)), tmp_path=tmp_path).returncode == 0
    )

    within = full_table_copy(2, [i for i in range(100) if i not in (7, 23, 50)])
    plan, planned = _plan(run_target, mirror_config, within, tmp_path, sandbox)

    stream = plan["streams"][MIRRORED_STREAM]
    assert stream["versions"] == [
        {
            "version": 2,
            "known": 100,
            "lacks": 3,
            "held_elsewhere": 0,
            "percent": 3.0,
            "allowed": 10,
            "verdict": "would delete",
        }
    ]
    assert stream["deletions"]["mirror"] == 3
    assert stream["samples"]["to_delete"] == ["23", "50", "7"]
    assert "full-table version 2 lacks 3 of its 100 users (3.0 %, the guard allows 10)" in (
        planned.stderr
    )

    run = run_target(mirror_config, within, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _counted(run, MIRRORED_STREAM) == _predicted(plan, MIRRORED_STREAM)
    assert sorted(sandbox.deletions("users")) == ["23", "50", "7"]


@BOTH_LEDGERS
def test_a_plan_says_where_the_guard_would_stop_the_run(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(100)), tmp_path=tmp_path).returncode == 0
    )
    # The copy lost 90 rows; a later stream is past the point where the run stops.
    shrunk = [
        *full_table_copy(2, range(10)),
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(500)),
    ]

    plan, planned = _plan(run_target, mirror_config, shrunk, tmp_path, sandbox)

    stream = plan["streams"][MIRRORED_STREAM]
    (version,) = stream["versions"]
    assert (version["lacks"], version["percent"], version["allowed"]) == (90, 90.0, 10)
    assert version["verdict"] == "would stop the run"
    assert stream["deletions"]["to_delete"] == 0
    stops = plan["outcome"]["stops"]
    assert plan["outcome"]["completes"] is False
    assert stops["kind"] == "guard" and stops["stream"] == MIRRORED_STREAM
    assert "ended without 90 of the 100 users" in stops["reason"]
    assert "users" not in plan["streams"]  # the run never reaches it
    assert plan["outcome"]["messages_after_stop"] == 2  # its STATE and its record
    assert "The run would stop: Stream 'public-crm_users'" in planned.stderr

    run = run_target(mirror_config, shrunk, tmp_path=tmp_path)

    assert run.returncode == 14, run.stderr[-3000:]
    assert _counted(run, MIRRORED_STREAM) == _predicted(plan, MIRRORED_STREAM)
    assert sandbox.deletions("users") == []


def test_a_plan_without_a_ledger_counts_everything_new_and_creates_none(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    state_db = tmp_path / "ledger" / "state.db"
    config = {**config, "skip_unchanged": True, "state_db": str(state_db)}
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *(record("users", user(i)) for i in range(5)),
        record("users", user(2, plan="free")),  # the same profile again: merged
        state({"done": True}),
    ]

    plan, planned = _plan(run_target, config, messages, tmp_path, sandbox)

    assert plan["ledger"] is None
    assert plan["streams"]["users"]["profiles"] == {
        "new": 5,
        "changed": 0,
        "unchanged": 0,
        "repeated": 0,
        "merged": 1,
        "to_send": 5,
    }
    assert "No ledger yet (a first run): every profile and event counts as new" in planned.stderr
    assert not state_db.parent.exists()

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _counted(run, "users") == _predicted(plan, "users")


def test_the_readme_plan_example_prints_what_the_readme_shows(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """The README's example: a full-table stream with changes, new rows and rows gone from the
    source, and an events stream partly sent before; then the run does what the plan said."""
    readme = section("Plan a run")
    shown = readme[readme.index("```\nPlan:") + 4 :]
    shown_lines = shown[: shown.index("```")].rstrip("\n").splitlines()
    config = {**mirror_config, "skip_unchanged": True, "events_per_minute": 6000}
    first = [
        *full_table_copy(1, range(40), final_state=False),
        events_schema(),
        *(record("events", event(i, i)) for i in range(5)),
        state({"run": 1}),
    ]
    assert run_target(config, first, tmp_path=tmp_path).returncode == 0
    # Version 2: 0-29 as they were, 30-35 changed, 36-39 gone from the source, 40-51 new.
    rows = [
        *(user(i) for i in range(30)),
        *(user(i, plan="enterprise") for i in range(30, 36)),
        *(user(i) for i in range(40, 52)),
    ]
    second = [
        schema(MIRRORED_STREAM, USER_SCHEMA, ["id"]),
        activate_version(2),
        *({**record(MIRRORED_STREAM, row), "version": 2} for row in rows),
        activate_version(2),
        events_schema(),
        *(record("events", event(i, i % 40)) for i in range(8)),  # e-0 to e-4 were sent
        state({"run": 2}),
    ]

    plan, planned = _plan(run_target, config, second, tmp_path, sandbox)

    messages = [line.split(" | ", 3)[-1] for line in planned.stderr.splitlines()]
    start = messages.index(shown_lines[0])
    assert messages[start : start + len(shown_lines)] == shown_lines
    run = run_target(config, second, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    for stream in (MIRRORED_STREAM, "events"):
        assert _counted(run, stream) == _predicted(plan, stream)


def test_a_deletion_after_a_row_of_its_profile_supersedes_it_in_the_plan_as_in_the_run(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config = {**config, "hard_delete": True, "state_db": str(tmp_path / "state.db")}
    messages = [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        record("users", user(1)),
        record("users", user(2)),
        record("users", deleted_user(2)),
        state({"done": True}),
    ]

    plan, _ = _plan(run_target, config, messages, tmp_path, sandbox)

    users = plan["streams"]["users"]
    assert users["profiles"]["to_send"] == 1
    assert users["deletions"]["superseded"] == 1 and users["deletions"]["to_delete"] == 1
    run = run_target(config, messages, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _counted(run, "users") == _predicted(plan, "users")
    assert sorted(sandbox.profiles("users")) == ["1"]


def test_a_plan_that_fails_leaves_no_plan_file_not_even_an_earlier_one(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    plan_path = tmp_path / "plan.json"
    plan_path.write_text('{"outcome": {"completes": true}}', encoding="utf-8")
    messages: list[dict[str, Any] | str] = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1)),
        "{not json",
    ]

    planned = run_target({**config, "plan_path": str(plan_path)}, messages, tmp_path=tmp_path)

    assert planned.returncode != 0
    assert not plan_path.exists()
    assert "The plan did not finish, so no plan file was written" in planned.stderr
    assert sandbox.request_log() == []
