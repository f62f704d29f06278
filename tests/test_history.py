"""The ledger's sync history and remembered deletions, written by real runs against the sandbox.

Each behaviour runs with a SQLite file and with the real PostgreSQL that ``tests/pg.py`` starts
(one schema per test): what a job sent, how it ended (completed, failed, or unknown after
kill -9), and deletions that Userpilot accepted once and are not requested again.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    API_KEY,
    USER_SCHEMA,
    TargetProcess,
    eventually,
    record,
    run_target,
    schema,
    state,
    user,
)
from pg import PASSWORD, postgres_fixture  # noqa: F401 - the session fixture
from test_deletes import TAP_USER_SCHEMA, deleted_user

from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.store import Ledger
from target_userpilot.memory.history import erasure_time


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db(request, tmp_path) -> Iterator[str]:
    """A ``state_db`` of each backend (PostgreSQL: a schema of the test's own)."""
    if request.param == "sqlite":
        yield str(tmp_path / "state.db")
        return
    server = request.getfixturevalue("postgres")
    name = "h_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-50:].lower()
    server.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    yield f"{server.url}?options=-csearch_path%3D{name}"
    server.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _users(ids, **extra) -> list[dict]:
    return [
        schema("users", USER_SCHEMA, ["id"]),
        *(record("users", user(i, **extra)) for i in ids),
        state({"done": True}),
    ]


def _ledger(state_db: str) -> Ledger:
    return open_ledger(state_db)


def test_history_after_a_completed_job_names_the_job_and_the_row(
    sandbox, config, tmp_path, state_db
):
    config.update(skip_unchanged=True, state_db=state_db)
    run = run_target(config, _users(range(3)), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    again = run_target(config, _users(range(3), plan="team"), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]

    scope = account_scope(sandbox.url, API_KEY)
    job_ids = {job["job_id"] for job in sandbox.jobs()}
    ledger = _ledger(state_db)
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


def test_history_after_a_failed_job_says_failed(sandbox, config, tmp_path, state_db):
    config.update(skip_unchanged=True, state_db=state_db)
    sandbox.set_faults(fail_jobs=1)

    run = run_target(config, _users(range(3)), tmp_path=tmp_path)

    assert run.returncode != 0
    ledger = _ledger(state_db)
    try:
        history = ledger.profile_history(account_scope(sandbox.url, API_KEY), "users", "2")
    finally:
        ledger.close()
    assert [(entry.kind, entry.outcome) for entry in history] == [("job", "failed")]
    assert history[0].job_id == sandbox.jobs()[0]["job_id"]


def test_history_after_kill_9_shows_the_job_sent_and_its_end_unknown(config, tmp_path, state_db):
    from target_userpilot.sandbox import Sandbox

    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=60) as slow:
        config.update(api_url=slow.url, skip_unchanged=True, state_db=state_db)
        run = TargetProcess(config, tmp_path, messages=_users(range(50)))
        try:
            eventually(slow.jobs, timeout=20)
            scope = account_scope(slow.url, API_KEY)

            def recorded() -> list:
                ledger = _ledger(state_db)
                try:
                    return ledger.profile_history(scope, "users", "7")
                finally:
                    ledger.close()

            eventually(recorded, timeout=20)
        finally:
            run.kill()
        job_id = slow.jobs()[0]["job_id"]
    history = recorded()
    assert [(e.job_id, e.outcome, e.ended_at) for e in history] == [(job_id, None, None)]


def test_history_keeps_only_the_newest_entries_per_profile(sandbox, config, tmp_path, state_db):
    config.update(skip_unchanged=True, state_db=state_db, ledger_history_entries=2)
    for plan in ("a", "b", "c", "d"):
        run = run_target(config, _users(range(2), plan=plan), tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]

    ledger = _ledger(state_db)
    try:
        history = ledger.profile_history(account_scope(sandbox.url, API_KEY), "users", "0")
    finally:
        ledger.close()
    newest = sorted((job["job_id"] for job in sandbox.jobs()), reverse=True)
    assert len(history) == 2
    assert {e.job_id for e in history} <= set(newest)


# Deletions remembered


def _deletions(ids) -> list[dict]:
    return [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        *(record("users", deleted_user(i)) for i in ids),
        state({"bookmark": "same"}),
    ]


def test_deletions_a_tap_sends_again_are_requested_once(sandbox, config, tmp_path, state_db):
    """A tap re-reading at its bookmark: 4 runs, 10 soft-deleted ids, 10 deletion entries."""
    config.update(hard_delete=True, state_db=state_db)
    runs = [run_target(config, _deletions(range(10)), tmp_path=tmp_path) for _ in range(4)]

    assert all(run.returncode == 0 for run in runs), runs[-1].stderr[-2000:]
    assert Counter(sandbox.deletions("users")) == Counter(str(i) for i in range(10))
    assert runs[0].summary["total"]["deleted"] == 10
    later = runs[-1].summary["total"]
    assert later["deleted"] == 0 and later["deleted_before"] == 10
    assert all(run.states == [{"bookmark": "same"}] for run in runs)
    ledger = _ledger(state_db)
    try:
        history = ledger.profile_history(account_scope(sandbox.url, API_KEY), "users", "3")
    finally:
        ledger.close()
    assert [(e.kind, e.outcome, e.hash) for e in history] == [("deletion", "accepted", None)]


def test_an_upsert_after_an_earlier_runs_deletion_warns_and_stays_unconfirmed(
    sandbox, config, tmp_path, state_db
):
    config.update(hard_delete=True, skip_unchanged=True, state_db=state_db)
    assert run_target(config, _deletions([1, 2]), tmp_path=tmp_path).returncode == 0

    upsert = run_target(config, _users([1]), tmp_path=tmp_path)

    assert upsert.returncode == 0, upsert.stderr[-2000:]
    assert "1 users profile of 'users' was sent again after Userpilot accepted its deletion" in (
        upsert.stderr
    )
    assert "02:00 UTC" in upsert.stderr
    # Until the deletion run has passed, the row is sent again: Userpilot may erase it.
    rerun = run_target(config, _users([1]), tmp_path=tmp_path)
    assert rerun.summary["total"]["rows_sent"] == 1
    # The source sent it live again: a new deletion of it is requested, the other is not.
    before = len(sandbox.deletions("users"))
    third = run_target(config, _deletions([1, 2]), tmp_path=tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    assert sandbox.deletions("users")[before:] == ["1"]


def test_the_erasure_time_is_the_next_two_oclock_utc():
    from datetime import datetime, timezone

    def at(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()

    assert erasure_time(at("2026-12-02 01:59:59")) == at("2026-12-02 02:00:00")
    assert erasure_time(at("2026-12-02 02:00:00")) == at("2026-12-03 02:00:00")
    assert erasure_time(at("2026-12-02 23:10:00")) == at("2026-12-03 02:00:00")


# Reading it: userpilot-ledger


def _cli(*argv: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "target_userpilot.ledger.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def _readme_example() -> tuple[list[str], list[str]]:
    """The README's history example: its command's arguments and its output lines."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## The ledger's sync history") :]
    match = re.search(r"```sh\n(userpilot-ledger .*?)\n```\n\n```text\n(.*?)```", section, re.S)
    assert match, "the README's userpilot-ledger example is missing"
    return match[1].split()[1:], match[2].splitlines()


def test_the_readme_history_example_reads_as_documented(sandbox, config, tmp_path, state_db):
    config.update(skip_unchanged=True, state_db=state_db)
    for plan in ("free", "pro"):
        run = run_target(config, _users([41, 42], plan=plan), tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
    (tmp_path / "config.json").write_text(json.dumps(config))
    argv, expected = _readme_example()

    shown = _cli(*argv, cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == re.split(r"\s{2,}", expected[0])
    # Object, kind and outcome as documented; times, job ids and hashes are this run's own.
    assert [[*line.split()[1:3], line.split()[4]] for line in lines[1:]] == [
        [*line.split()[1:3], line.split()[4]] for line in expected[1:]
    ]
    job_ids = sorted(job["job_id"] for job in sandbox.jobs())
    assert sorted(line.split()[3] for line in lines[1:]) == job_ids
    assert PASSWORD not in shown.stdout + shown.stderr


def test_jobs_export_and_accounts_read_the_ledger(sandbox, config, tmp_path, state_db):
    config.update(skip_unchanged=True, hard_delete=True, state_db=state_db)
    run = run_target(config, _users([1, 2]), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    gone = run_target(config, _deletions([2]), tmp_path=tmp_path)
    assert gone.returncode == 0, gone.stderr[-2000:]
    (tmp_path / "config.json").write_text(json.dumps(config))
    run_id = re.search(r"userpilot-ledger jobs --run (\w+)", gone.stderr)[1]

    jobs = _cli("--config", "config.json", "jobs", "--run", run_id, cwd=tmp_path)
    csv_export = _cli("--config", "config.json", "export", "--format", "csv", cwd=tmp_path)
    jsonl = _cli("--config", "config.json", "export", "--format", "jsonl", cwd=tmp_path)
    accounts = _cli("--state-db", state_db, "accounts", cwd=tmp_path)

    assert jobs.returncode == 0, jobs.stderr
    how_it_ended, table = jobs.stdout.split("\n\n")
    assert how_it_ended.splitlines()[0] == f"Run {run_id}: completed (exit 0)"
    assert [line.split()[2] for line in table.splitlines()[1:]] == ["deletion"]
    assert "accepted" in table
    rows = list(csv.DictReader(io.StringIO(csv_export.stdout)))
    assert [(r["id"], r["state"]) for r in rows] == [("1", "upserted"), ("2", "deletion accepted")]
    assert rows[0]["account"] == account_scope(sandbox.url, API_KEY)
    assert [json.loads(line)["state"] for line in jsonl.stdout.splitlines()] == [
        "upserted",
        "deletion accepted",
    ]
    assert account_scope(sandbox.url, API_KEY) in accounts.stdout
    for shown in (jobs, csv_export, jsonl, accounts):
        assert PASSWORD not in shown.stdout + shown.stderr
        assert API_KEY not in shown.stdout + shown.stderr


def test_a_ledger_that_cannot_be_reached_is_a_sentence_without_the_password(tmp_path):
    url = f"postgresql://ledger:{PASSWORD}@127.0.0.1:1/ledger"

    shown = _cli("--state-db", url, "accounts", cwd=tmp_path)

    assert shown.returncode == 2
    assert "could not connect" in shown.stderr and PASSWORD not in shown.stderr
