"""Historical events through the Import API: time and peak memory, beside track mode's time.

    python bench/imports.py [--events 100000] [--quick]

The real target (``python -m target_userpilot``) loads 1,000 users and then ``--events`` events
about them, each with the time it happened a year back, with ``events_api: import`` against the
sandbox, whose jobs complete at once: the figure is the target's own cost (reading, encoding,
spooling, uploading, the ledger), not Userpilot's. Printed, for the run and for one with a tenth
of the events (memory must not grow with the input): wall time, events a second, peak resident
memory of the target process, the import files and their largest size; then what Userpilot
itself needs for that many events each way: track mode at ``events_per_minute`` 600 (paced at
98 %), import mode at the bulk pages' 1,800 rows a minute (and the older 1,200).

Figures are printed, never judged, and written to ``bench/results/imports.json``.
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

from target_userpilot.lanes.pace import HEADROOM
from target_userpilot.records.imports import event_time
from target_userpilot.sandbox import Sandbox
from target_userpilot.summary import duration

BENCH = Path(__file__).resolve().parent
API_KEY = "bench-key"
USERS = 1000
FILE_ROWS = 10_000


def _write_input(path: Path, events: int) -> None:
    """The Singer input, streamed to disk: 1,000 users, then the events, then a STATE."""
    users = {"id": {"type": "integer"}, "email": {"type": "string"}}
    event = {
        "event_id": {"type": "string"},
        "user_id": {"type": "integer"},
        "event_name": {"type": "string"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "invoice": {"type": "object"},
    }
    with path.open("w") as out:
        for stream, props, key in (("users", users, "id"), ("events", event, "event_id")):
            message = {
                "type": "SCHEMA",
                "stream": stream,
                "schema": {"properties": props},
                "key_properties": [key],
            }
            out.write(json.dumps(message) + "\n")
        for i in range(USERS):
            rec = {"id": i, "email": f"u{i}@example.com"}
            out.write(json.dumps({"type": "RECORD", "stream": "users", "record": rec}) + "\n")
        for i in range(events):
            rec = {
                "event_id": f"e-{i}",
                "user_id": i % USERS,
                "event_name": "invoice_paid",
                "occurred_at": _occurred(i),
                "invoice": {"amount": i * 1.5, "currency": "EUR", "lines": [1, 2]},
            }
            out.write(json.dumps({"type": "RECORD", "stream": "events", "record": rec}) + "\n")
            if (i + 1) % 5000 == 0:
                out.write(json.dumps({"type": "STATE", "value": {"events": i}}) + "\n")


def _occurred(i: int) -> str:
    """When event ``i`` happened: spread over 2025, in a +01:00 zone."""
    day, minute = 1 + i % 28, i % 1440
    return f"2025-{1 + i % 12:02d}-{day:02d}T{minute // 60:02d}:{minute % 60:02d}:00+01:00"


def _kept_their_time(imported: list[dict[str, Any]]) -> int:
    """Imported events whose inserted_at is the time they happened, in UTC."""
    kept = 0
    for record in imported:
        i = int(record["metadata"]["event_id"][2:])
        kept += record["inserted_at"] == event_time(_occurred(i), "occurred_at")
    return kept


def _high_water_kb(pid: int) -> int:
    """The peak resident memory of a running process so far (Linux ``VmHWM``), in kB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass  # it just exited: the last reading stands
    return 0


def _run(work: Path, events: int) -> dict[str, Any]:
    """One run of the target in import mode; its wall time and peak memory."""
    input_path = work / f"input-{events}.singer"
    _write_input(input_path, events)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=1) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "events_api": "import",
            "object_mapping": {"events": {"event_time_property": "occurred_at"}},
            "batch_wait_seconds": 1,
            "state_db": str(work / f"state-{events}.db"),
        }
        config_path = work / "config.json"
        config_path.write_text(json.dumps(config))
        # The peak of this process alone: its VmHWM, read until it exits. (The rusage of a
        # child also counts the parent's pages at fork time, here the sandbox's.)
        start = time.perf_counter()
        log = work / "stderr.log"
        peak_kb = 0
        with input_path.open("rb") as stdin, log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=work,
                env=dict(os.environ),
            )
            while proc.poll() is None:
                peak_kb = max(peak_kb, _high_water_kb(proc.pid))
                time.sleep(0.05)
        seconds = time.perf_counter() - start
        stderr = log.read_bytes()
        if proc.returncode != 0:
            text = stderr.decode()[-3000:]
            raise SystemExit(f"the target failed (exit {proc.returncode}):\n{text}")
        imported = sandbox.imported_events()
        jobs = [j for j in sandbox.jobs() if j["type"] == "events_import"]
        track = sandbox.stats()["track_requests"]
    line = next(x for x in stderr.decode().splitlines() if x.startswith("TARGET_USERPILOT_"))
    summary = json.loads(line.split(" ", 1)[1])
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_second": round(events / seconds),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "import_jobs": len(jobs),
        "largest_file_rows": max(j["total_rows"] for j in jobs),
        "largest_file_bytes": max(int(j["file_size"]) for j in jobs),
        "imported": len(imported),
        "kept_their_time": _kept_their_time(imported),
        "track_requests": track,
        "summary_events_sent": summary["total"]["events_sent"],
    }


def predicted(events: int) -> dict[str, Any]:
    """What Userpilot itself needs for ``events``: track at 600 a minute, import at job rates."""
    track = events / (600 * HEADROOM) * 60
    files = -(-events // FILE_ROWS)
    return {
        "track_seconds_at_600": round(track),
        "track": duration(track),
        "import_files": files,
        "import_seconds_at_1800": round(events / 1800 * 60),
        "import_at_1800": duration(events / 1800 * 60),
        "import_at_1200": duration(events / 1200 * 60),
    }


def main() -> None:
    """Run the import bench at a tenth and at the full size, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 events: check the bench works")
    args = parser.parse_args()
    events = 5000 if args.quick else args.events
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        work = Path(tmp)
        runs = [_run(work, max(1, events // 10)), _run(work, events)]
    results: dict[str, Any] = {"runs": runs, "userpilot": predicted(events)}
    for run in runs:
        print(
            f"Import mode, {run['events']:,} events: {run['seconds']} s "
            f"({run['events_per_second']:,} a second), peak memory {run['peak_rss_mb']} MB, "
            f"{run['import_jobs']} import files (largest {run['largest_file_rows']:,} rows, "
            f"{run['largest_file_bytes']:,} bytes), {run['kept_their_time']:,} of "
            f"{run['imported']:,} imported with their own time, {run['track_requests']} track "
            "requests."
        )
    guess = results["userpilot"]
    print(
        f"Userpilot's side for {events:,} events: track mode at 600 a minute takes "
        f"{guess['track']}; import mode, {guess['import_files']} jobs at 1,800 rows a minute, "
        f"{guess['import_at_1800']} ({guess['import_at_1200']} at 1,200)."
    )
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "imports.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
