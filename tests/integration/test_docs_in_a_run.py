"""The README's ``stream_maps`` recipes work exactly as written (their JSON is read from
README.md, not copied here), in real runs against the sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import record, schema, state
from support.readme import readme_recipe
from support.runner import RunTarget

# stream_maps recipes, run exactly as the README writes them


PEOPLE = {
    "id": {"type": "integer"},
    "full_name": {"type": ["string", "null"]},
    "email": {"type": ["string", "null"]},
    "phone": {"type": ["string", "null"]},
    "signup_date": {"type": ["string", "null"], "format": "date-time"},
    "address": {"type": ["object", "null"], "properties": {"city": {"type": "string"}}},
    "plan": {"type": ["string", "null"]},
}


def _person(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": i,
        "full_name": f"Person {i}",
        "email": f"p{i}@example.com",
        "phone": f"+41 79 000 00 {i:02d}",
        "signup_date": "2024-02-29T12:00:00+01:00",
        "address": {"city": "Basel"},
        "plan": "pro",
    } | extra


def _load(
    run_target: RunTarget,
    config: dict[str, Any],
    recipe: dict[str, Any],
    messages: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    run = run_target({**config, **recipe}, messages, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]


def test_recipe_rename_an_id_column(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    recipe = readme_recipe("Rename an id column")
    messages = [schema("users", PEOPLE, ["id"]), *[record("users", _person(i)) for i in (1, 2)]]

    _load(run_target, config, recipe, messages, tmp_path)

    users = sandbox.profiles("users")
    assert sorted(users) == ["1", "2"]
    assert "id" not in users["1"]["metadata"]
    assert "user_id" not in users["1"]["metadata"]
    assert users["1"]["metadata"]["full_name"] == "Person 1"


def test_recipe_fill_userpilots_reserved_fields(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    recipe = readme_recipe("Fill Userpilot's reserved fields")
    messages = [schema("users", PEOPLE, ["id"]), record("users", _person(7))]

    _load(run_target, config, recipe, messages, tmp_path)

    metadata = sandbox.profiles("users")["7"]["metadata"]
    assert metadata["name"] == "Person 7"
    assert metadata["created_at"] == "2024-02-29T12:00:00+01:00"
    assert "full_name" not in metadata
    assert "signup_date" not in metadata


def test_recipe_drop_pii_columns(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    recipe = readme_recipe("Drop PII columns")
    users_schema = schema("users", PEOPLE, ["id"])
    # Userpilot already holds an email for user 3 from an earlier load without the recipe.
    _load(run_target, config, {}, [users_schema, record("users", _person(3))], tmp_path)

    messages = [
        users_schema,
        record("users", _person(3, plan="enterprise")),
        record("users", _person(4)),
        state({"done": True}),
    ]
    _load(run_target, config, recipe, messages, tmp_path)

    users = sandbox.profiles("users")
    assert users["3"]["metadata"]["plan"] == "enterprise"
    assert users["3"]["metadata"]["email"] == "p3@example.com"  # kept, not removed
    assert set(users["4"]["metadata"]) == {"full_name", "signup_date", "plan"}


def test_recipe_route_a_contacts_stream_to_users(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    recipe = readme_recipe("Route a `contacts` stream to users")
    contacts = {
        "contact_id": {"type": "string"},
        "account_id": {"type": ["integer", "null"]},
        "email": {"type": ["string", "null"]},
    }
    messages = [
        schema("contacts", contacts, ["contact_id"]),
        record("contacts", {"contact_id": "ct-1", "account_id": 42, "email": "a@example.com"}),
        record("contacts", {"contact_id": "ct-2", "account_id": None, "email": "b@example.com"}),
    ]

    _load(run_target, config, recipe, messages, tmp_path)

    users = sandbox.profiles("users")
    assert sorted(users) == ["ct-1", "ct-2"]
    assert users["ct-1"]["company_id"] == "42"
    assert users["ct-1"]["metadata"] == {"email": "a@example.com"}
    assert users["ct-2"]["company_id"] is None
    assert sandbox.profiles("companies") == {}


def test_invalid_stream_maps_is_a_configuration_error_without_a_traceback(
    tmp_path: Path, run_target: RunTarget
) -> None:
    config = {"dry_run": True, "stream_maps": {"users": {"plan": "no_such_function(plan)"}}}
    messages = [schema("users", PEOPLE, ["id"]), record("users", _person(1))]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 2
    assert "target-userpilot stopped: Invalid stream_maps configuration" in run.stderr
    assert "Traceback" not in run.stderr
