"""The in-process runner leaves the test's process as it found it.

Integration tests run the target in the test's own process (``run_target``); they are only
worth as much as that run is the one a process would do (tests/e2e/test_runner_process.py), and
as clean as what it leaves.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from typing import Any

from target_userpilot.sandbox import Sandbox

from support.messages import users_messages
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
