"""``userpilot-ledger``: read the ledger's sync history without writing SQL.

    userpilot-ledger [--config FILE] [--state-db PATH_OR_URL] [--account SCOPE] COMMAND

- ``history ID``: every entry kept for one profile, newest first: when it was sent, in which job
  or deletion request, how that ended, and the hash of the row;
- ``jobs``: the jobs and deletion requests of one run (``--run``, the id a run prints at its end)
  or the newest ones;
- ``export``: the current state of every profile (its newest entry) as CSV or JSON Lines;
- ``accounts``: the accounts the ledger holds history for.

It reads the same ``state_db`` as the target: ``--state-db``, else the ``--config`` file's
``state_db``, else ``TARGET_USERPILOT_STATE_DB``, else the default file. With an ``api_key``
(config file or ``TARGET_USERPILOT_API_KEY``) it shows that account only; without one, every
account, each row naming its scope. Nothing here prints a password or a key: the scope is a
one-way fingerprint and database errors go through ``redact.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from target_userpilot.errors import ConfigurationError, LedgerUnavailable
from target_userpilot.ledger import DEFAULT_PATH, Ledger, account_scope, open_ledger
from target_userpilot.ledger_history import HistoryEntry
from target_userpilot.redact import redact
from target_userpilot.settings import DEFAULT_API_URL

#: Columns of ``export``, in order.
EXPORT_COLUMNS = (
    "account",
    "object",
    "id",
    "state",
    "sent_at",
    "ended_at",
    "job_id",
    "run_id",
    "row_hash",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 for a setting or ledger that cannot be used."""
    args = _parser().parse_args(argv)
    try:
        config = _config(args.config)
        state_db = args.state_db or config.get("state_db") or _env("STATE_DB") or DEFAULT_PATH
        scope = args.account or _scope(config)
        ledger = open_ledger(str(state_db))
    except ConfigurationError as exc:
        sys.stderr.write(f"userpilot-ledger: {redact(str(exc))}\n")
        return 2
    try:
        args.command(ledger, scope, args, sys.stdout)
    except (LedgerUnavailable, ConfigurationError) as exc:
        sys.stderr.write(f"userpilot-ledger: {redact(str(exc))}\n")
        return 2
    finally:
        ledger.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userpilot-ledger",
        description="Read target-userpilot's ledger (state_db): sync history, jobs, export.",
    )
    parser.add_argument("--config", help="the target's JSON config file (state_db, api_key)")
    parser.add_argument("--state-db", help="a SQLite file path or a PostgreSQL URL")
    parser.add_argument(
        "--account",
        help="an account scope as `accounts` lists it (default: the config's api_key, else all)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    history = commands.add_parser("history", help="one profile's history, newest first")
    history.add_argument("id", help="the profile's user_id or company_id")
    history.add_argument("--object", choices=("users", "companies"), default=None)
    history.set_defaults(command=_history)

    jobs = commands.add_parser("jobs", help="the jobs of one run, or the newest jobs")
    jobs.add_argument("--run", help="the run id a run prints at its end")
    jobs.add_argument("--limit", type=int, default=20, help="how many of the newest (20)")
    jobs.set_defaults(command=_jobs)

    export = commands.add_parser("export", help="every profile's current state")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--object", choices=("users", "companies"), default=None)
    export.set_defaults(command=_export)

    accounts = commands.add_parser("accounts", help="accounts with history in the ledger")
    accounts.set_defaults(command=_accounts)
    return parser


def _env(name: str) -> str | None:
    return os.environ.get(f"TARGET_USERPILOT_{name}") or None


def _config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError) as exc:
        msg = f"--config {path} cannot be read as a JSON object ({exc})."
        raise ConfigurationError(msg) from None
    if not isinstance(loaded, dict):
        msg = f"--config {path} holds no JSON object."
        raise ConfigurationError(msg)
    return loaded


def _scope(config: dict[str, Any]) -> str | None:
    """The account of the config's (or environment's) api_key, or None for every account."""
    dry_run = config.get("dry_run")
    if dry_run is True or str(dry_run).lower() == "true":
        return account_scope("", None, dry_run=True)
    api_key = config.get("api_key") or _env("API_KEY")
    if not api_key:
        return None
    api_url = config.get("api_url") or _env("API_URL") or DEFAULT_API_URL
    return account_scope(str(api_url), str(api_key))


# The commands


def _history(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    entries = ledger.profile_history(scope, args.object, args.id)
    if not entries:
        out.write(f"No history for id {args.id}{_in(scope)}.\n")
        return
    rows = [
        [
            _time(e.sent_at),
            e.object,
            e.kind or "?",
            e.job_id,
            e.outcome or "unknown",
            _time(e.ended_at),
            e.hash.hex()[:12] if e.hash else "-",
        ]
        for e in entries
    ]
    headings = ["sent at", "object", "kind", "job", "outcome", "ended at", "row hash"]
    if scope is None:
        headings.append("account")
        for row, entry in zip(rows, entries, strict=True):
            row.append(entry.scope)
    _table(out, headings, rows)


def _jobs(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    jobs = ledger.jobs(scope, args.run, args.limit)
    if not jobs:
        out.write(f"No jobs{' of run ' + args.run if args.run else ''}{_in(scope)}.\n")
        return
    rows = [
        [
            _time(j.sent_at),
            j.run_id,
            j.kind,
            j.job_id,
            j.object,
            j.streams,
            str(j.rows),
            j.outcome or "unknown",
            _time(j.ended_at),
        ]
        for j in jobs
    ]
    headings = ["sent at", "run", "kind", "job", "object", "streams", "rows", "outcome", "ended at"]
    _table(out, headings, rows)


def _export(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    entries = ledger.current_state(scope, args.object)
    if args.format == "jsonl":
        for entry in entries:
            out.write(json.dumps(_export_row(entry)) + "\n")
        return
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow(_export_row(entry))


def _accounts(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    del args
    found = [(s, n) for s, n in ledger.accounts() if scope is None or s == scope]
    if not found:
        out.write(f"No history{_in(scope)}.\n")
        return
    _table(out, ["account", "profiles"], [[s, str(n)] for s, n in found])


def _export_row(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "account": entry.scope,
        "object": entry.object,
        "id": entry.id,
        "state": _state(entry),
        "sent_at": _time(entry.sent_at),
        "ended_at": _time(entry.ended_at) if entry.ended_at is not None else None,
        "job_id": entry.job_id,
        "run_id": entry.run_id,
        "row_hash": entry.hash.hex() if entry.hash else None,
    }


#: ``(kind, outcome)`` -> the profile's state in words; other outcomes read "<kind> <outcome>".
_STATES = {
    ("job", "completed"): "upserted",
    ("job", "failed"): "upsert failed",
    ("job", "timed out"): "upsert timed out",
    ("job", None): "upsert sent, end unknown",
    ("deletion", "accepted"): "deletion accepted",
    ("deletion", None): "deletion sent, answer unknown",
}


def _state(entry: HistoryEntry) -> str:
    kind = entry.kind or "job"
    return _STATES.get((kind, entry.outcome), f"{kind} {entry.outcome}")


def _in(scope: str | None) -> str:
    return f" for account {scope}" if scope else ""


def _time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(out: TextIO, headings: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]
    for line in [headings, *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")


if __name__ == "__main__":
    sys.exit(main())
