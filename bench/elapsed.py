"""How long a small load runs when Userpilot's ``elapsed_time`` means something else.

Userpilot does not document ``elapsed_time``. This runs the real target on 10 companies, then
3,000 users, against a sandbox whose jobs take 4.3 s in all, once per reading of the figure
(``seconds``, ``milliseconds``, ``rounded``, ``since_creation``), and prints the run's wall time,
the jobs' busy time, the status polls and how late each job's end was noticed.

    python bench/elapsed.py                       # every reading
    python bench/elapsed.py milliseconds --timeout 900 --target-python ../old/.venv/bin/python

A run that passes ``--timeout`` is killed and reported as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from target_userpilot.sandbox import Sandbox
from target_userpilot.sandbox.jobs import ELAPSED_READINGS

API_KEY = "bench-key"
USERS = 3000
COMPANIES = 10
#: Userpilot's seconds for the whole load: the issue's 3,010 rows in 4.3 s.
LOAD_SECONDS = 4.3


def _input() -> bytes:
    lines = [
        {
            "type": "SCHEMA",
            "stream": "companies",
            "schema": {"properties": {"company_id": {"type": "string"}}},
            "key_properties": ["company_id"],
        }
    ]
    lines += [
        {"type": "RECORD", "stream": "companies", "record": {"company_id": f"c-{i}"}}
        for i in range(COMPANIES)
    ]
    lines.append(
        {
            "type": "SCHEMA",
            "stream": "users",
            "schema": {"properties": {"id": {"type": "integer"}, "plan": {"type": "string"}}},
            "key_properties": ["id"],
        }
    )
    lines += [
        {"type": "RECORD", "stream": "users", "record": {"id": i, "plan": "pro"}}
        for i in range(USERS)
    ]
    lines.append({"type": "STATE", "value": {"done": True}})
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def measure(reading: str, python: str, timeout: float) -> str:
    """One run of the target against a sandbox serving ``elapsed_time`` as ``reading``."""
    rate = (USERS + COMPANIES) / LOAD_SECONDS * 60
    with (
        Sandbox(port=0, api_key=API_KEY, rows_per_minute=rate, elapsed_time=reading) as sandbox,
        tempfile.TemporaryDirectory() as folder,
    ):
        config = Path(folder) / "config.json"
        config.write_text(json.dumps({"api_url": sandbox.url, "api_key": API_KEY}))
        started = time.monotonic()
        try:
            run = subprocess.run(
                [python, "-m", "target_userpilot", "--config", str(config)],
                input=_input(),
                capture_output=True,
                timeout=timeout,
                cwd=folder,
                check=False,
            )
            ended = f"exit {run.returncode}"
        except subprocess.TimeoutExpired:
            ended = "killed"
        took = time.monotonic() - started
        stats = sandbox.stats()
    jobs = stats["job_timings"]
    busy = sum(job["completed_at"] - job["accepted_at"] for job in jobs if job["completed_at"])
    late = [
        "unseen"
        if job["first_seen_final_at"] is None
        else f"{job['first_seen_final_at'] - job['completed_at']:.2f} s"
        for job in jobs
    ]
    return (
        f"{reading:>14}: {ended} after {took:.1f} s; {len(jobs)} jobs busy {busy:.1f} s; "
        f"{stats['status_polls']} status polls; ends noticed after {', '.join(late)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure each reading asked for (all by default) and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readings", nargs="*", choices=[[], *ELAPSED_READINGS], default=[])
    parser.add_argument("--target-python", default=sys.executable, help="another checkout's")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a kill")
    args = parser.parse_args(argv)
    for reading in args.readings or ELAPSED_READINGS:
        print(measure(reading, args.target_python, args.timeout), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
