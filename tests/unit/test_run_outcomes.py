"""A run's own row, by its rules alone: each error's outcome and exit code, a signal after the
end of input, the start recorded once and the end with its counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_userpilot.errors import (
    ConfigurationError,
    JobFailed,
    MirrorDeleteRefused,
    NothingLoaded,
    Terminated,
)
from target_userpilot.memory.runs import RunRecord, run_end

README = Path(__file__).resolve().parents[2] / "README.md"


# Without a run


def test_each_error_is_the_outcome_and_exit_code_the_run_ends_with() -> None:
    def end(error: BaseException | None) -> tuple[str, int]:
        found = run_end(error, signal_after_input=False, secrets=[])
        return found.outcome, found.exit_code

    assert end(None) == ("completed", 0)
    assert end(Terminated("Received SIGTERM")) == ("stopped by a signal", 10)
    assert end(MirrorDeleteRefused("too many")) == ("stopped by the guard", 14)
    assert end(JobFailed("job x failed")) == ("failed", 4)
    assert end(NothingLoaded("all refused")) == ("failed", 12)
    assert end(ConfigurationError("bad")) == ("failed", 2)
    assert end(KeyError("a bug")) == ("failed", 1)  # Python's own exit code for a traceback


def test_a_signal_after_the_end_of_input_with_nothing_left_completes_and_says_so() -> None:
    found = run_end(None, signal_after_input=True, secrets=[])

    assert (found.outcome, found.exit_code) == ("completed", 0)
    assert found.reason == "A stop signal came after the end of input; nothing was left unsent."


def test_a_run_records_its_start_once_and_its_end_with_the_counts() -> None:
    calls: list[tuple[str, Any]] = []

    class Ledger:
        def record_run_start(self, *args: Any) -> None:
            calls.append(("start", args))

        def record_run_end(self, *args: Any, **kwargs: Any) -> None:
            calls.append(("end", kwargs))

    clock = iter([100.0, 105.0])
    environ = {"MELTANO_PROJECT_ROOT": "/p", "MELTANO_LOADER_NAME": "t", "MELTANO_RUN_ID": "r"}
    record_ = RunRecord("acct", "run-1", secrets=[], environ=environ, clock=lambda: next(clock))
    unrecorded = RunRecord("acct", "run-2", secrets=[], environ={})

    record_.begin(Ledger())
    record_.begin(Ledger())  # the ledger opened a second time (track events): one row
    record_.end(None, {"total": {}}, signal_after_input=False)

    assert unrecorded.end(None, {}, signal_after_input=False) is None  # no ledger, no row
    assert calls == [
        ("start", ("acct", "run-1", 100.0, {"name": "meltano", "run_id": "r", "loader": "t"})),
        (
            "end",
            {
                "ended_at": 105.0,
                "outcome": "completed",
                "exit_code": 0,
                "reason": None,
                "counts": {"total": {}},
            },
        ),
    ]
