"""Last write wins: rows for one Userpilot profile reach Userpilot in input order.

Whatever stream they come from and however batches are cut, the profile ends where the input's
last word says (issue 9 item 2). Run with several batch sizes, so that the rows of one profile
fall in one batch, in consecutive batches, and in batches far apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import USER_SCHEMA, record, schema, state, user
from support.runner import RunTarget

BATCH_SIZES = [1, 2, 7, 50, 10_000]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_two_streams_updating_one_profile_end_at_the_later_value(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, batch_size: int, run_target: RunTarget
) -> None:
    config["batch_size_rows"] = batch_size
    messages = [
        schema("billing_users", USER_SCHEMA, ["id"]),
        schema("crm_users", USER_SCHEMA, ["id"]),
        # Filler rows in the second stream first, so its batch is the older one.
        *[record("crm_users", user(i)) for i in range(100, 110)],
        *[record("billing_users", user(i, plan=f"old-{i}")) for i in range(20)],
        *[record("crm_users", user(i, plan=f"NEW-{i}")) for i in range(20)],
        state({"done": True}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    profiles = sandbox.profiles("users")
    assert {profiles[str(i)]["metadata"]["plan"] for i in range(20)} == {
        f"NEW-{i}" for i in range(20)
    }
    assert run.states == [{"done": True}]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_a_user_moved_between_companies_by_two_streams_ends_in_the_last_company(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, batch_size: int, run_target: RunTarget
) -> None:
    config["batch_size_rows"] = batch_size
    messages = [
        schema("memberships_a", USER_SCHEMA, ["id"]),
        schema("memberships_b", USER_SCHEMA, ["id"]),
        record("memberships_b", user(7, company_id="c-first")),
        record("memberships_a", user(7, company_id="c-second")),
        record("memberships_b", user(7, company_id="c-third")),
        record("memberships_a", user(8, company_id="c-x")),
        record("memberships_a", user(7, company_id="c-last")),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.profiles("users")["7"]["company_id"] == "c-last"


@pytest.mark.parametrize("batch_size", [1, 3, 10_000])
def test_streams_duplicated_by_stream_maps_keep_input_order(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, batch_size: int, run_target: RunTarget
) -> None:
    """``__source__`` copies a stream; both copies feed the same users, in input order."""
    config["batch_size_rows"] = batch_size
    config["stream_maps"] = {"users_copy": {"__source__": "users"}}
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i, plan="first")) for i in range(5)],
        *[record("users", user(i, plan="second")) for i in range(5)],
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert {p["metadata"]["plan"] for p in sandbox.profiles("users").values()} == {"second"}


def test_rows_merged_across_streams_are_counted_once_per_stream(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("a_users", USER_SCHEMA, ["id"]),
        schema("b_users", USER_SCHEMA, ["id"]),
        record("a_users", user(1, plan="a")),
        record("b_users", user(1, plan="b")),
        record("b_users", user(2, plan="b")),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    streams = run.summary["streams"]
    assert run.summary["total"]["rows_sent"] == 2
    assert streams["a_users"]["received"] == 1
    assert streams["b_users"]["received"] == 2
    # a_users' record was folded into b_users' later row of user 1: merged on a_users, and
    # both rows sent count for b_users (each record accounted for on its own stream).
    assert (streams["a_users"]["merged"], streams["a_users"]["rows_sent"]) == (1, 0)
    assert (streams["b_users"]["merged"], streams["b_users"]["rows_sent"]) == (0, 2)
    assert sandbox.profiles("users")["1"]["metadata"]["plan"] == "b"


def test_a_job_shared_by_two_streams_counts_once_in_the_total(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["batch_size_rows"] = 4
    messages = [
        schema("a_users", USER_SCHEMA, ["id"]),
        schema("b_users", USER_SCHEMA, ["id"]),
        *[record("a_users", user(i)) for i in range(3)],
        *[record("b_users", user(i)) for i in range(10, 13)],
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.stats()["jobs"] == 2  # [a0 a1 a2 b10] and [b11 b12]
    streams, total = run.summary["streams"], run.summary["total"]
    assert (streams["a_users"]["jobs"], streams["b_users"]["jobs"]) == (1, 2)
    assert total["jobs"] == 2
    # b_users' rows were in both jobs: its job time is the run's.
    assert total["job_seconds"] == pytest.approx(streams["b_users"]["job_seconds"], abs=0.002)
    assert "Sent 6 rows to Userpilot in 2 jobs" in run.stderr
