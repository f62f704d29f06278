"""The README, the pages under docs/, meltano.yml and the Hub definition tell one story, and every
relative link in the documentation leads somewhere: read as text, with the package's own tables.

Where ``--about`` and the generator scripts run as processes: ``tests/e2e/test_docs_process.py``;
the README's recipes in real runs: ``tests/integration/test_docs_in_a_run.py``."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.readme import broken_links, recipes, section

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import hub_definition  # noqa: E402 - a script module, importable once scripts/ is on the path

import target_userpilot  # noqa: E402
from target_userpilot.errors import EXIT_CODES  # noqa: E402

README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = REPO / "docs"
#: Every documentation file whose links must resolve: the README and each page it links to.
DOC_FILES = [README_PATH, *sorted(DOCS.glob("*.md"))]


def _loader() -> dict[str, Any]:
    return hub_definition.loader_in_meltano_yml(REPO / "meltano.yml")


def _page(name: str) -> str:
    """The text of ``docs/<name>``."""
    return (DOCS / name).read_text(encoding="utf-8")


# meltano.yml and --about


def test_readme_shows_the_loader_as_meltano_yml_declares_it() -> None:
    snippet = re.search(r"```yaml\n(plugins:.*?)```", section("Meltano"), re.S)
    assert snippet, "the README's Meltano section shows the loader's meltano.yml entry"
    shown = yaml.safe_load(snippet.group(1))["plugins"]["loaders"][0]
    loader = _loader()
    for key, value in shown.items():
        assert loader[key] == value, key


# Exit codes (docs/troubleshooting.md) and the connection check (README)


def _documented_exit_codes(page: str) -> set[int]:
    """The exit codes that head a row of the page's tables."""
    return {int(code) for code in re.findall(r"^\| (\d+) \|", page, re.M)}


def test_troubleshooting_page_documents_every_exit_code() -> None:
    documented = _documented_exit_codes(_page("troubleshooting.md"))
    assert documented >= {0, 1, *EXIT_CODES.values()}


def test_exit_code_check_notices_a_missing_row() -> None:
    drifted = re.sub(r"^\| 9 \|.*\n", "", _page("troubleshooting.md"), flags=re.M)
    assert not _documented_exit_codes(drifted) >= {0, 1, *EXIT_CODES.values()}


def test_readme_explains_the_connection_check() -> None:
    assert "target-userpilot --check-connection --config" in README
    for code in (3, 8, 9):
        assert re.search(rf"exit(s| code)? {code}\b", section("Checking the connection")), code


# stream_maps recipes, run exactly as the README writes them


def test_every_readme_recipe_is_tested() -> None:
    tested = {
        "Rename an id column",
        "Fill Userpilot's reserved fields",
        "Drop PII columns",
        "Route a `contacts` stream to users",
        # tests/integration/test_deletes.py and test_events.py run these
        "Delete profiles a source marks with its own column",
        "Send a table whose columns have other names as events",
    }
    assert set(recipes()) == tested


# The README as the entry point, and links that lead somewhere


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_readme_links_every_docs_page() -> None:
    linked = {Path(target).name for target in re.findall(r"\]\(docs/([^)#\s]+)", README)}
    assert linked == {page.name for page in DOCS.glob("*.md")}


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_link_check_notices_a_missing_page_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sandbox.md").write_text("# The local sandbox\n\n## From Python\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [the sandbox](docs/sandbox.md#from-python), [gone](docs/gone.md), "
        "[renamed](docs/sandbox.md#from-java) and [home](https://example.com/x.md).\n"
    )

    assert broken_links(readme) == [
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
def test_each_package_docstring_names_its_modules_and_their_roles(package: Path) -> None:
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


def test_package_docstring_check_notices_a_missing_module(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text('"""Two rooms.\n\n- ``a.py``: one\n"""\n')
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    assert _listed_modules(tmp_path) == {"a.py": "one"}


def test_development_page_maps_the_top_of_the_package() -> None:
    """docs/development.md's layout table names every top-level module and subpackage."""
    package = REPO / "target_userpilot"
    modules = {p.name for p in package.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}}
    subpackages = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}

    documented = _first_column(section("Module layout", _page("development.md")))

    assert documented == modules | subpackages, _table_drift(documented, modules | subpackages)


#: The sections of docs/development.md that map the package: paths and names there are code's.
MAP_SECTIONS = ("Module layout", "How work travels", "Waits and time")
_PATH = re.compile(r"`([\w./*-]+(?:\.py|/))`")
_NAME = re.compile(r"`([A-Z]\w*)\.(\w+)")


def _map_text() -> str:
    page = _page("development.md")
    return "".join(section(title, page) for title in MAP_SECTIONS)


def _missing_paths(text: str) -> list[str]:
    """Backticked file and folder paths that are in none of the places the map names them from:
    the package, the repository's root or ``scripts/``."""
    roots = [REPO / "target_userpilot", REPO, REPO / "scripts"]
    return sorted(
        {path for path in _PATH.findall(text) if not any((root / path).exists() for root in roots)}
    )


def _package_classes() -> dict[str, ast.ClassDef]:
    """Every class of the package by name (the names the docs use are unique in it)."""
    classes: dict[str, ast.ClassDef] = {}
    for path in sorted((REPO / "target_userpilot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, node)
    return classes


def _attributes(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> set[str]:
    """What ``cls`` defines or inherits from a class of the package: methods, class
    attributes and the ``self.<name>`` its methods set."""
    names: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            names |= _attributes(classes[base.id], classes)
    return names


def _unknown_names(text: str) -> list[str]:
    """``Class.attribute`` names of the text that the package's classes do not have."""
    classes = _package_classes()
    return sorted(
        f"{cls}.{attr}"
        for cls, attr in set(_NAME.findall(text))
        if cls not in classes or attr not in _attributes(classes[cls], classes)
    )


def test_development_page_names_only_paths_the_repository_has() -> None:
    assert _missing_paths(_map_text()) == []


def test_development_page_names_only_functions_the_package_has() -> None:
    """The map says where a job is awaited or a stop acted on by naming functions: they exist."""
    assert _unknown_names(_map_text()) == []


def test_map_checks_notice_a_path_or_a_name_that_is_gone() -> None:
    text = (
        "`lanes/jobs.py`, `lanes/gone.py`, `input/`, `JobLane._follow`, `JobLane._gone`, `Nope.x`"
    )

    assert _missing_paths(text) == ["lanes/gone.py"]
    assert _unknown_names(text) == ["JobLane._gone", "Nope.x"]


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


def test_development_page_lists_every_private_or_final_sdk_override() -> None:
    documented = _first_column(section("Overrides of SDK methods", _page("development.md")))
    overrides = _sdk_overrides()
    assert documented == overrides, _table_drift(documented, overrides)
