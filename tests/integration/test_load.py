"""Loads: the real target, in process, over real HTTP into the sandbox."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from target_userpilot.clock import SimulatedClock
from target_userpilot.sandbox import Sandbox

from support.messages import (
    API_KEY,
    COMPANY_SCHEMA,
    USER_SCHEMA,
    record,
    schema,
    state,
    user,
    users_messages,
)
from support.runner import RunTarget
from support.simulated import add_rows, simulated_run, simulated_sandbox


def _user_record(i: int) -> dict[str, Any]:
    return user(
        i,
        name=f"Zoë Ñúñez {i}" if i % 7 == 0 else f"User {i}",
        address={"city": "Zürich" if i % 2 else "Lisboa", "geo": {"lat": 47.37, "lon": 8.54}},
        tags=["beta", "ünïcode"] if i % 5 == 0 else [],
        signed_up_at="2024-03-01T10:00:00+02:00",
        score=i / 4,
        active=i % 2 == 0,
    )


def _expected_user(i: int) -> dict[str, Any]:
    """What the contract says user ``i`` looks like in Userpilot (written out, not computed
    with the code under test)."""
    rec = _user_record(i)
    metadata = {
        "email": rec["email"],
        "name": rec["name"],
        "plan": rec["plan"],
        "address__city": rec["address"]["city"],
        "address__geo__lat": 47.37,
        "address__geo__lon": 8.54,
        "tags": '["beta","ünïcode"]' if i % 5 == 0 else "[]",
        "signed_up_at": "2024-03-01T10:00:00+02:00",
        "score": i / 4,
        "active": i % 2 == 0,
    }
    if i % 10 == 0:  # updated later in the input: plan changed, email removed with a null
        metadata["plan"] = "enterprise"
        del metadata["email"]
    return {"user_id": str(i), "company_id": f"c-{i % 40}", "metadata": metadata}


def test_profiles_land_exactly_as_the_contract_says(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    n_users = 3000
    messages = [
        schema("companies", COMPANY_SCHEMA, ["company_id"]),
        *[
            record("companies", {"company_id": f"c-{c}", "name": f"Company {c}", "employees": c})
            for c in range(30)
        ],
        schema(
            "accounts",
            {"account_ref": {"type": "string"}, "name": {"type": "string"}},
            ["account_ref"],
        ),
        *[
            record("accounts", {"account_ref": f"c-{c}", "name": f"Acct {c}"})
            for c in range(30, 40)
        ],
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", _user_record(i)) for i in range(n_users)],
        state({"bookmarks": {"users": "first-pass"}}),
        *[
            record("users", {"id": i, "plan": "enterprise", "email": None})
            for i in range(0, n_users, 10)
        ],
        state({"bookmarks": {"users": "done"}}),
    ]
    config["object_mapping"] = {"accounts": {"object": "companies"}}

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states[-1] == {"bookmarks": {"users": "done"}}
    users = sandbox.profiles("users")
    assert len(users) == n_users
    for i in range(n_users):
        assert users[str(i)] == _expected_user(i), i
    companies = sandbox.profiles("companies")
    assert set(companies) == {f"c-{c}" for c in range(40)}
    assert companies["c-3"]["metadata"] == {"name": "Company 3", "employees": 3}
    assert companies["c-35"]["metadata"] == {"name": "Acct 35"}
    assert all(u["company_id"] in companies for u in users.values())
    assert sandbox.stats()["conflicts_own"] == 0


def test_25000_users_go_up_in_three_jobs_one_at_a_time(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(config, users_messages(25_000, state_every=5000), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    jobs = sandbox.jobs()
    assert sorted(j["total_rows"] for j in jobs) == [5000, 10_000, 10_000]
    assert all(j["status"] == "completed" for j in jobs)
    assert len(sandbox.profiles("users")) == 25_000
    stats = sandbox.stats()
    assert stats["conflicts_own"] == 0
    assert run.summary["total"]["rows_sent"] == 25_000
    assert run.summary["total"]["jobs"] == 3


def test_batch_is_flushed_before_it_would_pass_max_file_bytes(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["max_file_bytes"] = 20_000
    run = run_target(config, users_messages(1000), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    sizes = [j["file_size"] for j in sandbox.jobs()]
    assert len(sizes) > 1
    assert max(sizes) <= 20_000
    assert len(sandbox.profiles("users")) == 1000


def test_batch_size_rows_sets_the_rows_per_job(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["batch_size_rows"] = 400
    run = run_target(config, users_messages(1000), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(j["total_rows"] for j in sandbox.jobs()) == [200, 400, 400]


def test_server_refusing_over_1500_rows_still_receives_every_row(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_faults(max_rows=1500)
    run = run_target(config, users_messages(10_000), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 10_000
    completed = [j for j in sandbox.jobs() if j["status"] == "completed"]
    assert max(j["total_rows"] for j in completed) <= 1500
    assert sum(j["total_rows"] for j in completed) == 10_000
    assert "HTTP 413" in run.stderr


def test_another_clients_job_is_waited_out(tmp_path: Path) -> None:
    """In simulated time (``simulated.py``): the 409 pauses and the foreign job share one clock,
    so the wait is measured in simulated seconds, whatever the machine's load."""
    clock = SimulatedClock()
    with simulated_sandbox(clock) as sandbox:
        sandbox.hold_foreign_job(3.0)
        run = simulated_run(clock, sandbox, tmp_path, [])
        try:
            add_rows(run, "users", range(500))
            run.finish()
        finally:
            run.close()
        users = sandbox.profiles("users")
        stats = sandbox.stats()

    assert clock.now() >= 3.0
    assert len(users) == 500
    assert stats["conflicts_foreign"] >= 1
    assert stats["conflicts_own"] == 0
    assert clock.stalls == 0


def test_foreign_job_longer_than_job_timeout_fails_clearly(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.hold_foreign_job(60.0)
    config["job_timeout_seconds"] = 2
    run = run_target(config, users_messages(10), tmp_path=tmp_path)

    assert run.returncode == 5
    assert "job_timeout_seconds" in run.stderr
    assert run.states == []


def test_failed_job_ends_the_run_without_state_past_it(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["batch_size_rows"] = 100
    sandbox.set_faults(fail_jobs=1)
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i)) for i in range(100)],
        state({"bookmarks": {"users": 99}}),
        *[record("users", user(i)) for i in range(100, 150)],
        state({"bookmarks": {"users": 149}}),
    ]
    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 4
    assert run.states == []
    job_id = sandbox.jobs()[-1]["job_id"]
    assert job_id in run.stderr
    assert "ended with status 'failed'" in run.stderr
    assert sandbox.profiles("users") == {}


def test_refused_api_key_stops_at_once_with_a_clear_message(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["api_key"] = "wrong-key"
    run = run_target(config, users_messages(10), tmp_path=tmp_path)

    assert run.returncode == 3
    assert "Userpilot refused the API key (HTTP 401)" in run.stderr
    assert "api_url" in run.stderr
    assert sandbox.stats()["requests"] == 1  # no retries


def test_api_key_is_sent_as_token_and_never_printed(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    os.environ.pop("TARGET_USERPILOT_API_KEY", None)
    run = run_target(config, users_messages(50), tmp_path=tmp_path, args=[])
    assert run.returncode == 0
    assert API_KEY not in run.stdout + run.stderr
    assert len(sandbox.profiles("users")) == 50


def test_schema_change_mid_stream_keeps_updates_in_order(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """Rows sent under the old schema must not overwrite newer rows sent under the new one."""
    config["batch_size_rows"] = 50
    new_schema = {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "extra": {}}}
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", user(i, plan="old")) for i in range(30)],
        schema("users", new_schema, ["id"]),
        *[record("users", user(i, plan="new", extra=1)) for i in range(60)],
        state({"done": True}),
    ]
    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    profiles = sandbox.profiles("users")
    assert {p["metadata"]["plan"] for p in profiles.values()} == {"new"}
    assert run.states == [{"done": True}]


def test_a_nested_object_set_to_null_is_removed_from_the_profile(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1, address={"city": "Porto"})),
        state({"step": 1}),
    ]
    assert run_target(config, messages, tmp_path=tmp_path).returncode == 0
    assert sandbox.profiles("users")["1"]["metadata"]["address__city"] == "Porto"

    messages = [schema("users", USER_SCHEMA, ["id"]), record("users", {"id": 1, "address": None})]
    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    metadata = sandbox.profiles("users")["1"]["metadata"]
    assert not any(key.startswith("address") for key in metadata), metadata
    assert metadata["email"] == "user1@example.com"


def test_json_upload_format_lands_the_same_profiles_as_ndjson(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *[record("users", _user_record(i)) for i in range(300)],
        state({"done": True}),
    ]
    assert run_target(config, messages, tmp_path=tmp_path).returncode == 0
    as_ndjson = sandbox.profiles("users")
    sandbox.reset()

    config["upload_format"] = "json"
    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert sandbox.profiles("users") == as_ndjson
    assert [job["filename"] for job in sandbox.jobs()] == [None]  # a JSON body, not a file
    assert run.states == [{"done": True}]
