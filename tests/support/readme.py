"""The README read as the tests check it: its sections and its ``stream_maps`` recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str, text: str = README) -> str:
    """The section under ``## title`` (of the README unless told), up to the next ``## ``."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def recipes() -> dict[str, dict[str, Any]]:
    """Each recipe's JSON, by the bold title of the paragraph that introduces it."""
    recipes = {}
    part = section("`stream_maps` recipes")
    # A paragraph that starts with a bold title, then (before any other bold title) a JSON block.
    pattern = r"^\*\*(?P<title>[^*]+?)[.:]?\*\*(?:(?!\*\*).)*?```json\n(?P<json>.*?)```"
    for match in re.finditer(pattern, part, re.S | re.M):
        recipes[match["title"]] = json.loads(match["json"])
    return recipes


def readme_recipe(title: str) -> dict[str, Any]:
    found = recipes()
    assert title in found, f"README has no recipe {title!r}; it has {sorted(found)}"
    return found[title]
