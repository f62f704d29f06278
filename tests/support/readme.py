"""The README read as the tests check it: its sections, its ``stream_maps`` recipes, and the
relative links of any Markdown file."""

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


# Links in Markdown

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def heading_anchors(path: Path) -> set[str]:
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


def broken_links(path: Path) -> list[str]:
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
        elif anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken
