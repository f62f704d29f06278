"""Deletions across a stop of the process: SIGTERM lets the request in flight end and sends no
further one; a run killed between two requests resumes and loses no deletion.

The rest runs in process: ``tests/integration/test_deletes.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path

from target_userpilot.sandbox import Sandbox

from support.messages import (
    API_KEY,
    TAP_USER_SCHEMA,
    deleted_user,
    record,
    schema,
    state,
)
from support.runner import RunTarget, TargetProcess

# hard_delete on


#: What a flag column mapped onto _sdc_deleted_at, or a broken source, puts in the mark. Only a
#: date-time marks a deletion: each of these is an invalid record, never an erasure.


#: A flag as sources hold it -> deleted (True), live (False) or neither (None: rejected).


# The lane itself, with the real client over loopback HTTP


def test_a_run_killed_between_two_deletion_requests_resumes_and_loses_no_deletion(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, delete_interval=2.0) as sandbox:
        config = {"api_url": sandbox.url, "api_key": API_KEY, "hard_delete": True}
        head = [schema("users", TAP_USER_SCHEMA, ["id"])]
        first = [record("users", deleted_user(1)), state({"last": 1})]
        rest = [record("users", deleted_user(2)), state({"last": 2})]
        run = TargetProcess(config, tmp_path)
        try:
            run.send(head + first)
            assert run.next_state() == {"last": 1}
            # The next request may go 2 s after the first one's answer: kill before that.
            run.send(rest)
        finally:
            run.kill()
        assert run.states == [{"last": 1}]  # no STATE past the deletion that was never sent
        assert sandbox.deletions("users") == ["1"]

        # Resume from the last STATE, as an orchestrator would: the records after it.
        rerun = run_target(config, head + rest, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert rerun.states == [{"last": 2}]
        assert sandbox.deletions("users") == ["1", "2"]


def test_sigterm_lets_the_deletion_in_flight_end_and_sends_no_further_one(tmp_path: Path) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, delete_interval=2.0) as sandbox:
        config = {"api_url": sandbox.url, "api_key": API_KEY, "hard_delete": True}
        run = TargetProcess(config, tmp_path)
        try:
            run.send([schema("users", TAP_USER_SCHEMA, ["id"]), record("users", deleted_user(1))])
            run.send([state({"last": 1})])
            assert run.next_state() == {"last": 1}
            run.send([record("users", deleted_user(2)), state({"last": 2})])
            # Deletion 2 waits for the pace (2 s after the first answer) when the signal comes.
            run.proc.send_signal(signal.SIGTERM)
            code = run.proc.wait(timeout=10)
        finally:
            run.kill()
        assert sandbox.deletions("users") == ["1"]

    assert code == 10
    assert run.states == [{"last": 1}]  # no STATE past the deletion not sent
    assert "Received SIGTERM" in run.stderr_path.read_text()
