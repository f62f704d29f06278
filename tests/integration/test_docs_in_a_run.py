"""The README's ``stream_maps`` recipes work exactly as written (their JSON is read from
README.md, not copied here), in real runs against the sandbox; the link checker notices a
missing page and a missing heading.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import record, schema, state
from support.readme import readme_recipe
from support.runner import RunTarget

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))


README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")
#: Every documentation file whose links must resolve: the README and each page it links to.


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


# The README as the entry point, and links that lead somewhere


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors: set[str] = set()
    text = _CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        # A repeated heading gets -1, -2, ... appended, as on GitHub.
        unique, n = slug, 0
        while unique in anchors:
            n += 1
            unique = f"{slug}-{n}"
        anchors.add(unique)
    return anchors


def _broken_links(path: Path) -> list[str]:
    """Relative links of a Markdown file that lead to no file, or to no heading of it."""
    broken = []
    text = _CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken


def test_link_check_notices_a_missing_page_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sandbox.md").write_text("# The local sandbox\n\n## From Python\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [the sandbox](docs/sandbox.md#from-python), [gone](docs/gone.md), "
        "[renamed](docs/sandbox.md#from-java) and [home](https://example.com/x.md).\n"
    )

    assert _broken_links(readme) == [
        "docs/gone.md: no such file",
        "docs/sandbox.md#from-java: no heading #from-java in sandbox.md",
    ]
