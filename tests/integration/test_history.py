"""The ledger's sync history and remembered deletions, written by real runs against the sandbox.

Each behaviour runs with a SQLite file and with the real PostgreSQL that
``tests/support/pg.py`` starts (one schema per test): what a job sent, how it ended
(completed or failed), and deletions that Userpilot accepted once and are not requested
again. After kill -9, and as ``userpilot-ledger`` reads it: ``tests/e2e/test_history_process.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.memory.history import erasure_time
from target_userpilot.sandbox import Sandbox

from support.messages import (
    API_KEY,
    TAP_USER_SCHEMA,
    deleted_user,
    record,
    schema,
    state,
    users_input,
)
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget


@BOTH_LEDGERS
def test_history_after_a_completed_job_names_the_job_and_the_row(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)
    run = run_target(config, users_input(range(3)), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    again = run_target(config, users_input(range(3), plan="team"), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]

    scope = account_scope(sandbox.url, API_KEY)
    job_ids = {job["job_id"] for job in sandbox.jobs()}
    ledger = open_ledger(state_db)
    try:
        history = ledger.profile_history(scope, "users", "1")
        jobs = ledger.jobs(scope, None, 10)
    finally:
        ledger.close()
    assert [entry.outcome for entry in history] == ["completed", "completed"]
    assert {entry.job_id for entry in history} == job_ids
    assert history[0].hash != history[1].hash  # the plan changed between the two runs
    assert history[0].sent_at >= history[1].sent_at
    assert all(e.ended_at is not None and e.ended_at >= e.sent_at for e in history)
    assert [(job.kind, job.rows, job.outcome, job.streams) for job in jobs] == [
        ("job", 3, "completed", "users")
    ] * 2
    run_ids = [job.run_id for job in jobs]
    assert run_ids[0] != run_ids[1]
    assert f"userpilot-ledger jobs --run {run_ids[1]}" in again.stderr


@BOTH_LEDGERS
def test_history_after_a_failed_job_says_failed(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)
    sandbox.set_faults(fail_jobs=1)

    run = run_target(config, users_input(range(3)), tmp_path=tmp_path)

    assert run.returncode != 0
    ledger = open_ledger(state_db)
    try:
        history = ledger.profile_history(account_scope(sandbox.url, API_KEY), "users", "2")
    finally:
        ledger.close()
    assert [(entry.kind, entry.outcome) for entry in history] == [("job", "failed")]
    assert history[0].job_id == sandbox.jobs()[0]["job_id"]


@BOTH_LEDGERS
def test_history_keeps_only_the_newest_entries_per_profile(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db, ledger_history_entries=2)
    for plan in ("a", "b", "c", "d"):
        run = run_target(config, users_input(range(2), plan=plan), tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]

    ledger = open_ledger(state_db)
    try:
        history = ledger.profile_history(account_scope(sandbox.url, API_KEY), "users", "0")
    finally:
        ledger.close()
    newest = sorted((job["job_id"] for job in sandbox.jobs()), reverse=True)
    assert len(history) == 2
    assert {e.job_id for e in history} <= set(newest)


# Deletions remembered


def _deletions(ids: Iterable[int]) -> list[dict[str, Any]]:
    return [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        *(record("users", deleted_user(i)) for i in ids),
        state({"bookmark": "same"}),
    ]


@BOTH_LEDGERS
def test_deletions_a_tap_sends_again_are_requested_once(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    """A tap re-reading at its bookmark: 4 runs, 10 soft-deleted ids, 10 deletion entries."""
    config.update(hard_delete=True, state_db=state_db)
    runs = [run_target(config, _deletions(range(10)), tmp_path=tmp_path) for _ in range(4)]

    assert all(run.returncode == 0 for run in runs), runs[-1].stderr[-2000:]
    assert Counter(sandbox.deletions("users")) == Counter(str(i) for i in range(10))
    assert runs[0].summary["total"]["deleted"] == 10
    later = runs[-1].summary["total"]
    assert later["deleted"] == 0 and later["deleted_before"] == 10
    assert all(run.states == [{"bookmark": "same"}] for run in runs)
    ledger = open_ledger(state_db)
    try:
        history = ledger.profile_history(account_scope(sandbox.url, API_KEY), "users", "3")
    finally:
        ledger.close()
    assert [(e.kind, e.outcome, e.hash) for e in history] == [("deletion", "accepted", None)]


@BOTH_LEDGERS
def test_an_upsert_after_an_earlier_runs_deletion_warns_and_stays_unconfirmed(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(hard_delete=True, skip_unchanged=True, state_db=state_db)
    assert run_target(config, _deletions([1, 2]), tmp_path=tmp_path).returncode == 0

    upsert = run_target(config, users_input([1]), tmp_path=tmp_path)

    assert upsert.returncode == 0, upsert.stderr[-2000:]
    assert "1 users profile of 'users' was sent again after Userpilot accepted its deletion" in (
        upsert.stderr
    )
    assert "02:00 UTC" in upsert.stderr
    # Until the deletion run has passed, the row is sent again: Userpilot may erase it.
    rerun = run_target(config, users_input([1]), tmp_path=tmp_path)
    assert rerun.summary["total"]["rows_sent"] == 1
    # The source sent it live again: a new deletion of it is requested, the other is not.
    before = len(sandbox.deletions("users"))
    third = run_target(config, _deletions([1, 2]), tmp_path=tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    assert sandbox.deletions("users")[before:] == ["1"]


def test_the_erasure_time_is_the_next_two_oclock_utc() -> None:
    from datetime import datetime, timezone

    def at(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()

    assert erasure_time(at("2026-12-02 01:59:59")) == at("2026-12-02 02:00:00")
    assert erasure_time(at("2026-12-02 02:00:00")) == at("2026-12-03 02:00:00")
    assert erasure_time(at("2026-12-02 23:10:00")) == at("2026-12-03 02:00:00")
