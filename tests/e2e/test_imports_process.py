"""events_api import across kill -9 and SIGTERM: a rerun imports every event once and sends
none twice; a stop ends the wait for an earlier run's import job.

The rest runs in process: ``tests/integration/test_imports.py``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.events import (
    import_config,
    import_event,
    import_events_schema,
    imported_ids,
)
from support.messages import API_KEY, USER_SCHEMA, record, schema, state, user
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget, TargetProcess
from support.waiting import eventually


def test_kill_9_and_a_rerun_lose_nothing_and_duplicate_nothing_completed(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=6000) as sandbox:
        config = import_config(sandbox, tmp_path, batch_size_rows=40)
        messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
        messages += [record("users", user(i)) for i in range(50)]
        messages.append(state({"users": "done"}))
        for i in range(400):
            messages.append(record("events", import_event(i, i % 50)))
            if (i + 1) % 40 == 0:
                messages.append(state({"events": i}))
        running = TargetProcess(config, tmp_path, messages=messages)
        try:
            eventually(
                lambda: len(sandbox.imported_events()) >= 120, timeout=30, what="3 import jobs"
            )
        finally:
            running.proc.kill()
        running.drain()
        assert running.states, "no STATE before the kill"
        last = running.states[-1]
        assert last != {"events": 399}, "the run ended before the kill"
        resume = next(n for n, m in enumerate(messages) if m.get("value") == last) + 1
        rerun_input = messages[:2] + messages[resume:]
        sandbox.wait_idle()

        rerun = run_target(config, rerun_input, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        ids = imported_ids(sandbox)
        assert set(ids) == {f"e-{i}" for i in range(400)}
        # Only the events of a job that completed as the kill came could come twice.
        assert sum(ids.values()) - len(ids) <= 40


# --- Through crashes and lost answers: every event in Userpilot once ------------------------


def _events_only(n: int) -> list[dict[str, Any]]:
    """``n`` events of users loaded before (the Import API needs no user in this run)."""
    return [
        import_events_schema(),
        *(record("events", import_event(i, i)) for i in range(n)),
        state({"events": n}),
    ]


def _import_jobs(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [j for j in sandbox.jobs() if j["type"] == "events_import"]


def _import_polled(sandbox: Sandbox) -> bool:
    """A status poll of an import job arrived: the target has it, and recorded it first."""
    return any(
        r["method"] == "GET" and r["path"].startswith(("/v1/background_jobs/", "/v1/imports/"))
        for r in sandbox.request_log()
    )


@BOTH_LEDGERS
@pytest.mark.parametrize("end", ["completed before the rerun", "completed during it", "failed"])
def test_kill_9_during_an_import_job_and_a_rerun_import_every_event_once(
    tmp_path: Path, state_db: str, end: str, run_target: RunTarget
) -> None:
    messages = _events_only(50)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=60) as sandbox:  # 50 events: 50 s
        if end == "failed":
            sandbox.set_faults(fail_jobs=1)
        config = import_config(sandbox, tmp_path, state_db=state_db)
        running = TargetProcess(config, tmp_path, messages=messages)
        try:
            eventually(lambda: _import_polled(sandbox), timeout=30, what="a poll of the import")
        finally:
            running.kill()
        assert running.states == []
        if end == "completed during it":
            sandbox.set_rows_per_minute(3000)  # the rest of the job takes about a second
        else:
            sandbox.set_rows_per_minute(0)
            assert sandbox.wait_idle(10)

        rerun = run_target(config, messages, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(50)})
        assert rerun.states[-1] == {"events": 50}
        total = rerun.summary["total"]
        if end == "failed":
            assert len(_import_jobs(sandbox)) == 2
            assert (total["events_sent"], total["events_skipped"]) == (50, 0)
            assert "which failed" in rerun.stderr
        else:
            assert len(_import_jobs(sandbox)) == 1
            assert (total["events_sent"], total["events_skipped"]) == (0, 50)
            assert "which completed: its events count as sent" in rerun.stderr
        assert total["events_unconfirmed"] == 0


@BOTH_LEDGERS
@pytest.mark.parametrize("status_at", ["imports", "nowhere"])
def test_kill_9_before_the_upload_was_answered_and_a_rerun_send_no_event_twice(
    tmp_path: Path, state_db: str, status_at: str, run_target: RunTarget
) -> None:
    messages = _events_only(20)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at=status_at) as sandbox:
        # The file is imported; the answer is held back until the target is gone.
        sandbox.set_faults(slow_rate=1.0, slow_seconds=60.0, only="upload")
        config = import_config(sandbox, tmp_path, state_db=state_db)
        running = TargetProcess(config, tmp_path, messages=messages)
        try:
            eventually(lambda: _import_jobs(sandbox), timeout=30, what="the import job")
        finally:
            running.kill()
        sandbox.set_faults()

        rerun = run_target(config, messages, tmp_path=tmp_path)
        again = run_target(config, messages, tmp_path=tmp_path)

        assert rerun.returncode == again.returncode == 0, rerun.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(20)})
        assert sandbox.stats()["upload_attempts"] == 1
        total = rerun.summary["total"]
        assert total["events_skipped"] == 20
        if status_at == "nowhere":
            assert total["events_unconfirmed"] == 20
            assert "which lists no import job for it" in rerun.stderr
            assert "20 events got no clear answer from Userpilot" in rerun.stderr
        else:
            assert total["events_unconfirmed"] == 0
            assert "which completed: its events count as sent" in rerun.stderr
        assert again.summary["total"]["events_unconfirmed"] == 0  # settled once, for good
        assert "The events file" not in again.stderr


def test_kill_9_while_another_clients_job_holds_the_account_leaves_the_file_to_send(
    tmp_path: Path, run_target: RunTarget
) -> None:
    messages = _events_only(20)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        # Every try of the import meets 409 for three seconds from the first, however long the
        # process takes to start on a busy machine.
        sandbox.hold_foreign_job(3.0, at_upload=1)
        config = import_config(sandbox, tmp_path)
        running = TargetProcess(config, tmp_path, messages=messages)
        try:
            # Killed in the pause between two tries: the ledger then knows nothing arrived.
            eventually(
                lambda: "(HTTP 409); waiting" in running.stderr, timeout=30, what="a 409 pause"
            )
        finally:
            running.kill()

        rerun = run_target(config, messages, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(20)})
        total = rerun.summary["total"]
        assert (total["events_sent"], total["events_unconfirmed"]) == (20, 0)
        assert "never reached Userpilot" in rerun.stderr


def test_a_stop_signal_ends_the_wait_for_an_earlier_runs_import_job(
    tmp_path: Path, run_target: RunTarget
) -> None:
    messages = _events_only(30)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=30) as sandbox:  # a minute's job
        config = import_config(sandbox, tmp_path)
        first = TargetProcess(config, tmp_path, messages=messages)
        try:
            eventually(lambda: _import_polled(sandbox), timeout=30, what="a poll of the import")
        finally:
            first.kill()
        second = TargetProcess(config, tmp_path, messages=messages)
        eventually(lambda: "Waiting for import job" in second.stderr, timeout=30, what="the wait")
        second.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = second.drain()
        took = time.monotonic() - signalled
        assert code == 10, second.stderr[-3000:]
        assert took < 5, took
        assert sandbox.stats()["upload_attempts"] == 1

        sandbox.set_rows_per_minute(0)
        third = run_target(config, messages, tmp_path=tmp_path)

        assert third.returncode == 0, third.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(30)})
        assert third.summary["total"]["events_skipped"] == 30


def test_track_mode_says_when_import_files_of_earlier_runs_are_not_settled(
    tmp_path: Path, run_target: RunTarget
) -> None:
    messages = _events_only(5)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=60, events_per_minute=0) as sandbox:
        config = import_config(sandbox, tmp_path)
        running = TargetProcess(config, tmp_path, messages=messages)
        try:
            eventually(lambda: _import_polled(sandbox), timeout=30, what="a poll of the import")
        finally:
            running.kill()
        sandbox.set_rows_per_minute(0)
        track = {**config, "events_api": "track", "object_mapping": {}, "events_per_minute": 6000}
        users = [
            schema("users", USER_SCHEMA, ["id"]),
            *(record("users", user(i)) for i in range(5)),
        ]

        run = run_target(track, users + messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert "1 Import API file of earlier runs whose jobs were not settled" in run.stderr
