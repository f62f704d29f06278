"""The PostgreSQL ledger's server going away mid-run, on a server of the test's own: a restart is
waited for; a stop is a clear error (exit 9) that loses nothing confirmed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.clock import SimulatedClock
from target_userpilot.errors import LedgerUnavailable
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.retry import RetryPolicy
from target_userpilot.sandbox import Sandbox

from support.messages import (
    API_KEY,
    changed_users,
)
from support.pg import PASSWORD, PostgresServer
from support.runner import RunTarget, finish, start_target
from support.secrets import assert_no_secret
from support.unchanged import ledger_hashes
from support.waiting import eventually

# The server going away mid-run


def _slow_run_config(sandbox: Sandbox, config: dict[str, Any], state_db: str) -> dict[str, Any]:
    """Jobs of 100 rows taking about 0.3 s each: a run long enough to act during it."""
    rate = 100 / 0.3 * 60
    sandbox.set_rows_per_minute(rate)
    return {
        **config,
        "skip_unchanged": True,
        "state_db": state_db,
        "batch_size_rows": 100,
        "rows_per_minute": rate,
    }


def test_a_server_restarted_mid_run_is_waited_for(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    own_postgres: PostgresServer,
    run_target: RunTarget,
) -> None:
    settings = _slow_run_config(sandbox, config, own_postgres.url)
    proc = start_target(settings, changed_users(2000, state_every=100), tmp_path, "restart")
    eventually(lambda: sandbox.stats()["jobs"] >= 3, timeout=30, what="three jobs")

    own_postgres.restart()
    run = finish(proc)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states[-1] == {"done": 2000}
    scope = account_scope(sandbox.url, API_KEY)
    assert len(ledger_hashes(own_postgres.url, scope, range(2000))) == 2000
    rerun = run_target(settings, changed_users(2000), tmp_path=tmp_path)
    assert rerun.returncode == 0 and rerun.summary["total"]["rows_sent"] == 0


def test_a_server_stopped_mid_run_is_a_clear_error_and_loses_nothing_confirmed(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    own_postgres: PostgresServer,
    run_target: RunTarget,
) -> None:
    settings = _slow_run_config(sandbox, config, own_postgres.url)
    proc = start_target(settings, changed_users(2000, state_every=100), tmp_path, "stop")
    eventually(lambda: sandbox.stats()["jobs"] >= 3, timeout=30, what="three jobs")

    own_postgres.stop()
    run = finish(proc)

    assert run.returncode == 9, run.stderr[-3000:]
    assert "The ledger (state_db, PostgreSQL database 'ledger' at 127.0.0.1:" in run.stderr
    assert "rerun from the last STATE" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)
    own_postgres.start()
    # Every record before the last STATE is in the ledger: nothing Userpilot confirmed and
    # STATE covered was lost.
    last = max(s["upto"] for s in run.states if "upto" in s)
    scope = account_scope(sandbox.url, API_KEY)
    recorded = ledger_hashes(own_postgres.url, scope, range(2000))
    assert {str(i) for i in range(last + 1)} <= recorded.keys()

    rerun = run_target(settings, changed_users(2000), tmp_path=tmp_path)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.summary["total"]["unchanged"] >= last + 1
    assert len(sandbox.profiles("users")) == 2000
    assert len(ledger_hashes(own_postgres.url, scope, range(2000))) == 2000


def test_a_stop_ends_the_wait_for_a_lost_server_at_once(
    own_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger's reconnect is the retry policy's: its pauses are waited on the run's stop,
    so a stop ends the wait for a server that is gone at once, long before the policy would
    give up, with the ledger's own sentence and no password."""
    clock = SimulatedClock()  # pauses in simulated time: none passes while this thread works
    stop = threading.Event()
    ledger = open_ledger(own_postgres.url)
    ledger.retry = RetryPolicy(clock=clock)
    ledger.stop = stop
    try:
        ledger.accepted_events("scope", "events", ["k-1"])
        own_postgres.stop()
        outcome: list[BaseException] = []

        def look_up() -> None:
            try:
                ledger.accepted_events("scope", "events", ["k-2"])
            except LedgerUnavailable as exc:
                outcome.append(exc)

        thread = threading.Thread(target=look_up, daemon=True)
        thread.start()
        eventually(lambda: "retrying in" in caplog.text, timeout=10, what="a reconnect pause")
        stop.set()
        thread.join(10)
    finally:
        stop.set()
        ledger.close()

    assert len(outcome) == 1
    assert "the run stopped before it was tried again" in str(outcome[0])
    assert "rerun from the last STATE" in str(outcome[0])
    assert clock.now() < RetryPolicy().reconnect_max_time  # the stop ended it, not the time
    assert_no_secret(str(outcome[0]) + caplog.text, PASSWORD)
