"""Bad input where the target's process is the subject: empty input, a rejects_path that cannot
be written (refused before any input is read), and a record nested 3,000 levels deep.

The rest of bad input runs in process: ``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support.messages import USER_SCHEMA, record, schema, state, user
from support.runner import TargetProcess, TargetRun

PII = "do-not-log-7731@example.com"
#: The id may be of any type here, so the target's own row rules judge it, not the schema.
ANY_ID_SCHEMA = {**USER_SCHEMA, "properties": {**USER_SCHEMA["properties"], "id": {}}}


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_empty_input_exits_0_without_state_or_requests(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path
) -> None:
    # Not run_target: it ends the input with a newline, which makes the input not empty.
    config_path = tmp_path / "empty.json"
    config_path.write_text(json.dumps(quick_poll_config))
    proc = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert proc.stdout == b""
    assert "target-userpilot stopped" not in proc.stderr.decode()
    assert sandbox.stats()["requests"] == 0


def _refused_before_input(quick_poll_config: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    """Run the target with stdin open and silent: only a check made before any input is read
    can end it. Returns the exit code and the 'stopped:' sentence."""
    config_path = tmp_path / "refused-config.json"
    config_path.write_text(json.dumps(quick_poll_config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in stderr.decode().splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, stderr.decode()[-3000:]
    return proc.returncode, lines[0].split("target-userpilot stopped: ", 1)[1]


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("missing/rejects.ndjson", "is in a folder that does not exist"),
        ("a-folder", "is a folder; name a file instead"),
        ("a-file/rejects.ndjson", "is in a folder that does not exist"),
    ],
)
def test_a_rejects_path_that_cannot_be_written_stops_with_exit_2_before_reading_input(
    where: str, said: str, sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    quick_poll_config["rejects_path"] = str(tmp_path / where)

    code, sentence = _refused_before_input(quick_poll_config, tmp_path)

    assert code == 2
    assert sentence.startswith(f"rejects_path '{tmp_path / where}' ")
    assert said in sentence
    assert sandbox.profiles("users") == {}


# Records nested deeper than the target reads (nesting.py): rejected, never a stop or a traceback


def _deep_record_line(stream: str, rec: dict[str, Any], depth: int, *, arrays: bool = False) -> str:
    """A RECORD line whose record has a property ``deep`` nested ``depth`` levels below it."""
    inner = json.dumps(PII)
    deep = "[" * depth + inner + "]" * depth if arrays else '{"a":' * depth + inner + "}" * depth
    return json.dumps(record(stream, {**rec, "deep": "DEEP"})).replace('"DEEP"', deep)


def test_a_record_nested_3000_deep_is_rejected_and_the_run_goes_on(
    sandbox: Sandbox, quick_poll_config: dict[str, Any], tmp_path: Path
) -> None:
    quick_poll_config["rejects_path"] = str(tmp_path / "rejects.ndjson")
    quick_poll_config["batch_wait_seconds"] = 0.1
    deep = _deep_record_line("users", {"id": 3}, 3000)
    before: list[dict[str, Any] | str] = [schema("users", ANY_ID_SCHEMA, ["id"])]
    before += [record("users", user(i)) for i in range(3)]
    before += [state({"last": 2}), deep, state({"last": "deep"})]
    after = [record("users", user(i)) for i in range(4, 6)] + [state({"last": 5})]

    process = TargetProcess(quick_poll_config, tmp_path)
    try:
        process.send(before)
        # Settled as rejected: the STATE right after it goes out while the tap is still open.
        while process.next_state() != {"last": "deep"}:
            pass
        process.send(after)
        code = process.close()
    finally:
        process.kill()
    run = TargetRun(code, "\n".join(json.dumps(s) for s in process.states), process.stderr)

    assert run.returncode == 0, run.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {"0", "1", "2", "4", "5"}
    counts = run.summary["streams"]["users"]
    assert (counts["received"], counts["rejected"], counts["rows_sent"]) == (6, 1, 5)
    assert run.states[-1] == {"last": 5}
    warning = next(line for line in run.stderr.splitlines() if "Rejected record" in line)
    assert "WARNING" in warning
    assert (
        "Rejected record #4 of stream 'users': it is nested 3,001 levels deep (in 'deep'), "
        "deeper than the 200 levels the target reads. Skipping it." in warning
    )
    assert "Traceback" not in run.stderr
    assert PII not in run.stdout + run.stderr
    # Kept whole, as the JSON text the tap sent: it cannot be parsed to be written as an object.
    (entry,) = _rejects(tmp_path / "rejects.ndjson")
    assert set(entry) == {"stream", "position", "reason", "record_json"}
    assert (entry["stream"], entry["position"]) == ("users", 4)
    assert entry["reason"].startswith("it is nested 3,001 levels deep")
    assert entry["record_json"] == deep.split('"record": ', 1)[1][:-1]
