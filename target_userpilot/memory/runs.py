"""Runs the ledger remembers: each run a row, from its start to how it ended.

A run that has a ledger records itself in ``runs`` as soon as the ledger is open (before any
input for ``skip_unchanged``, ``hard_delete`` and Import API events; with the first events stream
for track events): its id (the one its last line names), when it started, and what its
orchestrator passed. As it closes, once its lanes are joined and its counts are final, it records
how it ended (:func:`run_end`):

- ``completed``: exit 0, everything in the input loaded;
- ``failed``: the exit code and the one-line reason the run printed, secrets masked;
- ``stopped by a signal``: SIGTERM or SIGINT before the input was loaded (exit 10);
- ``stopped by the guard``: a full-table version would have deleted more than the mirror-delete
  guard allows (exit 14);

with the end-of-run summary as its counts. A run killed (``kill -9``, a lost machine) records no
end: its row keeps none, and readers show it as "unknown (no end recorded)", as they show a run
still going. Dry runs record nothing: nothing they do reaches Userpilot.

**The orchestrator's run id.** Meltano 4.4.1 (the pinned one) hands a loader no id of the run
it belongs to: ``meltano run`` logs its run id and keeps it in its system database, but the
loader gets only ``MELTANO_*`` context (environment, extractor and loader names, the project) and
a telemetry context id of no use to a person. What reaches the loader is Meltano's own
environment: a run id set there (``MELTANO_RUN_ID``, which ``meltano run`` takes as its run id)
or a state id (``MELTANO_STATE_ID``, ``meltano el``'s) is recorded, with the environment and the
extractor, so a run in the ledger points at its Meltano run. ``--run-id`` and ``--state-id`` on
the command line stay with Meltano.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from target_userpilot.errors import MirrorDeleteRefused, Terminated, exit_code
from target_userpilot.ledger.store import RUN_COMPLETED, RUN_FAILED, RUN_GUARD, RUN_SIGNALLED
from target_userpilot.privacy.redact import redact

#: The longest reason kept: a failed job's message carries the whole job object.
MAX_REASON = 1000
#: What Meltano passes to a plugin that names the run: the key recorded, and its variable.
MELTANO_VARIABLES = (
    ("run_id", "MELTANO_RUN_ID"),
    ("state_id", "MELTANO_STATE_ID"),
    ("environment", "MELTANO_ENVIRONMENT"),
    ("extractor", "MELTANO_EXTRACTOR_NAME"),
    ("loader", "MELTANO_LOADER_NAME"),
)
#: The exit code of an exception no row of ``errors.EXIT_CODES`` covers (Python's own).
UNEXPECTED_EXIT = 1


class RunLedger(Protocol):
    """What runs need of the ledger: part of :class:`~target_userpilot.ledger.store.Ledger`."""

    def record_run_start(
        self, scope: str, run_id: str, started_at: float, orchestrator: Mapping[str, Any] | None
    ) -> None: ...

    def record_run_end(
        self,
        scope: str,
        run_id: str,
        *,
        ended_at: float,
        outcome: str,
        exit_code: int,
        reason: str | None,
        counts: Mapping[str, Any],
    ) -> None: ...


@dataclass(frozen=True)
class RunEnd:
    """How a run ended: its outcome, exit code and, unless it simply completed, why."""

    outcome: str
    exit_code: int
    reason: str | None


def orchestrator(environ: Mapping[str, str]) -> dict[str, str] | None:
    """What the orchestrator that started this process passed it, or None outside one.

    Meltano: ``name`` and, where Meltano's environment holds them, ``run_id``, ``state_id``,
    ``environment``, ``extractor``, ``loader``.
    """
    if not environ.get("MELTANO_PROJECT_ROOT") or not environ.get("MELTANO_LOADER_NAME"):
        # MELTANO_PROJECT_ROOT alone may be a shell's, pointing its meltano at a project.
        return None
    passed = {"name": "meltano"}
    for key, variable in MELTANO_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            passed[key] = value
    return passed


def run_end(
    error: BaseException | None, *, signal_after_input: bool, secrets: Iterable[str]
) -> RunEnd:
    """The outcome of a run that ends with ``error`` (None: it completed).

    ``signal_after_input``: a stop signal came after the end of input and left nothing unsent,
    so the run completed all the same; the reason says so.
    """
    if error is None:
        reason = (
            "A stop signal came after the end of input; nothing was left unsent."
            if signal_after_input
            else None
        )
        return RunEnd(RUN_COMPLETED, 0, reason)
    if isinstance(error, Terminated):
        outcome = RUN_SIGNALLED
    elif isinstance(error, MirrorDeleteRefused):
        outcome = RUN_GUARD
    else:
        outcome = RUN_FAILED
    code = exit_code(error)
    return RunEnd(outcome, UNEXPECTED_EXIT if code is None else code, one_line(error, secrets))


def one_line(error: BaseException, secrets: Iterable[str]) -> str:
    """The error's sentence on one line, secrets masked, at most :data:`MAX_REASON` long."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = redact(text, secrets)
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1].rstrip() + "…"
    return text


class RunRecord:
    """One run's row in ``runs``: begun once a ledger is open, ended as the run closes.

    Both writes come from the main thread. A run with no ledger records nothing.
    """

    def __init__(
        self,
        scope: str,
        run_id: str,
        *,
        secrets: Iterable[str],
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scope = scope
        self.run_id = run_id
        self.started_at = clock()
        self.orchestrator = orchestrator(os.environ if environ is None else environ)
        self._secrets = [secret for secret in secrets if secret]
        self._clock = clock
        self._ledger: RunLedger | None = None

    @property
    def begun(self) -> bool:
        """Whether the run's row is in a ledger."""
        return self._ledger is not None

    def begin(self, ledger: RunLedger) -> None:
        """The run has a ledger: its row goes in, with the run's start (once)."""
        if self._ledger is not None:
            return
        ledger.record_run_start(self.scope, self.run_id, self.started_at, self.orchestrator)
        self._ledger = ledger

    def end(
        self, error: BaseException | None, counts: Mapping[str, Any], *, signal_after_input: bool
    ) -> RunEnd | None:
        """The run ends with ``error`` (None: completed): record how, with ``counts``."""
        if self._ledger is None:
            return None
        end = run_end(error, signal_after_input=signal_after_input, secrets=self._secrets)
        self._ledger.record_run_end(
            self.scope,
            self.run_id,
            ended_at=self._clock(),
            outcome=end.outcome,
            exit_code=end.exit_code,
            reason=end.reason,
            counts=counts,
        )
        return end
