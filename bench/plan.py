"""A plan's cost against the run it plans: 100,000 unchanged records, planned and rerun.

    python bench/plan.py [--records 100000] [--repeats 3]

The input of ``bench/ledger.py`` (distinct users): a first run loads it with ``skip_unchanged``
into a sandbox answering instantly and fills the ledger (SQLite); then, alternately, a plan of the
same input (``plan_path``) and a ``skip_unchanged`` rerun of it, each a process of its own. Both
find every row unchanged; the plan must take no longer than the rerun. Figures are printed, never
judged, and written to ``bench/results/plan.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import generate  # bench/ is on sys.path: run as `python bench/plan.py`
from run import Bench, Run, Sizes, _instant_config

from target_userpilot.sandbox import Sandbox

BENCH = Path(__file__).resolve().parent


def measure(work: Path, records: int, repeats: int) -> dict[str, Any]:
    """A first run, then ``repeats`` pairs of a plan and a rerun, alternating."""
    bench = Bench(work, Sizes(), target_python=sys.executable)
    path = generate.write(work / "users.jsonl", generate.distinct_users(records))
    with Sandbox(port=0, api_key="bench-key", rows_per_minute=0) as sandbox:
        config = {
            **_instant_config(sandbox),
            "skip_unchanged": True,
            "state_db": str(work / "state.db"),
        }
        bench.target(config, path)
        plans: list[Run] = []
        reruns: list[Run] = []
        plan_path = work / "plan.json"
        for _ in range(repeats):
            plans.append(bench.target({**config, "plan_path": str(plan_path)}, path))
            reruns.append(bench.target(config, path))
        planned = json.loads(plan_path.read_text(encoding="utf-8"))["total"]
        rerun = reruns[-1].summary["total"]
    if planned["unchanged"] != records or rerun["unchanged"] != records:
        raise RuntimeError(f"not every row was unchanged: plan {planned}, rerun {rerun}")
    return {
        "records": records,
        "repeats": repeats,
        "plan": _best(records, plans),
        "rerun": _best(records, reruns),
    }


def _best(records: int, runs: list[Run]) -> dict[str, Any]:
    best = min(runs, key=lambda run: run.seconds)
    return {
        "seconds": round(best.seconds, 2),
        "records_per_second": round(records / best.seconds),
        "max_rss_mb": round(best.max_rss_mb, 1),
        "all_seconds": [round(run.seconds, 2) for run in runs],
    }


def render(figures: dict[str, Any]) -> str:
    """A small table of the figures."""
    lines = [
        f"{figures['records']:,} unchanged records, SQLite ledger (best of {figures['repeats']})",
        f"   {'':<28}{'seconds':>9}{'records/s':>12}{'max RSS':>10}   every try",
    ]
    for label, name in (("plan (plan_path)", "plan"), ("skip_unchanged rerun", "rerun")):
        f = figures[name]
        lines.append(
            f"   {label:<28}{f['seconds']:>9.2f}{f['records_per_second']:>12,}"
            f"{f['max_rss_mb']:>7.0f} MB   {f['all_seconds']}"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure, print, and keep the figures in ``bench/results/plan.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as folder:
        figures = measure(Path(folder), args.records, args.repeats)
    print(render(figures))
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / "plan.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
