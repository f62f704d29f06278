"""The in-process runner: the same run as a process gives, and the test's process left as it was.

Integration tests run the target in the test's own process (``run_target``); they are only
worth as much as that run is the one a process would do, and as clean as what it leaves.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import USER_SCHEMA, record, schema, state, user, users_messages
from support.runner import RunTarget


def _process_wide() -> dict[str, object]:
    """What a run could change for the whole process."""
    root = logging.getLogger()
    return {
        "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
        "streams": (sys.stdin, sys.stdout, sys.stderr),
        "excepthook": sys.excepthook,
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "root": (root.level, list(root.handlers)),
        "warnings": list(warnings.filters),
        # A connection the sandbox still answers is the sandbox's thread, not the run's.
        "threads": {
            t for t in threading.enumerate() if not t.name.endswith("(process_request_thread)")
        },
    }


def _loggers() -> dict[str, tuple[int, list[logging.Handler], bool]]:
    """Every logger registered: its level, handlers and propagation."""
    return {
        name: (logger.level, list(logger.handlers), logger.propagate)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }


def test_a_run_in_process_leaves_the_process_as_it_found_it(
    sandbox: Sandbox, config: dict[str, Any], run_target: RunTarget
) -> None:
    before = _process_wide()
    loggers_before = _loggers()

    run = run_target(
        config,
        users_messages(20),
        env={
            "TARGET_USERPILOT_LOGLEVEL": "DEBUG",
            "TARGET_USERPILOT_BATCH_SIZE_ROWS": "7",
            "TARGET_USERPILOT_BATCH_WAIT_SECONDS": "3600",  # only full batches, however slow
        },
        args=["--config", "ENV"],
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary["total"]["jobs"] == 3  # the environment's batch size was in force
    assert " | DEBUG " in run.stderr  # and so was its log level
    after = _process_wide()
    loggers_after = _loggers()
    assert after == before
    # Loggers the run created stay registered (logging keeps them), at their defaults.
    assert {n: v for n, v in loggers_after.items() if n in loggers_before} == loggers_before
    for name, (level, handlers, propagate) in loggers_after.items():
        if name not in loggers_before:
            assert (level, handlers, propagate) == (logging.NOTSET, [], True), name


def test_a_run_in_process_ends_as_the_same_run_as_a_process(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
    run_target_process: RunTarget,
) -> None:
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        *(record("users", user(i)) for i in range(5)),
        record("users", {"id": None, "email": "no-id@example.com"}),
        state({"bookmarks": {"users": 4}}),
    ]

    in_process = run_target(config, messages, tmp_path=tmp_path / "in")
    as_process = run_target_process(config, messages, tmp_path=tmp_path / "out")

    assert in_process.returncode == as_process.returncode == 0
    assert in_process.states == as_process.states == [{"bookmarks": {"users": 4}}]
    totals = ("received", "rows_sent", "rejected", "jobs")
    assert {k: in_process.summary["total"][k] for k in totals} == {
        k: as_process.summary["total"][k] for k in totals
    }
    assert in_process.summary["total"]["rejected"] == 1


def test_a_failed_run_in_process_has_the_exit_code_and_sentence_of_a_process(
    sandbox: Sandbox,
    config: dict[str, Any],
    tmp_path: Path,
    run_target: RunTarget,
    run_target_process: RunTarget,
) -> None:
    refused = {**config, "api_key": "not-the-sandbox-key"}

    in_process = run_target(refused, users_messages(3), tmp_path=tmp_path / "in")
    as_process = run_target_process(refused, users_messages(3), tmp_path=tmp_path / "out")

    assert in_process.returncode == as_process.returncode == 3
    sentence = "Userpilot refused the API key (HTTP 401)"
    assert sentence in in_process.stderr
    assert sentence in as_process.stderr
    assert in_process.states == as_process.states == []
