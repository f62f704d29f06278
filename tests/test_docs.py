"""The README, the pages under docs/, `--about`, meltano.yml and the Hub definition tell one story,
the README's recipes work exactly as written (their JSON is read from README.md, not copied here),
and every relative link in the documentation leads somewhere."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import record, run_target, schema, state

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import hub_definition  # noqa: E402 - a script module, importable once scripts/ is on the path

import target_userpilot  # noqa: E402
from target_userpilot.errors import EXIT_CODES  # noqa: E402
from target_userpilot.settings import Settings  # noqa: E402

README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = REPO / "docs"
#: Every documentation file whose links must resolve: the README and each page it links to.
DOC_FILES = [README_PATH, *sorted(DOCS.glob("*.md"))]


@pytest.fixture(scope="module")
def about() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--about", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(result.stdout)


def _loader() -> dict[str, Any]:
    return hub_definition.loader_in_meltano_yml(REPO / "meltano.yml")


def _page(name: str) -> str:
    """The text of ``docs/<name>``."""
    return (DOCS / name).read_text(encoding="utf-8")


def _section(title: str, text: str = README) -> str:
    """The section under ``## title`` (of the README unless told), up to the next ``## ``."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


# Generated files are up to date


@pytest.mark.parametrize("script", ["readme_settings.py", "hub_definition.py"])
def test_generated_docs_match_about(script):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_check_mode_notices_a_stale_readme(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(README.replace("| `dry_run` | boolean | `false` |", "| `dry_run` | bool | |"))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "readme_settings.py"),
            "--check",
            "--readme",
            stale,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "make readme" in result.stderr


def test_check_mode_notices_a_stale_hub_definition(tmp_path):
    stale = tmp_path / "definition.yml"
    text = (REPO / "plugin" / "loaders" / "target-userpilot--userpilot.yml").read_text()
    stale.write_text(text.replace("value: 7200", "value: 3600"))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "hub_definition.py"), "--check", "--output", stale],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "make hub" in result.stderr


# meltano.yml and --about


def test_meltano_yml_declares_every_setting_of_about_with_its_kind_and_default(about):
    declared = {s["name"]: s for s in _loader()["settings"]}
    expected = dict(hub_definition.settings_of(about))

    assert sorted(declared) == sorted(expected)
    for name, schema_ in expected.items():
        setting = declared[name]
        assert setting.get("kind", "string") == hub_definition.meltano_kind(schema_), name
        assert setting.get("value") == schema_.get("default"), name
        assert bool(setting.get("sensitive")) == bool(schema_.get("secret")), name
        if "enum" in schema_:
            assert [o["value"] for o in setting["options"]] == schema_["enum"], name


def test_meltano_yml_describes_the_targets_own_settings_as_about_does(about):
    declared = {s["name"]: s for s in _loader()["settings"]}
    # The target's own settings; the SDK's built-ins may keep wording of their own there.
    for name in Settings.__dataclass_fields__:
        described = " ".join(declared[name]["description"].split())
        assert described == about["settings"]["properties"][name]["description"], name


def test_meltano_yml_capabilities_are_the_targets(about):
    loader = _loader()
    assert sorted(loader["capabilities"]) == sorted(about["capabilities"])
    assert loader["executable"] == about["name"]
    assert loader["namespace"] == about["name"].replace("-", "_")


def test_readme_shows_the_loader_as_meltano_yml_declares_it():
    snippet = re.search(r"```yaml\n(plugins:.*?)```", _section("Meltano"), re.S)
    assert snippet, "the README's Meltano section shows the loader's meltano.yml entry"
    shown = yaml.safe_load(snippet.group(1))["plugins"]["loaders"][0]
    loader = _loader()
    for key, value in shown.items():
        assert loader[key] == value, key


# Exit codes (docs/troubleshooting.md) and the connection check (README)


def _documented_exit_codes(page: str) -> set[int]:
    """The exit codes that head a row of the page's tables."""
    return {int(code) for code in re.findall(r"^\| (\d+) \|", page, re.M)}


def test_troubleshooting_page_documents_every_exit_code():
    documented = _documented_exit_codes(_page("troubleshooting.md"))
    assert documented >= {0, 1, *EXIT_CODES.values()}


def test_exit_code_check_notices_a_missing_row():
    drifted = re.sub(r"^\| 9 \|.*\n", "", _page("troubleshooting.md"), flags=re.M)
    assert not _documented_exit_codes(drifted) >= {0, 1, *EXIT_CODES.values()}


def test_readme_explains_the_connection_check():
    assert "target-userpilot --check-connection --config" in README
    for code in (3, 8, 9):
        assert re.search(rf"exit(s| code)? {code}\b", _section("Checking the connection")), code


# stream_maps recipes, run exactly as the README writes them


def _recipes() -> dict[str, dict[str, Any]]:
    """Each recipe's JSON, by the bold title of the paragraph that introduces it."""
    recipes = {}
    section = _section("`stream_maps` recipes")
    # A paragraph that starts with a bold title, then (before any other bold title) a JSON block.
    pattern = r"^\*\*(?P<title>[^*]+?)[.:]?\*\*(?:(?!\*\*).)*?```json\n(?P<json>.*?)```"
    for match in re.finditer(pattern, section, re.S | re.M):
        recipes[match["title"]] = json.loads(match["json"])
    return recipes


def _recipe(title: str) -> dict[str, Any]:
    recipes = _recipes()
    assert title in recipes, f"README has no recipe {title!r}; it has {sorted(recipes)}"
    return recipes[title]


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


def _load(config: dict, recipe: dict, messages: list[dict], tmp_path: Path) -> None:
    run = run_target({**config, **recipe}, messages, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]


def test_recipe_rename_an_id_column(sandbox, config, tmp_path):
    recipe = _recipe("Rename an id column")
    messages = [schema("users", PEOPLE, ["id"]), *[record("users", _person(i)) for i in (1, 2)]]

    _load(config, recipe, messages, tmp_path)

    users = sandbox.profiles("users")
    assert sorted(users) == ["1", "2"]
    assert "id" not in users["1"]["metadata"]
    assert "user_id" not in users["1"]["metadata"]
    assert users["1"]["metadata"]["full_name"] == "Person 1"


def test_recipe_fill_userpilots_reserved_fields(sandbox, config, tmp_path):
    recipe = _recipe("Fill Userpilot's reserved fields")
    messages = [schema("users", PEOPLE, ["id"]), record("users", _person(7))]

    _load(config, recipe, messages, tmp_path)

    metadata = sandbox.profiles("users")["7"]["metadata"]
    assert metadata["name"] == "Person 7"
    assert metadata["created_at"] == "2024-02-29T12:00:00+01:00"
    assert "full_name" not in metadata
    assert "signup_date" not in metadata


def test_recipe_drop_pii_columns(sandbox, config, tmp_path):
    recipe = _recipe("Drop PII columns")
    users_schema = schema("users", PEOPLE, ["id"])
    # Userpilot already holds an email for user 3 from an earlier load without the recipe.
    _load(config, {}, [users_schema, record("users", _person(3))], tmp_path)

    messages = [
        users_schema,
        record("users", _person(3, plan="enterprise")),
        record("users", _person(4)),
        state({"done": True}),
    ]
    _load(config, recipe, messages, tmp_path)

    users = sandbox.profiles("users")
    assert users["3"]["metadata"]["plan"] == "enterprise"
    assert users["3"]["metadata"]["email"] == "p3@example.com"  # kept, not removed
    assert set(users["4"]["metadata"]) == {"full_name", "signup_date", "plan"}


def test_recipe_route_a_contacts_stream_to_users(sandbox, config, tmp_path):
    recipe = _recipe("Route a `contacts` stream to users")
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

    _load(config, recipe, messages, tmp_path)

    users = sandbox.profiles("users")
    assert sorted(users) == ["ct-1", "ct-2"]
    assert users["ct-1"]["company_id"] == "42"
    assert users["ct-1"]["metadata"] == {"email": "a@example.com"}
    assert users["ct-2"]["company_id"] is None
    assert sandbox.profiles("companies") == {}


def test_every_readme_recipe_is_tested():
    tested = {
        "Rename an id column",
        "Fill Userpilot's reserved fields",
        "Drop PII columns",
        "Route a `contacts` stream to users",
        # tests/test_deletes.py and tests/test_events.py run these
        "Delete profiles a source marks with its own column",
        "Send a table whose columns have other names as events",
    }
    assert set(_recipes()) == tested


def test_invalid_stream_maps_is_a_configuration_error_without_a_traceback(tmp_path):
    config = {"dry_run": True, "stream_maps": {"users": {"plan": "no_such_function(plan)"}}}
    messages = [schema("users", PEOPLE, ["id"]), record("users", _person(1))]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 2
    assert "target-userpilot stopped: Invalid stream_maps configuration" in run.stderr
    assert "Traceback" not in run.stderr


# The README as the entry point, and links that lead somewhere


def test_readme_shows_the_two_commands():
    assert "make demo" in README
    assert "make test" in README


def test_readme_links_every_docs_page():
    linked = {Path(target).name for target in re.findall(r"\]\(docs/([^)#\s]+)", README)}
    assert linked == {page.name for page in DOCS.glob("*.md")}


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


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_relative_links_resolve(path):
    assert _broken_links(path) == []


def test_link_check_notices_a_missing_page_and_a_missing_heading(tmp_path):
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


# docs/development.md: the module layout and the overrides of SDK methods agree with the code


def _first_column(section: str) -> set[str]:
    """The code names that start the rows of a section's table."""
    return set(re.findall(r"^\| `([^`]+)`", section, re.M))


def _table_drift(documented: set[str], actual: set[str]) -> str:
    """What a docs/development.md table lacks and what it names in vain, for a failure message."""
    return (
        f"docs/development.md lacks rows for {sorted(actual - documented)} and has rows for "
        f"{sorted(documented - actual)}, which the code no longer has."
    )


def _listed_modules(package: Path) -> dict[str, str]:
    """The ``- ``name``: role`` lines of a package's ``__init__`` docstring, by name."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    return dict(re.findall(r"^- ``([\w./]+)``: (.+)$", doc, re.M))


def _packages() -> list[Path]:
    package = REPO / "target_userpilot"
    return [package, *sorted(p.parent for p in package.rglob("__init__.py") if p.parent != package)]


@pytest.mark.parametrize(
    "package", _packages(), ids=lambda p: str(p.relative_to(REPO / "target_userpilot")) or "."
)
def test_each_package_docstring_names_its_modules_and_their_roles(package):
    """The map a newcomer reads first: every module and subpackage, with its one role.

    A module is as long as its one purpose needs; what keeps the house in order is that each
    module's purpose is said where the package is opened, and stays true.
    """
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    if package.name == "target_userpilot":
        modules.discard("__main__.py")  # the package's face: ``python -m target_userpilot``
    modules |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    listed = _listed_modules(package)
    assert set(listed) == modules, (
        f"{package.relative_to(REPO)}/__init__.py lists {sorted(set(listed) - modules)} that do "
        f"not exist and lacks {sorted(modules - set(listed))}."
    )
    assert all(role.strip() for role in listed.values())


def test_package_docstring_check_notices_a_missing_module(tmp_path):
    (tmp_path / "__init__.py").write_text('"""Two rooms.\n\n- ``a.py``: one\n"""\n')
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    assert _listed_modules(tmp_path) == {"a.py": "one"}


def test_development_page_maps_the_top_of_the_package():
    """docs/development.md's layout table names every top-level module and subpackage."""
    package = REPO / "target_userpilot"
    modules = {p.name for p in package.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}}
    subpackages = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}

    documented = _first_column(_section("Module layout", _page("development.md")))

    assert documented == modules | subpackages, _table_drift(documented, modules | subpackages)


def _sdk_overrides() -> set[str]:
    """``Class.method`` for each method of ours that overrides a private or final SDK method."""
    found = set()
    modules = pkgutil.walk_packages(target_userpilot.__path__, "target_userpilot.")
    for info in modules:
        if info.name.endswith(".__main__"):
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            sdk_classes = [c for c in cls.__mro__[1:] if c.__module__.startswith("singer_sdk")]
            for name, value in vars(cls).items():
                # Methods and properties only; dunders are Python's, _abc_impl is abc's data.
                if name.startswith("__") or not hasattr(value, "__get__"):
                    continue
                inherited = next((vars(c)[name] for c in sdk_classes if name in vars(c)), None)
                if inherited is None:
                    continue
                if name.startswith("_") or getattr(inherited, "__final__", False):
                    found.add(f"{cls.__name__}.{name}")
    return found


def test_development_page_lists_every_private_or_final_sdk_override():
    documented = _first_column(_section("Overrides of SDK methods", _page("development.md")))
    overrides = _sdk_overrides()
    assert documented == overrides, _table_drift(documented, overrides)
