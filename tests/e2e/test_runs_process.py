"""Runs the ledger remembers, read as ``userpilot-ledger`` reads them (a process), after each way
a run can end: completed, a failed job, SIGTERM, kill -9; the README's "Runs" and "Events in
history" examples against real output. On SQLite and on the real PostgreSQL.

In process: ``tests/integration/test_runs.py``; the rules alone:
``tests/unit/test_run_outcomes.py``.
"""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from target_userpilot.errors import (
    ConfigurationError,
)
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.store import RunEntry
from target_userpilot.sandbox import Sandbox

from support.events import user_events_config, user_events_input
from support.ledger import ledger_cli, ledger_runs
from support.messages import (
    API_KEY,
    full_table_copy,
    users_input,
)
from support.pg import BOTH_LEDGERS, PASSWORD
from support.runner import RunTarget, TargetProcess
from support.waiting import eventually

README = Path(__file__).resolve().parents[2] / "README.md"


def _run_id(stderr: str) -> str:
    found = re.search(r"userpilot-ledger jobs --run (\w+)", stderr)
    assert found, stderr[-3000:]
    return found[1]


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _utc(epoch: float | None) -> str:
    """A moment as userpilot-ledger prints it."""
    assert epoch is not None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _how_it_ended(state_db: str, run: RunEntry, cwd: Path) -> list[str]:
    """The lines ``jobs --run`` prints above a run's jobs, for the run's account."""
    shown = ledger_cli(
        "--state-db", state_db, "--account", run.scope, "jobs", "--run", run.run_id, cwd=cwd
    )
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr
    return shown.stdout.split("\n\n")[0].splitlines()


def _sigterm_after_the_first_state(
    config: dict[str, Any], tmp_path: Path, ids: range = range(3)
) -> TargetProcess:
    """A run loading users ``ids``, its input left open, sent SIGTERM once their STATE is out."""
    run = TargetProcess({**config, "batch_wait_seconds": 0.1}, tmp_path)
    try:
        run.send(users_input(ids))
        assert run.next_state() == {"done": True}
        run.proc.send_signal(signal.SIGTERM)
        run.drain()
    finally:
        run.kill()
    return run


def _killed_after_the_first_state(
    config: dict[str, Any], tmp_path: Path, ids: range = range(3)
) -> TargetProcess:
    """A run loading users ``ids``, killed with SIGKILL once their STATE is out."""
    run = TargetProcess({**config, "batch_wait_seconds": 0.1}, tmp_path)
    try:
        run.send(users_input(ids))
        assert run.next_state() == {"done": True}
    finally:
        run.kill()
    return run


# Each way a run ends


@BOTH_LEDGERS
def test_a_completed_run_is_a_row_with_its_summary(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)

    run = run_target(config, users_input(range(3)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    (entry,) = ledger_runs(state_db)
    assert entry.run_id == _run_id(run.stderr)
    assert entry.scope == account_scope(sandbox.url, API_KEY)
    assert (entry.outcome, entry.exit_code, entry.reason) == ("completed", 0, None)
    assert entry.ended_at is not None and entry.started_at <= entry.ended_at
    assert entry.counts == run.summary  # the run's own TARGET_USERPILOT_SUMMARY line
    assert entry.orchestrator is None
    assert _how_it_ended(state_db, entry, tmp_path) == [
        f"Run {entry.run_id}: completed (exit 0)",
        f"  started {_utc(entry.started_at)}, ended {_utc(entry.ended_at)}",
        "  3 rows sent, 0 unchanged, 0 deleted, 0 events sent, 0 rejected",
    ]


@BOTH_LEDGERS
def test_a_run_whose_job_failed_is_failed_with_exit_4_and_the_reason_it_printed(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)
    sandbox.set_faults(fail_jobs=1)

    run = run_target(config, users_input(range(3)), tmp_path=tmp_path)

    assert run.returncode == 4, run.stderr[-3000:]
    (entry,) = ledger_runs(state_db)
    printed = re.search(r"target-userpilot stopped: (.*)", run.stderr)
    assert printed, run.stderr[-3000:]
    assert (entry.outcome, entry.exit_code) == ("failed", 4)
    assert entry.reason == printed[1].strip()
    assert sandbox.jobs()[0]["job_id"] in printed[1]
    assert entry.counts is not None and entry.counts["total"]["rows_sent"] == 0
    lines = _how_it_ended(state_db, entry, tmp_path)
    assert lines[0] == f"Run {entry.run_id}: failed (exit 4)"
    assert lines[-1] == f"  reason: {entry.reason}"


@BOTH_LEDGERS
def test_a_run_stopped_by_sigterm_is_stopped_by_a_signal_with_exit_10(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)

    run = _sigterm_after_the_first_state(config, tmp_path)

    assert run.proc.returncode == 10, run.stderr[-3000:]
    (entry,) = ledger_runs(state_db)
    assert entry.run_id == _run_id(run.stderr)
    assert (entry.outcome, entry.exit_code) == ("stopped by a signal", 10)
    assert entry.reason is not None and entry.reason.startswith("Received SIGTERM, so the run")
    assert entry.counts is not None and entry.counts["total"]["rows_sent"] == 3
    assert _how_it_ended(state_db, entry, tmp_path)[0] == (
        f"Run {entry.run_id}: stopped by a signal (exit 10)"
    )


@BOTH_LEDGERS
def test_a_run_killed_with_kill_9_has_no_end_and_reads_unknown(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, state_db: str
) -> None:
    config.update(skip_unchanged=True, state_db=state_db)

    _killed_after_the_first_state(config, tmp_path)

    (entry,) = ledger_runs(state_db)
    assert (entry.ended_at, entry.outcome, entry.exit_code, entry.counts) == (
        None,
        None,
        None,
        None,
    )
    listed = ledger_cli("--state-db", state_db, "runs", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = dict(zip(*(_cells(line) for line in listed.stdout.splitlines()), strict=True))
    assert (row["run"], row["outcome"], row["exit"], row["ended at"]) == (
        entry.run_id,
        "unknown (no end recorded)",
        "-",
        "-",
    )
    assert _how_it_ended(state_db, entry, tmp_path)[:2] == [
        f"Run {entry.run_id}: unknown (no end recorded)",
        f"  started {_utc(entry.started_at)}; no end recorded: the run was killed "
        "(kill -9, a lost machine) or is still going",
    ]
    assert PASSWORD not in listed.stdout + listed.stderr


def test_a_run_of_track_events_alone_is_recorded_from_its_events_stream(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(
        state_db=str(tmp_path / "state.db"), object_mapping={"clicks": {"object": "events"}}
    )

    run = run_target(config, user_events_input("track"), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    (entry,) = ledger_runs(config["state_db"])
    assert f"This run is in the ledger: userpilot-ledger jobs --run {entry.run_id}" in run.stderr
    assert entry.counts is not None
    assert (entry.outcome, entry.counts["total"]["events_sent"]) == ("completed", 2)
    shown = ledger_cli(
        "--config", _write_config(config, tmp_path), "jobs", "--run", entry.run_id, cwd=tmp_path
    )
    assert shown.stdout.splitlines()[0] == f"Run {entry.run_id}: completed (exit 0)"
    assert shown.stdout.splitlines()[-1] == (
        f"No jobs of run {entry.run_id} are in the sync history (a run keeps one with "
        "skip_unchanged, hard_delete or events_api import)."
    )


def _write_config(config: dict[str, Any], tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return "config.json"


def test_runs_lists_the_newest_first_and_jsonl_carries_the_whole_summary(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    first = run_target(config, users_input(range(3)), tmp_path=tmp_path)
    second = run_target(config, users_input(range(4)), tmp_path=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))

    table = ledger_cli("--config", "config.json", "runs", cwd=tmp_path)
    newest = ledger_cli("--config", "config.json", "runs", "--limit", "1", cwd=tmp_path)
    jsonl = ledger_cli("--config", "config.json", "runs", "--format", "jsonl", cwd=tmp_path)
    nonsense = ledger_cli("--config", "config.json", "runs", "--limit", "0", cwd=tmp_path)

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    rows = [dict(zip(_cells(lines[0]), _cells(line), strict=True)) for line in lines[1:]]
    assert [(r["run"], r["outcome"], r["rows sent"], r["unchanged"]) for r in rows] == [
        (_run_id(second.stderr), "completed", "1", "3"),
        (_run_id(first.stderr), "completed", "3", "0"),
    ]
    assert newest.stdout.splitlines()[1:] == lines[1:2]
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["summary"] for r in records] == [second.summary, first.summary]
    assert records[0]["account"] == account_scope(sandbox.url, API_KEY)
    assert nonsense.returncode == 2 and "not a whole number above 0" in nonsense.stderr
    for shown in (table, jsonl):
        assert API_KEY not in shown.stdout + shown.stderr


# The README's examples


def _readme_block(heading: str) -> tuple[list[str], list[str]]:
    """The first ``sh`` command and the ``text`` block after it, under ``heading``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n### {heading}\n")
    section = text[start : text.index("\n#", start + 1)]
    found = re.search(r"```sh\n(userpilot-ledger .*?)\n```\n\n```text\n(.*?)```", section, re.S)
    assert found, f"the README's {heading} example is missing"
    return found[1].split()[1:], found[2].splitlines()


def test_the_readme_runs_example_lists_each_way_a_run_ends(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """Completed, failed, the guard, SIGTERM and kill -9, newest first, as the README shows."""
    config.update(skip_unchanged=True, hard_delete=True, state_db=str(tmp_path / "state.db"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert run_target(config, full_table_copy(1, range(20)), tmp_path=tmp_path).returncode == 0
    sandbox.set_faults(fail_jobs=1)
    assert run_target(config, users_input([20, 21]), tmp_path=tmp_path).returncode == 4
    sandbox.set_faults()
    assert run_target(config, full_table_copy(2, range(2)), tmp_path=tmp_path).returncode == 14
    _sigterm_after_the_first_state(config, tmp_path, range(30, 33))
    _killed_after_the_first_state(config, tmp_path, range(40, 43))
    argv, expected = _readme_block("Runs")

    shown = ledger_cli(*argv, cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert _cells(lines[0]) == _cells(expected[0])
    # Everything but times, run ids and the failed job's id and object is as documented.
    variable = {"started at", "run", "ended at", "reason"}
    columns = [i for i, name in enumerate(_cells(expected[0])) if name not in variable]
    assert [[_cells(line)[i] for i in columns] for line in lines[1:]] == [
        [_cells(line)[i] for i in columns] for line in expected[1:]
    ]
    # The reasons' first sentences; the failed job's id is this run's own.
    job_id = re.compile(r"bulk:jobs:\S+")
    assert [job_id.sub("JOB", _cells(line)[-1]) for line in lines[1:]] == [
        job_id.sub("JOB", _cells(line)[-1]) for line in expected[1:]
    ]


def test_the_readme_events_example_shows_a_users_events_by_name_and_time(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        track = run_target(
            user_events_config(sandbox, "state.db", "track"),
            user_events_input("track"),
            tmp_path=tmp_path,
        )
        imported = user_events_config(sandbox, "state.db", "import")
        (tmp_path / "config.json").write_text(json.dumps(imported))
        again = run_target(imported, user_events_input("import"), tmp_path=tmp_path)
        argv, expected = _readme_block("Events in history")
        import_job = next(j["job_id"] for j in sandbox.jobs() if j["type"] == "events_import")

        shown = ledger_cli(*argv, cwd=tmp_path)
        only = ledger_cli(*argv, "--object", "events", cwd=tmp_path)
        exported = ledger_cli(
            "--config", "config.json", "export", "--format", "jsonl", cwd=tmp_path
        )

    assert (track.returncode, again.returncode) == (0, 0), again.stderr[-3000:]
    assert shown.returncode == 0, shown.stderr
    profile, events = shown.stdout.split("\n\n")
    documented_profile, documented_events = "\n".join(expected).split("\n\n")
    assert _cells(profile.splitlines()[0]) == _cells(documented_profile.splitlines()[0])
    assert len(profile.splitlines()) == len(documented_profile.splitlines())
    lines, documented = events.splitlines(), documented_events.splitlines()
    assert lines[:2] == documented[:2]  # the heading line and the columns
    # Event, via, outcome, stream and key as documented; an import keeps the event's own time.
    assert [_cells(line)[1:4] + _cells(line)[6:] for line in lines[2:]] == [
        _cells(line)[1:4] + _cells(line)[6:] for line in documented[2:]
    ]
    assert [_cells(line)[0] for line in lines[4:]] == [_cells(line)[0] for line in documented[4:]]
    assert {_cells(line)[4] for line in lines[4:]} == {import_job}
    assert {_cells(line)[5] for line in lines[4:]} == {_run_id(again.stderr)}
    assert {_cells(line)[5] for line in lines[2:4]} == {_run_id(track.stderr)}
    assert only.stdout == events
    # One export row per event key, the user in ``id``; the profile once.
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    events_rows = [r for r in rows if r["object"] == "events"]
    assert [r["object"] for r in rows].count("users") == 1
    assert sorted((r["event_key"], r["id"], r["state"]) for r in events_rows) == [
        ('["clicks",["c-1"]]', "u-7", "event accepted"),
        ('["clicks",["c-2"]]', "u-7", "event accepted"),
        ('["events",["i-1"]]', "u-7", "event imported"),
        ('["events",["i-2"]]', "u-7", "event imported"),
    ]
    assert {r["event_time"] for r in events_rows if r["state"] == "event imported"} == {
        "2026-03-01T09:30:00Z",
        "2026-03-02T14:05:00Z",
    }


# Without a run


def test_runs_on_a_ledger_from_before_runs_were_recorded_is_a_sentence(tmp_path: Path) -> None:
    from test_ledger_cli import Place

    place = Place(str(tmp_path / "state.db"))
    place.make(6)

    shown = ledger_cli("--state-db", place.state_db, "runs", cwd=tmp_path)
    jobs = ledger_cli("--state-db", place.state_db, "jobs", "--run", "run-1", cwd=tmp_path)

    assert shown.returncode == 2
    assert "from a release before runs were recorded (version 7)" in shown.stderr
    assert place.versions() == [1, 2, 3, 4, 5, 6]
    assert jobs.returncode == 0, jobs.stderr
    assert jobs.stdout.splitlines()[1].split()[1] == "run-1"  # the jobs, without a run's end


def test_a_run_is_in_the_ledger_before_its_tap_sends_anything(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    """The row goes in as the run starts, before the tap sends anything."""
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    run = TargetProcess(config, tmp_path)
    try:
        entries = eventually(lambda: _runs_if_any(config["state_db"]), timeout=20)
    finally:
        run.kill()

    assert [(e.outcome, e.ended_at) for e in entries] == [(None, None)]


def _runs_if_any(state_db: str) -> list[RunEntry]:
    try:
        return ledger_runs(state_db)
    except ConfigurationError:  # the run has not made its ledger yet
        return []
