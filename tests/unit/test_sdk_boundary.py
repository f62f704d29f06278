"""The SDK boundary: STATE has one home (checkpoints.py), and the SDK's drains never write it.

The SDK writes the latest STATE after every drain (``drain_all`` -> ``_write_state_message``).
The target keeps STATE away from it (``_process_state_message``), so that a STATE goes out only
once the records before it are durable in Userpilot. These tests run the real target in
process, with every STATE our checkpoints write sent to a list instead of stdout: whatever
still reaches stdout was written by someone else, by whichever path an SDK version takes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import Target

from target_userpilot.target import TargetUserpilot

from support.messages import encode_messages, users_messages


def _messages(n: int) -> Iterator[dict[str, Any]]:
    return users_messages(n, state_every=5)


def _run_with_sdk_drains(tmp_path: Any) -> list[dict[str, Any]]:
    """Run a dry run with every drain the SDK can trigger, and return our STATE writes."""
    target = TargetUserpilot(
        config={"dry_run": True, "output_dir": str(tmp_path / "out"), "batch_size_rows": 7},
        validate_config=True,
    )
    written: list[dict[str, Any]] = []
    target.run.checkpoints._write = written.append  # ours, out of stdout's way
    # Every record is "too old": the SDK drains all sinks (and would write STATE) after each.
    target._MAX_RECORD_AGE_IN_MINUTES = -1.0
    text = encode_messages(_messages(30)).decode()
    lines = text.splitlines(keepends=True)
    half = len(lines) // 2
    target.process_lines(io.StringIO("".join(lines[:half])))
    target.drain_all()  # what a full sink or a signal makes the SDK do mid-run
    target.process_lines(io.StringIO("".join(lines[half:])))
    target.process_endofpipe()  # the SDK's end: drain_all(is_endofpipe=True)
    return written


def test_the_sdks_drains_never_write_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _run_with_sdk_drains(tmp_path)

    stdout = capsys.readouterr().out
    assert stdout == "", f"something besides checkpoints.py wrote to stdout: {stdout[:500]}"
    assert written, "checkpoints wrote no STATE: the run proved nothing"
    assert written[-1]["bookmarks"]["users"] == 29


def test_a_state_written_by_the_sdks_drain_is_noticed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: let the SDK see STATE too, as its own handler does."""
    ours = TargetUserpilot._process_state_message

    def both(self: TargetUserpilot, message_dict: dict[str, Any]) -> None:
        ours(self, message_dict)
        Target._process_state_message(self, message_dict)

    monkeypatch.setattr(TargetUserpilot, "_process_state_message", both)

    _run_with_sdk_drains(tmp_path)

    lines = capsys.readouterr().out.splitlines()
    assert lines, "the SDK's drains wrote no STATE even when given one: the check is blind"
    assert json.loads(lines[-1])["bookmarks"]["users"] == 29


@pytest.mark.parametrize("name", ["_write_state_message", "drain_all"])
def test_the_sdk_still_has_the_drain_path_these_tests_exercise(name: str) -> None:
    """Should the SDK rename these, the tests above may no longer drive its drains."""
    assert callable(getattr(Target, name, None))


def test_the_sdk_drains_one_sink_at_a_time(tmp_path: Path) -> None:
    target = TargetUserpilot(config={"dry_run": True, "output_dir": str(tmp_path)})

    try:
        assert target.max_parallelism == 1
    finally:
        target.run.close()
