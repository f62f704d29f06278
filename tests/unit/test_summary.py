"""The run's summary is changed by the reading thread and every lane's threads: each of its
counters changes under its one lock (``RunSummary.add``, ``batch_done``, ...), except
``received``, which only the reading thread changes. Read from the package's source, since a
counter changed beside the lock loses a count only when two threads meet."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from target_userpilot.summary import RunSummary, StreamTally

PACKAGE = Path(__file__).resolve().parents[2] / "target_userpilot"
#: What the summary counts per stream; ``received`` is the reading thread's alone.
COUNTERS = {f.name for f in dataclasses.fields(StreamTally)} - {"object", "started", "finished"}
SHARED = COUNTERS - {"received"}


def _counters_changed_beside_the_lock(source: str) -> list[str]:
    """Assignments to a shared counter of a summary or a stream's tally, as source text."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr]
        if isinstance(node, ast.AugAssign):
            targets = [node.target]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Attribute) or target.attr not in SHARED:
                continue
            owner = ast.unparse(target.value)
            if "summary" in owner or "tally" in owner:
                found.append(ast.unparse(node))
    return found


def test_every_shared_counter_changes_under_the_summarys_lock() -> None:
    """Outside ``summary.py`` a counter changes only through the summary's locked methods."""
    beside = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "summary.py" and "sandbox" not in path.parts
        if (found := _counters_changed_beside_the_lock(path.read_text(encoding="utf-8")))
    }
    assert beside == {}


def test_the_counter_check_notices_a_change_beside_the_lock() -> None:
    source = (
        "summary.stream(name).events_unconfirmed += 1\n"
        "self._summary.streams[name].rejected = 3\n"
        "tally.received += 1\n"  # the reading thread's own counter
        "self.unconfirmed += 1\n"  # a lane's own counter, not the summary's
        'summary.add(name, "events_unconfirmed")\n'
    )

    assert _counters_changed_beside_the_lock(source) == [
        "summary.stream(name).events_unconfirmed += 1",
        "self._summary.streams[name].rejected = 3",
    ]


def test_add_counts_unconfirmed_events_per_stream() -> None:
    summary = RunSummary()
    summary.add("events", "events_unconfirmed")
    summary.add("events", "events_unconfirmed")

    assert summary.as_dict()["streams"]["events"]["events_unconfirmed"] == 2
