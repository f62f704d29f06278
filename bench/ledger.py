"""The ledger's cost: a skip_unchanged rerun of unchanged records, with each backend.

    python bench/ledger.py [--records 100000] [--quick]

A first run loads the records into a sandbox answering instantly and fills the ledger (and its sync
history); the rerun of the same input finds every row unchanged, so it sends nothing and its time is
the target's own work plus the ledger's lookups. Both are measured for a SQLite file and for a
PostgreSQL database on loopback (a throwaway cluster started from the machine's binaries, as the
tests do), next to the do-nothing SDK target (``bench/noop_target.py``, with and without the SDK's
record validation) and the target's dry run on the same input. Figures are printed, never judged,
and written to ``bench/results/ledger.json``.

The sync history's own cost per row is measured on the ledger directly, for each backend: the
writes of one 10,000-row job (its entries, the pruning to ``ledger_history_entries``, its end),
first for new profiles and then for profiles that already have a full history to prune.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import generate  # bench/ is on sys.path: run as `python bench/ledger.py`
from run import Bench, Run, Sizes, _instant_config

from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.store import JOB, SentJob
from target_userpilot.sandbox import Sandbox

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
from support import pg  # noqa: E402 - the tests' throwaway PostgreSQL, from tests/support/

API_KEY = "bench-key"


def _figures(records: int, run: Run) -> dict[str, Any]:
    return {
        "seconds": round(run.seconds, 2),
        "records_per_second": round(records / run.seconds),
        "max_rss_mb": round(run.max_rss_mb, 1),
    }


def measure(work: Path, records: int, repeats: int) -> dict[str, Any]:
    """Time the baselines once per repeat, then a first run and the reruns per backend."""
    bench = Bench(work, Sizes(), target_python=sys.executable)
    path = generate.write(work / "users.jsonl", generate.distinct_users(records))
    results: dict[str, Any] = {"records": records, "repeats": repeats}
    server = pg.PostgresServer() if pg.missing() is None else None
    try:
        if server is not None:
            server.start()
        with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
            base = _instant_config(sandbox)
            dry = {**base, "dry_run": True, "output_dir": str(work / "dry-run")}
            results["noop"] = _best(records, [bench.noop(base, path) for _ in range(repeats)])
            # The SDK's own jsonschema validation dominates the do-nothing target's time; without
            # it, the baseline is the SDK's reading and dispatching alone: the stricter one.
            quick = {**base, "validate_records": False}
            results["noop_validate_off"] = _best(
                records, [bench.noop(quick, path) for _ in range(repeats)]
            )
            results["dry_run"] = _best(records, [bench.target(dry, path) for _ in range(repeats)])
            backends = {"sqlite": str(work / "state.db")}
            if server is not None:
                backends["postgresql"] = server.url
            for name, state_db in backends.items():
                sandbox.reset()
                config = {**base, "skip_unchanged": True, "state_db": state_db}
                first = bench.target(config, path)
                reruns = [bench.target(config, path) for _ in range(repeats)]
                total = reruns[-1].summary["total"]
                if total["unchanged"] != records or total["rows_sent"] != 0:
                    raise RuntimeError(f"{name}: the rerun sent rows: {total}")
                results[name] = {
                    "first_run": _figures(records, first),
                    "rerun": _best(records, reruns),
                    "history": history_cost(state_db),
                }
    finally:
        if server is not None:
            server.remove()
    return results


def history_cost(state_db: str, rows: int = 10_000, keep: int = 3) -> dict[str, float]:
    """Microseconds per row of the history writes of one job: new profiles, then full ones."""
    ledger = open_ledger(state_db)
    scope = "https://bench account:history"
    ids = [(f"h-{i}", bytes(16)) for i in range(rows)]
    timings = []
    try:
        for n in range(keep + 2):
            job = SentJob(f"job-{n}", "bench", JOB, "users", "users", rows, time.time())
            started = time.perf_counter()
            ledger.record_sent(scope, job, ids, keep)
            ledger.record_outcome(scope, job.job_id, "completed", time.time())
            timings.append(time.perf_counter() - started)
    finally:
        ledger.close()
    return {
        "new_profiles_us_per_row": round(timings[0] / rows * 1e6, 1),
        "pruning_us_per_row": round(min(timings[keep:]) / rows * 1e6, 1),
    }


def _best(records: int, runs: list[Run]) -> dict[str, Any]:
    return _figures(records, min(runs, key=lambda run: run.seconds))


def render(figures: dict[str, Any]) -> str:
    """A small table of the figures."""
    n = figures["records"]
    noop = figures["noop_validate_off"]["seconds"]
    lines = [
        f"skip_unchanged rerun of {n:,} unchanged records (best of {figures['repeats']}), "
        "sandbox answering instantly",
        f"   {'':<42}{'seconds':>9}{'records/s':>12}{'x do-nothing*':>14}{'max RSS':>10}",
    ]

    def row(label: str, f: dict[str, Any]) -> None:
        lines.append(
            f"   {label:<42}{f['seconds']:>9.2f}{f['records_per_second']:>12,}"
            f"{f['seconds'] / noop:>13.2f}x{f['max_rss_mb']:>7.0f} MB"
        )

    row("do-nothing SDK target", figures["noop"])
    row("do-nothing SDK target, validate off*", figures["noop_validate_off"])
    row("target, dry run (no ledger)", figures["dry_run"])
    for name, title in (("sqlite", "SQLite file"), ("postgresql", "PostgreSQL (loopback)")):
        if name not in figures:
            lines.append(f"   {title}: not measured (no PostgreSQL server binaries)")
            continue
        row(f"{title}: first run (loads)", figures[name]["first_run"])
        row(f"{title}: unchanged rerun", figures[name]["rerun"])
        history = figures[name]["history"]
        lines.append(
            f"   {title}: sync history per row sent: {history['new_profiles_us_per_row']} µs "
            f"(new profiles), {history['pruning_us_per_row']} µs (history full, pruned)"
        )
    lines.append("   (* the baseline of the ratio; the target's own runs validate records)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="5,000 records, once")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "ledger.json")
    args = parser.parse_args(argv)
    records, repeats = (5_000, 1) if args.quick else (args.records, args.repeats)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="target-userpilot-ledger-bench-") as work:
        figures = measure(Path(work), records, repeats)
    figures["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(render(figures))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
