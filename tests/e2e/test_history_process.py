"""The sync history as ``userpilot-ledger`` reads it (a process), after kill -9 and as the
README shows it; on SQLite and on the real PostgreSQL.

The rest runs in process: ``tests/integration/test_history.py``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.store import HistoryEntry
from target_userpilot.sandbox import Sandbox

from support.ledger import ledger_cli
from support.messages import (
    API_KEY,
    TAP_USER_SCHEMA,
    deleted_user,
    record,
    schema,
    state,
    users_input,
)
from support.pg import BOTH_LEDGERS, PASSWORD
from support.runner import RunTarget, TargetProcess
from support.waiting import eventually


@BOTH_LEDGERS
def test_history_after_kill_9_shows_the_job_sent_and_its_end_unknown(
    config: dict[str, Any], tmp_path: Path, state_db: str
) -> None:
    from target_userpilot.sandbox import Sandbox

    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=60) as slow:
        config.update(api_url=slow.url, skip_unchanged=True, state_db=state_db)
        run = TargetProcess(config, tmp_path, messages=users_input(range(50)))
        try:
            eventually(slow.jobs, timeout=20)
            scope = account_scope(slow.url, API_KEY)

            def recorded() -> list[HistoryEntry]:
                ledger = open_ledger(state_db)
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


# Deletions remembered


def _deletions(ids: Iterable[int]) -> list[dict[str, Any]]:
    return [
        schema("users", TAP_USER_SCHEMA, ["id"]),
        *(record("users", deleted_user(i)) for i in ids),
        state({"bookmark": "same"}),
    ]


# Reading it: userpilot-ledger


def _readme_example() -> tuple[list[str], list[str]]:
    """The README's history example: its command's arguments and its output lines."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The ledger's sync history") :]
    match = re.search(r"```sh\n(userpilot-ledger .*?)\n```\n\n```text\n(.*?)```", section, re.S)
    assert match, "the README's userpilot-ledger example is missing"
    return match[1].split()[1:], match[2].splitlines()


@BOTH_LEDGERS
def test_the_readme_history_example_reads_as_documented(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)
    for plan in ("free", "pro"):
        run = run_target(config, users_input([41, 42], plan=plan), tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
    (tmp_path / "config.json").write_text(json.dumps(config))
    argv, expected = _readme_example()

    shown = ledger_cli(*argv, cwd=tmp_path)

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


@BOTH_LEDGERS
def test_jobs_export_and_accounts_read_the_ledger(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, hard_delete=True, state_db=state_db)
    run = run_target(config, users_input([1, 2]), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    gone = run_target(config, _deletions([2]), tmp_path=tmp_path)
    assert gone.returncode == 0, gone.stderr[-2000:]
    (tmp_path / "config.json").write_text(json.dumps(config))
    named = re.search(r"userpilot-ledger jobs --run (\w+)", gone.stderr)
    assert named, gone.stderr[-2000:]
    run_id = named[1]

    jobs = ledger_cli("--config", "config.json", "jobs", "--run", run_id, cwd=tmp_path)
    csv_export = ledger_cli("--config", "config.json", "export", "--format", "csv", cwd=tmp_path)
    jsonl = ledger_cli("--config", "config.json", "export", "--format", "jsonl", cwd=tmp_path)
    accounts = ledger_cli("--state-db", state_db, "accounts", cwd=tmp_path)

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


def test_a_ledger_that_cannot_be_reached_is_a_sentence_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://ledger:{PASSWORD}@127.0.0.1:1/ledger"

    shown = ledger_cli("--state-db", url, "accounts", cwd=tmp_path)

    assert shown.returncode == 2
    assert "could not connect" in shown.stderr and PASSWORD not in shown.stderr
