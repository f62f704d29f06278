"""The ledger on a real PostgreSQL, through the real target.

The server is the one ``tests/support/pg.py`` starts from the machine's binaries; each test gets
its own schema (``search_path`` in the URL). The server going away mid-run:
``test_postgres_outage.py``; a published tap reading from it: ``test_tap_postgres.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import (
    API_KEY,
    changed_users,
)
from support.pg import PASSWORD, PostgresServer
from support.runner import RunTarget, finish, start_target
from support.secrets import assert_no_secret
from support.unchanged import check_later_rows_win_over_rows_in_flight

DEBUG = {"LOGLEVEL": "DEBUG", "TARGET_USERPILOT_LOGLEVEL": "DEBUG"}


# skip_unchanged with the ledger on PostgreSQL


def test_a_rerun_sends_nothing_and_changes_send_only_themselves(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres_state_db: str,
    run_target: RunTarget,
) -> None:
    config.update(skip_unchanged=True, state_db=postgres_state_db)
    first = run_target(config, changed_users(3000), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sandbox.stats()["rows_received"] == 3000

    rerun = run_target(config, changed_users(3000), tmp_path=tmp_path)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.summary["total"]["rows_sent"] == 0
    assert rerun.summary["total"]["unchanged"] == 3000
    assert sandbox.stats()["rows_received"] == 3000
    assert rerun.states == [{"done": 3000}]

    changed = frozenset(range(0, 3000, 30))
    third = run_target(config, changed_users(3000, changed), tmp_path=tmp_path)

    assert third.returncode == 0, third.stderr[-2000:]
    assert third.summary["total"]["rows_sent"] == len(changed) == 100
    assert sandbox.stats()["rows_received"] == 3100
    profiles = sandbox.profiles("users")
    assert {profiles[str(i)]["metadata"]["plan"] for i in changed} == {"changed"}


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_row_is_compared_with_rows_in_flight_on_postgresql(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres_state_db: str,
    batch_size: int,
    run_target: RunTarget,
) -> None:
    check_later_rows_win_over_rows_in_flight(
        run_target, sandbox, config, tmp_path, batch_size, postgres_state_db
    )


def test_two_concurrent_runs_sharing_the_database_agree(
    config: dict[str, Any], tmp_path: Path, postgres_state_db: str, run_target: RunTarget
) -> None:
    """Two accounts (two hosts) and two runs into one account, all at once, on one ledger."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as other_account:
        config.update(skip_unchanged=True, state_db=postgres_state_db, batch_size_rows=500)
        other = {**config, "api_url": other_account.url}
        runs = [
            start_target(config, changed_users(2000), tmp_path, "a1"),
            start_target(config, changed_users(2000), tmp_path, "a2"),
            start_target(other, changed_users(2000), tmp_path, "b"),
        ]
        finished = [finish(proc) for proc in runs]
        for run in finished:
            assert run.returncode == 0, run.stderr[-2000:]
        assert len(other_account.profiles("users")) == 2000

        # The ledger agrees with both accounts: nothing is sent again to either.
        for settings in (config, other):
            rerun = run_target(settings, changed_users(2000), tmp_path=tmp_path)
            assert rerun.returncode == 0, rerun.stderr[-2000:]
            assert rerun.summary["total"]["rows_sent"] == 0


# Configuration errors, before any input is read


def test_a_wrong_password_is_a_configuration_error_that_never_shows_it(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres: PostgresServer,
    run_target: RunTarget,
) -> None:
    wrong = "Wr0ng-pg-Secret-77aa"
    config.update(skip_unchanged=True, state_db=postgres.url_with(password=wrong))

    run = run_target(config, changed_users(10), tmp_path=tmp_path, env=DEBUG)

    assert run.returncode == 2, run.stderr[-2000:]
    assert f"PostgreSQL at 127.0.0.1:{postgres.port} refused the credentials" in run.stderr
    assert " DEBUG " in run.stderr or "DEBUG" in run.stderr  # the run did log at DEBUG
    assert_no_secret(run.stdout + run.stderr, wrong)
    assert sandbox.stats()["requests"] == 0


def test_a_run_at_debug_never_shows_the_password(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres_state_db: str,
    run_target: RunTarget,
) -> None:
    config.update(skip_unchanged=True, state_db=postgres_state_db)

    run = run_target(config, changed_users(300), tmp_path=tmp_path, env=DEBUG)

    assert run.returncode == 0, run.stderr[-2000:]
    assert "DEBUG" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)


def test_state_db_from_the_environment_as_meltano_sets_it(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres_state_db: str,
    run_target: RunTarget,
) -> None:
    env = {
        **DEBUG,
        "TARGET_USERPILOT_STATE_DB": postgres_state_db,
        "TARGET_USERPILOT_SKIP_UNCHANGED": "true",
    }
    first = run_target(
        config, changed_users(200), tmp_path=tmp_path, env=env, args=["--config", "ENV"]
    )
    assert first.returncode == 0, first.stderr[-2000:]

    rerun = run_target(
        config, changed_users(200), tmp_path=tmp_path, env=env, args=["--config", "ENV"]
    )

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.summary["total"]["unchanged"] == 200
    assert sandbox.stats()["rows_received"] == 200
    assert not list(tmp_path.glob(".target-userpilot"))  # no SQLite file beside it
    assert_no_secret(first.stdout + first.stderr + rerun.stdout + rerun.stderr, PASSWORD)


def test_a_missing_driver_names_the_extra_and_creates_no_folder(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres: PostgresServer,
    run_target: RunTarget,
) -> None:
    # psycopg2 is not installed: a real missing driver, for a URL that asks for it.
    config.update(skip_unchanged=True, state_db=postgres.url_with(scheme="postgresql+psycopg2"))

    run = run_target(config, changed_users(10), tmp_path=tmp_path)

    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'target-userpilot[postgres]'" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)
    assert not list(tmp_path.glob("postgresql*"))  # never taken as a file path
    assert sandbox.stats()["requests"] == 0


def test_psycopg_not_installed_names_the_extra(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    postgres: PostgresServer,
    run_target_process: RunTarget,
) -> None:
    # The extra not installed: a psycopg that cannot be imported shadows the real one (through
    # PYTHONPATH, which the interpreter reads when it starts: a process of its own).
    fake = tmp_path / "no-psycopg" / "psycopg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\")\n")
    config.update(skip_unchanged=True, state_db=postgres.url)
    path = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))

    run = run_target_process(config, changed_users(10), tmp_path=tmp_path, env={"PYTHONPATH": path})

    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'target-userpilot[postgres]'" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)
    assert sandbox.stats()["requests"] == 0
