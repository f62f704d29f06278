"""skip_unchanged: rows Userpilot already confirmed are not sent again."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.memory.unchanged import ConfirmedRows
from target_userpilot.records.rows import encode_row
from target_userpilot.sandbox import Sandbox

from support.messages import USER_SCHEMA, changed_users, record, schema, state, user
from support.runner import RunTarget
from support.unchanged import check_later_rows_win_over_rows_in_flight


def test_identical_rerun_sends_nothing(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    first = run_target(config, changed_users(4000), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    uploads = sandbox.stats()["rows_received"]
    assert uploads == 4000

    second = run_target(config, changed_users(4000), tmp_path=tmp_path)

    assert second.returncode == 0, second.stderr[-2000:]
    assert sandbox.stats()["rows_received"] == uploads
    assert second.summary["total"]["unchanged"] == 4000
    assert second.summary["total"]["rows_sent"] == 0
    assert second.states == [{"done": 4000}]


def test_only_changed_profiles_are_sent(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    assert run_target(config, changed_users(4000), tmp_path=tmp_path).returncode == 0
    before = sandbox.stats()["rows_received"]
    changed = set(range(0, 4000, 40))

    run = run_target(config, changed_users(4000, changed), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert sandbox.stats()["rows_received"] - before == len(changed) == 100
    assert run.summary["total"]["rows_sent"] == 100
    profiles = sandbox.profiles("users")
    assert all(profiles[str(i)]["metadata"]["plan"] == "changed" for i in changed)


def test_rows_of_a_failed_job_are_not_remembered(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(skip_unchanged=True, state_db=str(tmp_path / "state.db"))
    sandbox.set_faults(fail_jobs=1)
    assert run_target(config, changed_users(300), tmp_path=tmp_path).returncode == 4
    sandbox.set_faults()

    run = run_target(config, changed_users(300), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert run.summary["total"]["rows_sent"] == 300
    assert len(sandbox.profiles("users")) == 300


def test_without_the_setting_everything_is_sent_again(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert run_target(config, changed_users(200), tmp_path=tmp_path).returncode == 0
    assert run_target(config, changed_users(200), tmp_path=tmp_path).returncode == 0
    assert sandbox.stats()["rows_received"] == 400


def test_damaged_state_db_is_a_clear_configuration_error(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    damaged = tmp_path / "state.db"
    damaged.write_bytes(b"this is not a database" * 100)
    config.update(skip_unchanged=True, state_db=str(damaged))

    run = run_target(config, changed_users(10), tmp_path=tmp_path)

    assert run.returncode == 2
    assert "state_db" in run.stderr and "delete it" in run.stderr
    assert sandbox.stats()["requests"] == 0


# Issue 9 item 1: a row is compared with what Userpilot will hold once every earlier row is
# applied, not with a ledger entry that rows still in flight are about to replace.


@pytest.mark.parametrize("batch_size", [1, 50, 10_000])
def test_a_row_is_compared_with_rows_still_in_flight_not_the_ledger(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, batch_size: int, run_target: RunTarget
) -> None:
    check_later_rows_win_over_rows_in_flight(
        run_target, sandbox, config, tmp_path, batch_size, str(tmp_path / "state.db")
    )


# The filter on its own, batch by batch, as the reading thread and the watcher call it


def _sealed(tmp_path: Path, plans: dict[str, str]) -> SealedBatch:
    """A sealed users batch with one row per ``id: plan``."""
    lines = [encode_row({"user_id": i, "metadata": {"plan": p}}) for i, p in plans.items()]
    handle, path = tempfile.mkstemp(dir=tmp_path, suffix=".ndjson")
    with os.fdopen(handle, "wb") as out:
        out.writelines(lines)
    return SealedBatch("users", "users", path, len(lines), sum(len(line) for line in lines))


def test_a_row_in_flight_stays_the_reference_until_a_newer_one_is_confirmed(tmp_path: Path) -> None:
    rows = ConfirmedRows(str(tmp_path / "state.db"), "host")
    pro, free = _sealed(tmp_path, {"u1": "pro"}), _sealed(tmp_path, {"u1": "free"})
    assert rows.drop_unchanged(pro) == 0
    assert rows.drop_unchanged(free) == 0  # compared with pro in flight, not an empty ledger

    rows.confirm(pro)  # free is newer and still in flight: it stays the reference
    assert rows.drop_unchanged(_sealed(tmp_path, {"u1": "free"})) == 1
    assert rows.drop_unchanged(_sealed(tmp_path, {"u1": "pro"})) == 0
    rows.confirm(free)

    confirmed = rows.ledger.row_hashes("host", "users", ["u1"])
    assert free.fingerprints is not None
    assert confirmed == {"u1": free.fingerprints[0][1]}
    rows.close()


def test_a_deleted_profile_leaves_the_ledger_and_is_sent_again(tmp_path: Path) -> None:
    rows = ConfirmedRows(str(tmp_path / "state.db"), "host")
    first = _sealed(tmp_path, {"u1": "free", "u2": "free"})
    rows.drop_unchanged(first)
    rows.confirm(first)
    assert rows.drop_unchanged(_sealed(tmp_path, {"u1": "free"})) == 1

    rows.forget("users", ["u1"])

    assert rows.ledger.row_hashes("host", "users", ["u1", "u2"]).keys() == {"u2"}
    again = _sealed(tmp_path, {"u1": "free"})
    assert rows.drop_unchanged(again) == 0
    # Userpilot's daily deletion may erase the profile made again: it stays out of the ledger.
    rows.confirm(again)
    assert rows.ledger.row_hashes("host", "users", ["u1"]) == {}
    rows.close()


def test_a_job_completing_after_a_delete_does_not_bring_the_profile_back(tmp_path: Path) -> None:
    rows = ConfirmedRows(str(tmp_path / "state.db"), "host")
    in_flight = _sealed(tmp_path, {"u1": "pro"})
    rows.drop_unchanged(in_flight)

    rows.forget("users", ["u1"])
    rows.confirm(in_flight)

    assert rows.ledger.row_hashes("host", "users", ["u1"]) == {}
    rows.close()


def test_a_shared_ledger_is_left_open_for_its_owner(tmp_path: Path) -> None:
    ledger = open_ledger(str(tmp_path / "state.db"))
    rows = ConfirmedRows(ledger, "host")
    rows.close()

    assert ledger.row_hashes("host", "users", ["u1"]) == {}  # still usable
    ledger.close()


def test_two_accounts_on_one_host_sharing_a_ledger_each_get_their_profiles(
    tmp_path: Path, run_target: RunTarget
) -> None:
    """Staging and production on one host, one state_db: the second account is sent everything.

    Before entries were scoped by account, the second run said "unchanged=5 events_skipped=5"
    and exit 0 while its account received nothing.
    """
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *(record("users", user(i)) for i in range(5)),
        schema("events", {"event_id": {"type": "string"}, "user_id": {"type": "integer"}}),
        *(
            record("events", {"event_id": f"e{i}", "user_id": i, "event_name": "x"})
            for i in range(5)
        ),
        state({"done": 5}),
    ]
    state_db = str(tmp_path / "state.db")
    runs = []
    port = 0
    for key in ("staging-key-1a2b", "production-key-3c4d"):
        with Sandbox(port=port, api_key=key, rows_per_minute=0) as account:
            port = account.port  # the second account answers on the same host and port
            config = {
                "api_url": account.url,
                "api_key": key,
                "skip_unchanged": True,
                "state_db": state_db,
                "events_per_minute": 6000,
            }
            run = run_target(config, messages, tmp_path=tmp_path)
            assert run.returncode == 0, run.stderr[-2000:]
            assert len(account.profiles("users")) == 5
            assert len(account.events()) == 5
            runs.append(run)

    production = runs[1].summary["total"]
    assert production["rows_sent"] == 5 and production["unchanged"] == 0
    assert production["events_sent"] == 5 and production["events_skipped"] == 0
