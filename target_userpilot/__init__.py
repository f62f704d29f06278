"""target-userpilot: a Singer target that loads user and company profiles into Userpilot.

A record travels one way: ``target.py`` reads Singer messages (``input/``), a sink per stream
(``sinks.py``) has each record classified by pure rules (``records/``) and applies the result:
rows go to spooled batch files (``batching/``), which lanes (``lanes/``) send to Userpilot
(``userpilot/``) one job at a time; deletions and events take lanes of their own. Every retry is
decided by ``retry.py``, and every wait the target times is on a ``clock.py`` clock, ended by a
stop. What a run must remember between runs lives in the ledger (``ledger/``), used through
``memory/``. ``docs/development.md`` follows a record, a job, a retry and a stop through these
modules, and says where STATE is released and where an exit code is chosen.

The run's own parts, at the top:

- ``target.py``: the SDK ``Target``: the plugin's declaration and its message callbacks
- ``sinks.py``: one sink per stream: its rules chosen once, each record's outcome applied
- ``run.py``: one run's wiring, built once from the settings and closed once
- ``settings.py``: the settings' schema, from a config file or ``TARGET_USERPILOT_*`` variables
- ``checkpoints.py``: the one place STATE is held back and written
- ``stop.py``: the one path a stop takes (signals and lane failures)
- ``retry.py``: the one retry policy: which failures get another try, for how long, each pause
  ended by a stop (Userpilot's calls and the ledger's connection)
- ``clock.py``: the clock every wait goes through: the real one, and a simulated one for tests
- ``rejects.py``: every rejected record, counted once, logged, kept, or the run stopped
- ``summary.py``: the end-of-run account, as a table and a JSON line, or one JSON record
- ``logs.py``: the logs in the ecosystem's forms: plain or the SDK's JSON, and METRIC records
- ``errors.py``: every exception and the exit code it ends a run with
- ``meltano_loader.py``: Meltano's loader test: a failed check said where Meltano shows it

And its rooms:

- ``input/``: Singer input: lines read and checked, BATCH files, nesting too deep to read
- ``records/``: record → Userpilot payload: pure rules, no SDK, no I/O
- ``batching/``: batch files spooled to disk, and when each goes up
- ``lanes/``: outbound work on threads of its own: bulk jobs, deletions, events
- ``userpilot/``: Userpilot's HTTP API (and the dry run that stands in for it): no Singer inside
- ``ledger/``: the ledger's storage (``state_db``): SQLite or PostgreSQL behind one interface
- ``memory/``: what a run remembers on top of the ledger: unchanged rows, history, mirror
  versions, imported files
- ``plan/``: a plan (``plan_path``): what a run would do with this input, counted, nothing sent
- ``privacy/``: personal data in owner-only files, secrets kept out of messages
- ``sandbox/``: the Userpilot emulator (``userpilot-sandbox``) for tests, demos and trials
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from target_userpilot.target import TargetUserpilot

__all__ = ["TargetUserpilot"]


def __getattr__(name: str) -> type[TargetUserpilot]:
    """The target's class, imported on first use: the sandbox (a subpackage) loads no SDK."""
    if name == "TargetUserpilot":
        from target_userpilot.target import TargetUserpilot

        return TargetUserpilot
    raise AttributeError(name)
