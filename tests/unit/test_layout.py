"""The package's layout keeps one direction: no module imports itself back through others.

Imports are read from the source (``ast``), those inside functions and under ``TYPE_CHECKING``
included: an import inside a function was how the old ledger modules hid the circle they made.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "target_userpilot"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of the package it imports, wherever it does."""
    modules = {_module_name(path, package): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here[: len(here) - (node.level - 1)]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                for alias in node.names:
                    # `from package import module` imports the module; else the name is in base.
                    full = f"{base}.{alias.name}"
                    imported.add(full if full in modules else base)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import one another (strongly connected, more than one)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    graph = import_graph()
    assert "target_userpilot.ledger.store" in graph["target_userpilot.ledger.factory"]
    assert circles(graph) == []


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    package = tmp_path / "target_userpilot"
    (package / "ledger").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ledger" / "__init__.py").write_text("")
    (package / "ledger" / "sqlite.py").write_text("from .factory import open_ledger\n")
    (package / "ledger" / "factory.py").write_text(
        "def open_ledger():\n    from target_userpilot.ledger import sqlite\n"
    )

    assert circles(import_graph(package)) == [
        ["target_userpilot.ledger.factory", "target_userpilot.ledger.sqlite"]
    ]
