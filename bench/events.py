"""Events: the pace reached against a track limit, and what the ledger costs per event.

    python bench/events.py [--events 4000] [--limit 12000] [--quick]

1. **Pace.** The real target (``python -m target_userpilot``) sends ``--events`` events about
   users it loads first, with ``events_per_minute`` set to the sandbox's track limit (12,000 a
   minute by default: twenty times Userpilot's, so the figure comes in seconds). Printed: events
   per minute between the first and the last event the sandbox received, the share of the limit
   that is, and the 429s met.
2. **The ledger's cost per event.** On a SQLite file, and on PostgreSQL on loopback when its
   binaries are on the machine (the tests' throwaway cluster): recording one accepted key (one
   transaction per event, as the lane does) and looking keys up 500 at a time (as the lane
   does); and end to end, a rerun of the same input, where every event is skipped as already
   sent, in microseconds per event.

Figures are printed, never judged, and written to ``bench/results/events.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from target_userpilot.lanes.events import LOOKAHEAD
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.sandbox import Sandbox

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
from support import pg  # noqa: E402 - the tests' throwaway PostgreSQL, from tests/support/

API_KEY = "bench-key"
USERS = 200


def _messages(events: int) -> list[dict[str, Any]]:
    users = {"id": {"type": "integer"}, "email": {"type": "string"}}
    event = {
        "event_id": {"type": "string"},
        "user_id": {"type": "integer"},
        "event_name": {"type": "string"},
        "invoice": {"type": "object"},
    }
    out: list[dict[str, Any]] = [
        {
            "type": "SCHEMA",
            "stream": "users",
            "schema": {"properties": users},
            "key_properties": ["id"],
        },
        {
            "type": "SCHEMA",
            "stream": "events",
            "schema": {"properties": event},
            "key_properties": ["event_id"],
        },
    ]
    out += [
        {"type": "RECORD", "stream": "users", "record": {"id": i, "email": f"u{i}@example.com"}}
        for i in range(USERS)
    ]
    for i in range(events):
        rec = {
            "event_id": f"e-{i}",
            "user_id": i % USERS,
            "event_name": "invoice_paid",
            "invoice": {"amount": i * 1.5, "currency": "EUR", "lines": [1, 2]},
        }
        out.append({"type": "RECORD", "stream": "events", "record": rec})
    out.append({"type": "STATE", "value": {"events": events}})
    return out


def _run_target(
    config: dict[str, Any], input_path: Path, work: Path
) -> tuple[float, dict[str, Any]]:
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    start = time.perf_counter()
    with input_path.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            stdin=stdin,
            capture_output=True,
            cwd=work,
            env=dict(os.environ),
            check=False,
        )
    seconds = time.perf_counter() - start
    stderr = proc.stderr.decode()
    if proc.returncode != 0:
        raise SystemExit(f"the target failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    line = next(x for x in stderr.splitlines() if x.startswith("TARGET_USERPILOT_SUMMARY "))
    return seconds, json.loads(line.split(" ", 1)[1])


def measure_pace(work: Path, events: int, limit: float) -> dict[str, Any]:
    """Send ``events`` at ``events_per_minute = limit`` to a sandbox enforcing ``limit``."""
    input_path = work / "events.singer"
    input_path.write_text("".join(json.dumps(m) + "\n" for m in _messages(events)))
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=limit) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "events_per_minute": limit,
            "rows_per_minute": 1e9,
            "batch_wait_seconds": 0.1,
            "state_db": str(work / "state.db"),
        }
        seconds, summary = _run_target(config, input_path, work)
        received = sandbox.events()
        stats = sandbox.stats()
        arrivals = [e["at"] for e in received]
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        rate = (len(arrivals) - 1) / span * 60 if span else 0.0
        # Rerun: every event is in the ledger, so each costs a lookup and nothing else.
        sandbox.reset()
        rerun_seconds, rerun = _run_target(config, input_path, work)
    return {
        "events": events,
        "limit_per_minute": limit,
        "events_received": len(received),
        "events_per_minute": round(rate),
        "share_of_limit": round(rate / limit, 3),
        "rate_limited_429": stats["by_endpoint"]["track"]["rate_limited"],
        "run_seconds": round(seconds, 2),
        "summary_events_sent": summary["total"]["events_sent"],
        "rerun_seconds": round(rerun_seconds, 2),
        "rerun_skipped": rerun["total"]["events_skipped"],
    }


def measure_ledger(state_db: str, events: int) -> dict[str, Any]:
    """Microseconds per event: recording a key alone, and looking keys up in chunks."""
    keys = [json.dumps(["events", [f"e-{i}"]]) for i in range(events)]
    store = open_ledger(state_db)
    try:
        start = time.perf_counter()
        for key in keys:
            store.add_accepted_events("https://bench", "events", [key])
        record = (time.perf_counter() - start) / events
        start = time.perf_counter()
        for begin in range(0, events, LOOKAHEAD):
            found = store.accepted_events(
                "https://bench", "events", keys[begin : begin + LOOKAHEAD]
            )
            assert len(found) == len(keys[begin : begin + LOOKAHEAD])
        lookup = (time.perf_counter() - start) / events
    finally:
        store.close()
    return {
        "record_one_key_us": round(record * 1e6, 1),
        "lookup_per_event_us": round(lookup * 1e6, 1),
    }


def main() -> None:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--limit", type=float, default=12_000)
    parser.add_argument("--quick", action="store_true", help="400 events: check the bench works")
    args = parser.parse_args()
    events = 400 if args.quick else args.events
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        work = Path(tmp)
        pace = measure_pace(work, events, args.limit)
        ledger = {"sqlite": measure_ledger(str(work / "ledger-bench.db"), events)}
        if pg.missing() is None:
            server = pg.PostgresServer()
            server.start()
            try:
                ledger["postgresql"] = measure_ledger(server.url, events)
            finally:
                server.remove()
    pace["rerun_us_per_event"] = round(pace["rerun_seconds"] / events * 1e6)
    results = {"pace": pace, "ledger": ledger}
    print(
        f"Pace: {pace['events_per_minute']:,} events a minute against a limit of "
        f"{args.limit:,.0f} ({pace['share_of_limit']:.1%}), {pace['rate_limited_429']} HTTP 429; "
        f"{pace['events_received']} of {events} events received in {pace['run_seconds']} s."
    )
    for backend, cost in ledger.items():
        print(
            f"Ledger ({backend}): recording one accepted key {cost['record_one_key_us']} us, "
            f"looking one up (500 at a time) {cost['lookup_per_event_us']} us per event."
        )
    print(
        f"A rerun skipping all {pace['rerun_skipped']} events as already sent (SQLite) took "
        f"{pace['rerun_seconds']} s ({pace['rerun_us_per_event']} us per event, start-up "
        "included)."
    )
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "events.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
