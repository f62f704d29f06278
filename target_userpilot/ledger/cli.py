"""``userpilot-ledger``: read the ledger's sync history without writing SQL.

    userpilot-ledger [--config FILE] [--state-db PATH_OR_URL] [--account SCOPE] COMMAND

- ``history ID``: every entry kept for one profile, newest first: when it was sent, in which job
  or deletion request, how that ended, and the hash of the row; then the user's events, by name
  and time, with how each went (``--object events``: the events alone);
- ``runs``: the newest runs, how each ended (completed, failed, stopped by a signal or by the
  guard, or no end recorded), their counts and their orchestrator's run id;
- ``jobs``: the jobs and deletion requests of one run (``--run``, the id a run prints at its end,
  below how that run ended) or the newest ones;
- ``export``: the current state of every profile (its newest entry) and every accepted event key
  (one row each) as CSV or JSON Lines;
- ``accounts``: the accounts the ledger holds history for.

It reads the same ``state_db`` as the target: ``--state-db``, else the ``--config`` file's
``state_db``, else ``TARGET_USERPILOT_STATE_DB`` (a ``.env`` file loaded as the target loads it),
else the default file, relative to the folder it is started in. Under Meltano (``meltano invoke
target-userpilot:ledger``, a command of the plugin) the ``TARGET_USERPILOT_*`` variables Meltano
sets are the configuration a run gets (:class:`MeltanoInvocation`). It only reads: a SQLite
file through a read-only URI, PostgreSQL in read-only transactions; a path or database that holds
no ledger is refused (exit 2), never made into one, and an older ledger is read as it is, never
upgraded. Output cut short by its reader (``export | head``) ends quietly, exit 141. With an
``api_key`` (config file or ``TARGET_USERPILOT_API_KEY``) it shows that account only; without one,
every account, each row naming its scope. Nothing here prints a password or a key: the scope is a
one-way fingerprint and database errors go through ``privacy/redact.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from target_userpilot.errors import ConfigurationError, LedgerMissing, LedgerUnavailable
from target_userpilot.ledger.factory import DEFAULT_PATH, looks_like_url, open_ledger
from target_userpilot.ledger.schema import HISTORY_VERSION
from target_userpilot.ledger.scope import account_scope
from target_userpilot.ledger.store import (
    EVENT_IMPORTED,
    RUNS_VERSION,
    UNCONFIRMED,
    EventEntry,
    HistoryEntry,
    Ledger,
    RunEntry,
)
from target_userpilot.privacy.redact import redact
from target_userpilot.settings import CONFIG_SCHEMA, DEFAULT_API_URL, env_config

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
    "stream",
    "event_key",
    "event_name",
    "event_time",
)

#: The ``object`` of events, in ``--object`` and in the export.
EVENTS = "events"
#: How a run without an end reads: killed (kill -9, a lost machine), or still going.
NO_END = "unknown (no end recorded)"


#: The exit status once the reader of the output stopped reading (``export | head -1``): what a
#: command ended by SIGPIPE shows in a shell (128 + 13), as ``cat`` or ``grep`` cut short do, so
#: ``set -o pipefail`` treats it alike and an export cut short never reads as a complete one.
STDOUT_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: 0 on success, 2 for a setting or ledger that cannot be used, 141 when
    the reader of the output closed it."""
    args = _parser().parse_args(argv)
    meltano = MeltanoInvocation.detect(os.environ)
    try:
        config = _config(args.config)
        env = _env_settings(meltano)
        state_db, source = _state_db(args, config, env, meltano)
        scope = args.account or _scope(config, env)
        # Read only: a reader never makes a ledger, adds tables to a file or migrates one.
        ledger = open_ledger(state_db, read_only=True)
    except LedgerMissing as exc:
        return _refuse(f"{exc} {_where_from(source, state_db, meltano)}")
    except ConfigurationError as exc:
        return _refuse(str(exc))
    try:
        _check_history(ledger)
        args.command(ledger, scope, args, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_closed()
    except (LedgerUnavailable, ConfigurationError) as exc:
        return _refuse(str(exc))
    finally:
        ledger.close()
    return 0


def _refuse(message: str) -> int:
    sys.stderr.write(f"userpilot-ledger: {redact(message)}\n")
    return 2


def _stdout_closed() -> int:
    """The reader of the output stopped reading: end quietly, without a traceback."""
    # Python flushes stdout once more at exit, which would fail the same way and print
    # "Exception ignored ... BrokenPipeError": point it at the null device first.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return STDOUT_CLOSED


#: Where a ``state_db`` Meltano handed over came from, as a refusal names it.
MELTANO_SOURCE = "Meltano"


def _state_db(
    args: argparse.Namespace,
    config: Mapping[str, Any],
    env: Mapping[str, Any],
    meltano: MeltanoInvocation | None,
) -> tuple[str, str | None]:
    """The ledger to read and where that came from (None: the default path)."""
    env_source = "TARGET_USERPILOT_STATE_DB" if meltano is None else MELTANO_SOURCE
    given = [
        (args.state_db, "--state-db"),
        (config.get("state_db"), f"state_db in --config {args.config}"),
        (env.get("state_db"), env_source),
    ]
    for value, source in given:
        if value is not None and str(value).strip():
            if source == MELTANO_SOURCE and str(value).strip() == DEFAULT_PATH:
                # Meltano sets every setting that has a value, the definition's default too.
                return DEFAULT_PATH, None
            return str(value).strip(), source
    return DEFAULT_PATH, None


def _where_from(source: str | None, state_db: str, meltano: MeltanoInvocation | None) -> str:
    """The second half of a refusal: where the path came from, and what to check."""
    if meltano is not None:
        return _where_from_meltano(source, state_db, meltano)
    if source is None:
        return (
            "No state_db was given (--state-db, state_db in the --config file, "
            "TARGET_USERPILOT_STATE_DB), so the default path was read: the target makes its "
            "ledger there, in the folder it runs from, on its first run that keeps one "
            "(skip_unchanged, hard_delete or events)."
        )
    return f"It came from {source}: check it for a typo."


def _where_from_meltano(source: str | None, state_db: str, meltano: MeltanoInvocation) -> str:
    settings = "meltano.yml, its environment, TARGET_USERPILOT_STATE_DB or the project's .env"
    if source is None:
        said = (
            f"No other state_db is set for {meltano.plugin} in Meltano ({settings}), so the "
            "default path was read, in the folder Meltano was started in: a run started there "
            "makes its ledger there on its first run that keeps one (skip_unchanged, hard_delete "
            "or events)."
        )
    elif source == MELTANO_SOURCE:
        said = f"It came from {meltano.plugin}'s state_db in Meltano ({settings}): check it."
    else:
        said = f"It came from {source}: check it for a typo."
    if looks_like_url(state_db) or os.path.isabs(state_db):
        return said
    # A relative path is read in the folder Meltano was started in, as a run reads it.
    here = os.getcwd()
    if _same_folder(here, meltano.project_root):
        return said
    at_root = os.path.join(meltano.project_root, state_db)
    if os.path.exists(at_root):
        return (
            f"{said} The project's root holds one ({at_root}), made by a run started there: "
            f"run `{meltano.command()}` there."
        )
    return (
        f"{said} Meltano was started in {here}, not in the project's root "
        f"({meltano.project_root}): run this command in the folder your runs start in."
    )


def _check_history(ledger: Ledger) -> None:
    """Refuse a ledger from a release before the sync history: it has none to show."""
    if ledger.version >= HISTORY_VERSION:
        # Later migrations add tables this command does not read: an older ledger is read
        # as it is, never upgraded (a run of the release still using it would refuse it then).
        return
    msg = (
        f"The ledger ({ledger.description}) has schema version {ledger.version}, from a release "
        f"before the sync history (version {HISTORY_VERSION}): it holds no history to show. Run "
        "target-userpilot once with this state_db to upgrade it (its entries stay); the runs "
        "after that record their history. Nothing was changed."
    )
    raise ConfigurationError(msg)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userpilot-ledger",
        description=(
            "Read target-userpilot's ledger (state_db): sync history and events, runs, jobs, "
            "export."
        ),
    )
    parser.add_argument("--config", help="the target's JSON config file (state_db, api_key)")
    parser.add_argument("--state-db", help="a SQLite file path or a PostgreSQL URL")
    parser.add_argument(
        "--account",
        help="an account scope as `accounts` lists it (default: the config's api_key, else all)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    history = commands.add_parser(
        "history", help="one profile's history, then the user's events, newest first"
    )
    history.add_argument("id", help="the profile's user_id or company_id")
    history.add_argument("--object", choices=("users", "companies", EVENTS), default=None)
    history.set_defaults(command=_history)

    runs = commands.add_parser("runs", help="the newest runs and how each ended")
    runs.add_argument("--limit", type=_positive, default=20, help="how many of the newest (20)")
    runs.add_argument("--format", choices=("table", "jsonl"), default="table")
    runs.set_defaults(command=_runs)

    jobs = commands.add_parser("jobs", help="the jobs of one run (with its end), or the newest")
    jobs.add_argument("--run", help="the run id a run prints at its end")
    jobs.add_argument("--limit", type=_positive, default=20, help="how many of the newest (20)")
    jobs.set_defaults(command=_jobs)

    export = commands.add_parser(
        "export", help="every profile's current state and every accepted event"
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--object", choices=("users", "companies", EVENTS), default=None)
    export.set_defaults(command=_export)

    accounts = commands.add_parser("accounts", help="accounts with history in the ledger")
    accounts.set_defaults(command=_accounts)
    return parser


#: The settings this command reads, as a run reads them: where the ledger is, whose account.
READ_SETTINGS = ("state_db", "api_url", "api_key", "dry_run")
#: Every setting is also ``TARGET_USERPILOT_<NAME>`` (the SDK's ``--config=ENV``, and Meltano).
ENV_PREFIX = "TARGET_USERPILOT_"


def _env_settings(meltano: MeltanoInvocation | None) -> dict[str, Any]:
    """The settings this command reads from ``TARGET_USERPILOT_*`` variables, each as its type.

    Under Meltano they are the whole configuration, resolved by Meltano as for a run (meltano.yml,
    the active environment, the shell's variables and the project's ``.env``, or the file of
    ``--env-file``): reading a ``.env`` again would overrule what Meltano chose. Otherwise a
    ``.env`` file is loaded first, as the target loads it with ``--config=ENV``.
    """
    properties = CONFIG_SCHEMA["properties"]
    schema = {"properties": {name: properties[name] for name in READ_SETTINGS}}
    return env_config(schema, ENV_PREFIX, os.environ if meltano is not None else None)


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


def _scope(config: Mapping[str, Any], env: Mapping[str, Any]) -> str | None:
    """The account of the config's (or environment's) api_key, or None for every account."""

    def setting(name: str) -> Any:
        # The --config file first, then the environment, as the ledger's path is chosen.
        value = config.get(name)
        if value is None or not str(value).strip():
            value = env.get(name)
        return value if value is not None and str(value).strip() else None

    dry_run = setting("dry_run")
    if dry_run is True or str(dry_run).lower() == "true":
        return account_scope("", None, dry_run=True)
    api_key = setting("api_key")
    if not api_key:
        return None
    api_url = setting("api_url") or DEFAULT_API_URL
    return account_scope(str(api_url), str(api_key))


# Under Meltano


@dataclass(frozen=True)
class MeltanoInvocation:
    """Meltano started this process: a run (``meltano run``) or this command (``meltano invoke``).

    Meltano hands a plugin its settings as ``TARGET_USERPILOT_*`` variables, for a command as for
    a run (a run also gets them as a config file, whose path a command is not told), and starts
    it in the folder Meltano itself was started in, which need not be the project's root.
    """

    #: The loader's name in the project (``MELTANO_LOADER_NAME``): an inheriting plugin's own.
    plugin: str
    project_root: str
    #: The active environment, and the project's default one ("" for none).
    environment: str
    default_environment: str

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> MeltanoInvocation | None:
        """The Meltano invocation ``environ`` shows, or None outside Meltano."""
        root = environ.get("MELTANO_PROJECT_ROOT")
        plugin = environ.get("MELTANO_LOADER_NAME")
        if not root or not plugin:
            # MELTANO_PROJECT_ROOT alone may be a shell's, pointing its meltano at a project.
            return None
        return cls(
            plugin=plugin,
            project_root=root,
            environment=environ.get("MELTANO_ENVIRONMENT", ""),
            default_environment=environ.get("MELTANO_DEFAULT_ENVIRONMENT", ""),
        )

    def command(self, *, cwd: str | None = None) -> str:
        """``meltano … invoke <plugin>:ledger``, as typed to read what this invocation read.

        ``cwd``: the folder a relative ``state_db`` was read in; named (``--cwd``) unless it is
        the project's root. The environment is named unless it is the project's default.
        """
        words = ["meltano"]
        if cwd is not None and not _same_folder(cwd, self.project_root):
            words += ["--cwd", cwd]
        if self.environment != self.default_environment:
            if self.environment:
                words.append(f"--environment={self.environment}")
            else:
                words.append("--no-environment")
        words += ["invoke", f"{self.plugin}:ledger"]
        return shlex.join(words)


def jobs_command(
    run_id: str,
    state_db: str,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> str:
    """The command that lists a run's jobs, as the person who started the run can type it.

    ``userpilot-ledger jobs --run ID``; under Meltano, where that command is not on the PATH
    and no config file is at hand, ``meltano invoke target-userpilot:ledger jobs --run ID``.
    """
    meltano = MeltanoInvocation.detect(os.environ if environ is None else environ)
    if meltano is None:
        return f"userpilot-ledger jobs --run {run_id}"
    path = state_db.strip() or DEFAULT_PATH
    # A relative path is read in the folder the run was started in: the command must be too.
    here = None if looks_like_url(path) or os.path.isabs(path) else (cwd or os.getcwd())
    return f"{meltano.command(cwd=here)} jobs --run {shlex.quote(run_id)}"


def _same_folder(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return os.path.abspath(one) == os.path.abspath(other)


def _positive(text: str) -> int:
    """``--limit``: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


# The commands


def _history(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    # Profile entries of every object (a ledger from before events were kept per key holds
    # events files per user under "events"), then the user's events, one per key.
    entries = ledger.profile_history(scope, args.object, args.id)
    events = ledger.user_events(scope, args.id) if args.object in (None, EVENTS) else []
    if not entries and not events:
        out.write(f"No history for id {args.id}{_in(scope)}.\n")
        return
    if entries:
        _profile_entries(out, entries, scope)
    if events:
        if entries:
            out.write("\n")
        out.write(f"Events of user {args.id}, newest first:\n")
        _user_events(out, events, scope)


def _profile_entries(out: TextIO, entries: list[HistoryEntry], scope: str | None) -> None:
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


def _user_events(out: TextIO, events: list[EventEntry], scope: str | None) -> None:
    """A user's events: when, which, how they went, in which job (an import) and run."""
    rows = [
        [
            _time(e.time),
            e.name or "-",
            e.via or "-",
            e.outcome or "accepted",
            e.job_id or "-",
            e.run_id or "-",
            e.stream,
            e.key,
        ]
        for e in events
    ]
    headings = ["time", "event", "via", "outcome", "job", "run", "stream", "key"]
    if scope is None:
        headings.append("account")
        for row, entry in zip(rows, events, strict=True):
            row.append(entry.scope)
    _table(out, headings, rows)


def _runs(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    _check_runs(ledger)
    runs = ledger.runs(scope, None, args.limit)
    if args.format == "jsonl":
        for run in runs:
            out.write(json.dumps(_run_record(run), sort_keys=True) + "\n")
        return
    if not runs:
        out.write(f"No runs{_in(scope)}.\n")
        return
    headings = [
        "started at",
        "run",
        "outcome",
        "exit",
        "ended at",
        *(title for _, title in RUN_COUNTS),
        "orchestrator",
    ]
    rows = [
        [
            _time(r.started_at),
            r.run_id,
            r.outcome or NO_END,
            "-" if r.exit_code is None else str(r.exit_code),
            _time(r.ended_at),
            *_counts(r),
            _orchestrator(r.orchestrator),
        ]
        for r in runs
    ]
    if scope is None:
        headings.append("account")
        for row, run in zip(rows, runs, strict=True):
            row.append(run.scope)
    # Last, as long as it needs: its first sentence (``jobs --run`` and jsonl give it whole).
    headings.append("reason")
    for row, run in zip(rows, runs, strict=True):
        row.append(_first_sentence(run.reason) if run.reason else "-")
    _table(out, headings, rows)


def _first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence (a full stop before a capital)."""
    found = re.search(r"\.\s+(?=[A-Z])", text)
    return text[: found.start() + 1] if found else text


#: The summary's totals ``runs`` shows, with their headings.
RUN_COUNTS = (
    ("rows_sent", "rows sent"),
    ("unchanged", "unchanged"),
    ("deleted", "deleted"),
    ("events_sent", "events sent"),
    ("rejected", "rejected"),
)


def _counts(run: RunEntry) -> list[str]:
    total = (run.counts or {}).get("total") or {}
    return [str(total[key]) if key in total else "-" for key, _ in RUN_COUNTS]


def _orchestrator(passed: Mapping[str, Any] | None) -> str:
    """``meltano 0191…`` (its run id), ``meltano state=ID``, ``meltano``, or ``-``."""
    if not passed:
        return "-"
    name = str(passed.get("name", "?"))
    if passed.get("run_id"):
        return f"{name} {passed['run_id']}"
    if passed.get("state_id"):
        return f"{name} state={passed['state_id']}"
    return name


def _run_record(run: RunEntry) -> dict[str, Any]:
    """A run as ``runs --format jsonl`` writes it."""
    return {
        "account": run.scope,
        "run_id": run.run_id,
        "started_at": _time(run.started_at),
        "ended_at": _time(run.ended_at) if run.ended_at is not None else None,
        "outcome": run.outcome or NO_END,
        "exit_code": run.exit_code,
        "reason": run.reason,
        "orchestrator": run.orchestrator,
        "summary": run.counts,
    }


def _run_lines(run: RunEntry, scope: str | None) -> list[str]:
    """How one run ended, in a few lines, for ``jobs --run``."""
    outcome = run.outcome or NO_END
    if run.exit_code is not None:
        outcome += f" (exit {run.exit_code})"
    account = f" of account {run.scope}" if scope is None else ""
    lines = [f"Run {run.run_id}{account}: {outcome}"]
    if run.ended_at is None:
        lines.append(
            f"  started {_time(run.started_at)}; no end recorded: the run was killed (kill -9, "
            "a lost machine) or is still going"
        )
    else:
        lines.append(f"  started {_time(run.started_at)}, ended {_time(run.ended_at)}")
    total = (run.counts or {}).get("total")
    if total:
        lines.append("  " + ", ".join(f"{total.get(key, 0)} {title}" for key, title in RUN_COUNTS))
    if run.orchestrator:
        # Its run id first, then what places the run: Meltano's state id, environment, plugins.
        order = ("run_id", "state_id", "environment", "extractor", "loader")
        known = [key for key in order if key in run.orchestrator]
        others = sorted(set(run.orchestrator) - {"name", *order})
        passed = ", ".join(
            f"{key.replace('_', ' ')} {run.orchestrator[key]}" for key in [*known, *others]
        )
        lines.append(
            f"  orchestrator: {run.orchestrator.get('name')}" + (f", {passed}" if passed else "")
        )
    if run.reason:
        lines.append(f"  reason: {run.reason}")
    return lines


def _check_runs(ledger: Ledger) -> None:
    """Refuse ``runs`` on a ledger from a release before runs were recorded."""
    if ledger.version >= RUNS_VERSION:
        return
    msg = (
        f"The ledger ({ledger.description}) has schema version {ledger.version}, from a release "
        f"before runs were recorded (version {RUNS_VERSION}): it holds none to show. Run "
        "target-userpilot once with this state_db to upgrade it (its entries stay); the runs "
        "after that are recorded. Nothing was changed."
    )
    raise ConfigurationError(msg)


def _jobs(ledger: Ledger, scope: str | None, args: argparse.Namespace, out: TextIO) -> None:
    jobs = ledger.jobs(scope, args.run, args.limit)
    runs = []
    if args.run and ledger.version >= RUNS_VERSION:
        runs = ledger.runs(scope, args.run, 10)
    for run in runs:
        out.write("\n".join(_run_lines(run, scope)) + "\n\n")
    if not jobs and runs:
        # Track events alone open the ledger as their stream starts: no sync history then.
        out.write(
            f"No jobs of run {args.run} are in the sync history (a run keeps one with "
            "skip_unchanged, hard_delete or events_api import).\n"
        )
        return
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
    rows: list[dict[str, Any]] = []
    if args.object != EVENTS:
        # A ledger from before events were kept per key holds events files per user: the
        # events' rows below stand for them, one per key.
        entries = ledger.current_state(scope, args.object)
        rows += [_export_row(entry) for entry in entries if entry.object != EVENTS]
    if args.object in (None, EVENTS):
        rows += [_event_row(event) for event in ledger.event_entries(scope)]
    if args.format == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
        return
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)


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
        "stream": None,
        "event_key": None,
        "event_name": None,
        "event_time": None,
    }


def _event_row(event: EventEntry) -> dict[str, Any]:
    """One accepted event key as ``export`` writes it: ``id`` is its user's."""
    sent_at = event.file_sent_at if event.file_sent_at is not None else event.accepted_at
    ended_at = event.job_ended_at if event.job_ended_at is not None else event.accepted_at
    return {
        "account": event.scope,
        "object": EVENTS,
        "id": event.user_id,
        "state": _EVENT_STATES.get(event.outcome or "", "event accepted"),
        "sent_at": _time(sent_at),
        "ended_at": _time(ended_at),
        "job_id": event.job_id,
        "run_id": event.run_id,
        "row_hash": None,
        "stream": event.stream,
        "event_key": event.key,
        "event_name": event.name,
        "event_time": _time(event.time),
    }


#: An event's outcome -> its state in the export (keys from before schema 7 have none).
_EVENT_STATES = {EVENT_IMPORTED: "event imported", UNCONFIRMED: "event unconfirmed"}


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
