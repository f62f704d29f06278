"""Regenerate the README's settings table from `target-userpilot --about`, so the two never drift.

    python scripts/readme_settings.py          # rewrite the block in README.md in place
    python scripts/readme_settings.py --check  # exit 1 (and show a diff) if README.md is stale

The block sits between ``<!-- settings:start -->`` and ``<!-- settings:end -->``. It is built from
``--about --format=json``, the machine-readable form of ``--about --format=markdown``: the same
settings in the same order, plus each setting's type, which the markdown form leaves out, and with
``|`` and ``<`` escaped so that every row stays one table row on GitHub.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
NOTE = (
    "<!-- Generated from `target-userpilot --about` by `make readme` "
    "(scripts/readme_settings.py). Do not edit by hand. -->"
)


def about() -> dict[str, Any]:
    """The target's ``--about`` document, from this interpreter or else the project's .venv."""
    python = sys.executable
    # Run from the repository root, `-m target_userpilot` finds the package; it needs the SDK.
    if importlib.util.find_spec("singer_sdk") is None:
        venv_python = ROOT / ".venv" / "bin" / "python"
        if not venv_python.exists():
            sys.exit("target_userpilot is not installed here; run `make install` first.")
        python = str(venv_python)
    result = subprocess.run(
        [python, "-m", "target_userpilot", "--about", "--format=json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    about: dict[str, Any] = json.loads(result.stdout)
    return about


def render_block(about_doc: dict[str, Any] | None = None) -> str:
    """The whole block, markers included, exactly as it belongs in the README."""
    doc = about_doc if about_doc is not None else about()
    lines = [
        START,
        NOTE,
        "",
        "| Setting | Type | Default | Description |",
        "|:--------|:-----|:--------|:------------|",
    ]
    for name, schema in _settings(doc["settings"].get("properties", {})):
        lines.append(
            f"| `{name}` | {_type(schema)} | {_default(schema)} | {_cell(_description(schema))} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with its settings block replaced by ``block``."""
    start = text.find(START)
    end = text.find(END, start)
    if start < 0 or end < 0:
        msg = f"README.md has no {START} ... {END} block to fill."
        raise SystemExit(msg)
    return text[:start] + block + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with ``--check``, verify) the README's settings block."""
    parser = argparse.ArgumentParser(description="Regenerate the README's settings table.")
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)

    current = args.readme.read_text(encoding="utf-8")
    wanted = replace_block(current, render_block())
    return write_or_check(
        args.readme,
        current,
        wanted,
        check=args.check,
        make_target="readme",
        fresh=wanted == current,
    )


def write_or_check(
    path: Path, current: str, wanted: str, *, check: bool, make_target: str, fresh: bool
) -> int:
    """Write a generated file, or with ``check`` show how it differs and return 1."""
    name = path.name
    if fresh:
        print(f"{name} is up to date.")
        return 0
    if check:
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{name} (now)",
            tofile=f"{name} (from --about)",
        )
        sys.stdout.writelines(diff)
        print(f"\n{name} is out of date: run `make {make_target}`.", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted, encoding="utf-8")
    print(f"{name} regenerated.")
    return 0


def _settings(properties: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Settings in ``--about`` order; documented sub-settings follow their parent, dotted."""
    out = []
    for name, schema in properties.items():
        out.append((prefix + name, schema))
        children = schema.get("properties") if isinstance(schema, dict) else None
        if children:
            out += _settings(children, prefix=f"{prefix}{name}.")
    return out


def _types(schema: dict[str, Any]) -> list[str]:
    found: list[str] = []
    declared = schema.get("type")
    if isinstance(declared, str):
        found.append(declared)
    elif isinstance(declared, list):
        found += [t for t in declared if isinstance(t, str)]
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        if isinstance(option, dict):
            if "const" in option:
                found.append(f"`{option['const']}`")
            found += _types(option)
    unique = []
    for kind in found:
        if kind != "null" and kind not in unique:
            unique.append(kind)
    return unique


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        text = " \\| ".join(f"`{value}`" for value in schema["enum"] if value is not None)
    else:
        text = " or ".join(_types(schema)) or "any"
    if schema.get("secret"):
        text += ", secret"
    return text


def _default(schema: dict[str, Any]) -> str:
    if "default" not in schema or schema["default"] is None:
        return ""
    value = schema["default"]
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text.replace('|', chr(92) + '|')}`"


def _description(schema: dict[str, Any]) -> str:
    return str(schema.get("description") or schema.get("title") or "")


def _cell(text: str) -> str:
    """Table-safe text: one line, pipes escaped, no accidental HTML tags."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "\\<")


if __name__ == "__main__":
    sys.exit(main())
