"""Which stream goes where, end to end: the real target against the sandbox over loopback HTTP.

Streams named by a tap with its schema prefix (tap-postgres's `public-companies`) route by their
table name; Meltano's loader test stream checks the connection and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import (
    COMPANY_SCHEMA,
    MELTANO_TEST_MESSAGES,
    USER_SCHEMA,
    record,
    schema,
    state,
)
from support.runner import RunTarget

#: What tap-postgres sends for a table `companies` of schema `public` (its key is `id`).
PG_COMPANY_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["string", "null"]},
        "employees": {"type": ["integer", "null"]},
    },
}


def test_schema_prefixed_stream_names_route_by_their_table_name(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    messages = [
        schema("public-companies", PG_COMPANY_SCHEMA, ["id"]),
        *[record("public-companies", {"id": i, "name": f"Co {i}"}) for i in range(1, 4)],
        schema("public-users", USER_SCHEMA, ["id"]),  # ids 1-3 too: no merging into companies
        *[record("public-users", {"id": i, "name": f"User {i}"}) for i in range(1, 4)],
        schema("crm.companies", COMPANY_SCHEMA, ["company_id"]),
        record("crm.companies", {"company_id": "c-9", "name": "Crm Co"}),
        schema(
            "public-events",
            {"user_id": {"type": "integer"}, "event_name": {"type": "string"}},
            ["user_id"],
        ),
        record("public-events", {"user_id": 1, "event_name": "signed_in"}),
        state({"done": True}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("companies")) == {"1", "2", "3", "c-9"}
    assert sandbox.profiles("companies")["2"]["metadata"] == {"name": "Co 2"}
    users = sandbox.profiles("users")
    assert set(users) == {"1", "2", "3"}
    assert users["1"]["metadata"] == {"name": "User 1"}  # no company name merged in
    assert [(e["user_id"], e["event_name"]) for e in sandbox.events()] == [("1", "signed_in")]
    streams = run.summary["streams"]
    assert streams["public-companies"]["object"] == "companies"
    assert streams["crm.companies"]["object"] == "companies"
    assert streams["public-events"]["object"] == "events"
    assert run.summary["total"]["merged"] == 0
    assert (
        "Stream 'public-companies' loads companies, identified by 'id' (by its table name "
        "'companies', after the tap's prefix)." in run.stderr
    )


def test_object_mapping_still_decides_for_a_prefixed_stream(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["object_mapping"] = {"public-companies": {"object": "users"}}
    messages = [
        schema("public-companies", PG_COMPANY_SCHEMA, ["id"]),
        record("public-companies", {"id": 1, "name": "Co 1"}),
    ]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"1"}
    assert sandbox.profiles("companies") == {}


def test_meltanos_loader_test_stream_checks_the_connection_and_writes_nothing(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    run = run_target(config, MELTANO_TEST_MESSAGES, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.profiles("users") == {} and sandbox.profiles("companies") == {}
    assert sandbox.events() == []
    calls = [(r["method"], r["endpoint"], r["status"]) for r in sandbox.request_log()]
    assert calls == [("GET", "list", 200)]  # the one read-only request, and no upload
    assert run.states == [{"bookmarks": {"meltano_test_stream": {"last_record": 1}}}]
    assert "Stream 'meltano_test_stream' is Meltano's loader test" in run.stderr
    assert "the API key was accepted" in run.stderr
    assert run.summary["streams"]["meltano_test_stream"]["received"] == 1
    assert run.summary["total"]["rows_sent"] == 0
    # Meltano fails the test on any output line that says "error" or "exception".
    assert not [line for line in run.stderr.lower().splitlines() if "error" in line]


def test_meltanos_loader_test_stream_in_a_dry_run_contacts_nothing(
    tmp_path: Path, run_target: RunTarget
) -> None:
    out = tmp_path / "batches"
    config = {"dry_run": True, "output_dir": str(out)}

    run = run_target(config, MELTANO_TEST_MESSAGES, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert "dry_run is on, so Userpilot was not contacted" in run.stderr
    assert not out.exists() or list(out.iterdir()) == []
