"""`make demo`: load the bundled example into a local Userpilot sandbox and show what landed.

It starts the sandbox in this process on a free loopback port, runs the real target
(`python -m target_userpilot`, the same code as the `target-userpilot` command) as a subprocess
with the example config and the example Singer messages on stdin, and then prints the STATE
lines the target wrote and the user and company profiles the sandbox now holds.

Nothing leaves the machine: the sandbox listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_INPUT = ROOT / "examples" / "users_and_companies.singer.jsonl"
EXAMPLE_CONFIG = ROOT / "examples" / "config.sandbox.json"

USER_COLUMNS = ("user_id", "company_id", "name", "email", "address__city", "tags")
COMPANY_COLUMNS = ("company_id", "name", "plan", "seats", "industry")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (non-zero when the target failed)."""
    args = _parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    try:
        from target_userpilot.sandbox import Sandbox
    except ImportError as exc:
        print(f"The sandbox is not importable ({exc}); run `make install` first.", file=sys.stderr)
        return 2

    config = json.loads(args.config.read_text(encoding="utf-8"))
    sandbox = Sandbox(
        port=0, api_key=config.get("api_key", "sandbox-key"), rows_per_minute=args.rows_per_minute
    )
    sandbox.start()
    try:
        _heading(
            f"Userpilot sandbox listening on {sandbox.url} ({args.rows_per_minute:g} rows/min)"
        )
        config["api_url"] = sandbox.url
        config["rows_per_minute"] = args.rows_per_minute
        with tempfile.TemporaryDirectory(prefix="target-userpilot-demo-") as workdir:
            config_path = Path(workdir) / "config.json"
            config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
            _heading(f"target-userpilot --config <example config> < {_rel(args.input)}")
            result = _run_target(config_path, args.input, workdir)
        states = [line for line in result.stdout.splitlines() if line.strip()]

        _heading(f"STATE written by the target ({len(states)} line(s) on stdout)")
        for line in states:
            print(line)
        if result.returncode != 0:
            print(
                f"\nFAILED: target-userpilot exited with status {result.returncode}; "
                "see its log above.",
                file=sys.stderr,
            )
            return result.returncode or 1

        users = sandbox.profiles("users")
        companies = sandbox.profiles("companies")
        if args.json:
            _heading("Profiles in the sandbox")
            print(
                json.dumps({"users": users, "companies": companies}, indent=2, ensure_ascii=False)
            )
        else:
            _heading(f"Companies in the sandbox ({len(companies)})")
            print(_table(companies, COMPANY_COLUMNS))
            _heading(f"Users in the sandbox ({len(users)})")
            print(_table(users, USER_COLUMNS))
            if args.show in users:
                _heading(f"Profile {args.show}, as Userpilot would hold it")
                print(json.dumps(users[args.show], indent=2, ensure_ascii=False))

        jobs = sandbox.stats().get("jobs", 0)
        return _verdict(users, companies, jobs, states, args.input)
    finally:
        sandbox.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=EXAMPLE_INPUT, help="Singer messages")
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG, help="target config")
    parser.add_argument(
        "--rows-per-minute",
        type=float,
        default=60_000,
        help="sandbox processing rate (default 60000: real job lifecycle, done in seconds)",
    )
    parser.add_argument("--json", action="store_true", help="print every profile as JSON")
    parser.add_argument(
        "--show", default="u-003", help="user whose whole profile to print (default u-003)"
    )
    return parser


def _run_target(
    config_path: Path, input_path: Path, workdir: str
) -> subprocess.CompletedProcess[str]:
    """The real target, as a Meltano or shell pipeline would run it; its log goes to stderr."""
    env = dict(os.environ)
    # Settings come from the config file alone, as in the README's first example.
    for name in list(env):
        if name.startswith("TARGET_USERPILOT_"):
            del env[name]
    sys.stdout.flush()
    with input_path.open("rb") as stdin:
        return subprocess.run(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            stdin=stdin,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=workdir,
            env=env,
            timeout=300,
            check=False,
        )


def _verdict(
    users: dict[str, Any],
    companies: dict[str, Any],
    jobs: int,
    states: list[str],
    input_path: Path,
) -> int:
    """One line saying what landed; non-zero if the run left the sandbox empty or STATE behind."""
    last_input_state = None
    with input_path.open(encoding="utf-8") as handle:
        for line in handle:
            message = json.loads(line)
            if message.get("type") == "STATE":
                last_input_state = message.get("value")
    final_state_ok = bool(states) and json.loads(states[-1]) == last_input_state
    linked = sum(1 for profile in users.values() if profile.get("company_id"))
    orphans = sorted(
        profile["user_id"]
        for profile in users.values()
        if profile.get("company_id") and profile["company_id"] not in companies
    )
    ok = bool(users) and bool(companies) and final_state_ok and not orphans
    print()
    print(
        f"{'OK' if ok else 'PROBLEM'}: {len(users)} users ({linked} linked to a company) and "
        f"{len(companies)} companies in the sandbox, loaded in {jobs} job(s); final STATE "
        f"{'matches the input' if final_state_ok else 'MISSING or different'}"
        + (f"; users linked to unknown companies: {', '.join(orphans)}" if orphans else "")
        + "."
    )
    return 0 if ok else 1


def _table(profiles: dict[str, dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Profiles as a fixed-width table: chosen columns, then how many properties in all."""
    head = (*columns, "properties")
    rows = [head]
    for key in sorted(profiles):
        profile = profiles[key]
        metadata = profile.get("metadata", {})
        cells = []
        for column in columns:
            value = profile[column] if column in profile else metadata.get(column)
            cells.append("" if value is None else _short(str(value)))
        rows.append((*cells, str(len(metadata))))
    widths = [max(_width(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(_pad(cell, width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _width(text: str) -> int:
    """Columns a string takes in a terminal (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
