"""A run and a sandbox on one simulated clock, in-process: timing tested in simulated seconds.

The sandbox's jobs run at their rate on the clock, and every wait of the run (the buffer's
batch wait, the job lane's polls, the retry policy's pauses, the paces) is on it too, so a
test of a 30 s poll interval runs in milliseconds, and what it measures (a job's notice delay,
polls per job, the pace learned) cannot be stretched by a loaded machine. Rows go straight into
the run's buffer, as the sinks put them: the record rules are not what these tests are about.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import API_KEY

from target_userpilot.clock import SimulatedClock
from target_userpilot.run import Run, RunParts
from target_userpilot.sandbox import Sandbox
from target_userpilot.settings import Settings

T = TypeVar("T")


@contextmanager
def simulated_sandbox(clock: SimulatedClock, **options: Any) -> Iterator[Sandbox]:
    """A sandbox on a free loopback port whose jobs and limits run on ``clock``."""
    with Sandbox(port=0, api_key=API_KEY, clock=clock, **options) as sandbox:
        yield sandbox


def simulated_run(
    clock: SimulatedClock, sandbox: Sandbox, tmp_path: Path, states: list[Any], **settings: Any
) -> Run:
    """A run against ``sandbox`` on ``clock``; its STATE messages go to ``states``."""
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    config = {"api_url": sandbox.url, "api_key": API_KEY, **settings}
    parts = RunParts(clock=clock, write_state=states.append, spool_dir=str(spool))
    return Run(Settings.from_config(config), parts=parts)


def add_rows(run: Run, object: str, ids: Iterable[int], stream: str | None = None) -> None:
    """Rows of ``object`` (``users`` or ``companies``) into the run's buffer, one record each."""
    key = "company_id" if object == "companies" else "user_id"
    for i in ids:
        row_id = f"{object[0]}-{i}"
        line = (json.dumps({key: row_id, "metadata": {"n": i}}) + "\n").encode()
        run.buffer.add(object, stream or object, row_id, line, run.checkpoints.record())


def within(clock: SimulatedClock, seconds: float, check: Callable[[], T], what: str) -> T:
    """Let simulated time pass, a tenth of a second at a time, until ``check`` holds; fail once
    ``seconds`` of simulated time passed without it."""
    deadline = clock.now() + seconds
    while True:
        result = check()
        if result:
            return result
        if clock.now() >= deadline:
            pytest.fail(f"{what} did not happen within {seconds} simulated seconds")
        clock.sleep(0.1)
