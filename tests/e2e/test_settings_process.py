"""Settings refused before any input is read: the process exits 2 with a sentence naming the
setting, while the tap still writes to it; and ``--about`` lists every setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox


def _refused_before_input(
    config: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the target with stdin left open and silent: only a check made before reading any
    input can end it. Returns the exit code and stderr."""
    config_path = tmp_path / "refused-config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )
    try:
        _, stderr = proc.communicate(timeout=30)  # closes nothing it was not given
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr.decode()


def _stopped_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0].split("target-userpilot stopped: ", 1)[1]


# api_key


@pytest.mark.parametrize(
    "key",
    [
        "zq7-clé-中文-Xv9",
        "zq7Xv9\nLw4Rt",
        "zq7Xv9\x00Lw4Rt",
        "zq7Xv9\x85Lw4Rt",
        "zq7Xv9 Lw4Rt",
        "zq7Xv9\u00a0Lw4Rt",
    ],
    ids=[
        "non-latin-1",
        "newline-inside",
        "nul-inside",
        "c1-control-inside",
        "space-inside",
        "no-break-space-inside",
    ],
)
def test_an_api_key_that_cannot_go_in_a_header_stops_with_exit_2_without_the_key(
    key: str, sandbox: Sandbox, config: dict[str, Any], tmp_path: Path
) -> None:
    config["api_key"] = key

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    assert "api_key" in _stopped_sentence(stderr)
    assert "HTTP header" in _stopped_sentence(stderr)
    for part in ("zq7", "Xv9", "Lw4Rt", "clé"):
        assert part not in stderr
    assert sandbox.profiles("users") == {}


# Numbers


@pytest.mark.parametrize("value", ["half a second", "", "nan", "1,5"])
def test_a_number_setting_whose_text_is_no_number_stops_with_exit_2(
    value: str, config: dict[str, Any], tmp_path: Path
) -> None:
    config["batch_wait_seconds"] = value

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    assert f"batch_wait_seconds is '{value}', not a number" in _stopped_sentence(stderr)


@pytest.mark.parametrize("value", [1800.5, 1800.0])
def test_a_whole_number_setting_given_with_a_fraction_stops_with_exit_2(
    value: float, config: dict[str, Any], tmp_path: Path
) -> None:
    config["job_timeout_seconds"] = value

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    sentence = _stopped_sentence(stderr)
    assert f"job_timeout_seconds is {value}; it must be a whole number, such as 7200" in sentence
    assert "Decimal" not in sentence


# New settings


def test_about_lists_the_new_settings_with_their_defaults(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--about", "--format=json"],
        capture_output=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    properties = json.loads(out)["settings"]["properties"]
    assert properties["hard_delete"]["default"] is False
    assert properties["batch_wait_seconds"]["default"] == 2.0
    assert properties["events_per_minute"]["default"] == 600
    assert "postgresql://" in properties["state_db"]["description"]
    assert "events" in properties["object_mapping"]["description"]
    for name in ("hard_delete", "batch_wait_seconds", "events_per_minute"):
        assert properties[name]["description"], name


# object_mapping


def test_an_id_property_given_as_a_list_stops_the_run_with_exit_2(
    config: dict[str, Any], tmp_path: Path
) -> None:
    config["object_mapping"] = {"users": {"id_property": ["id"]}}

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    assert "object_mapping['users'].id_property is a list" in _stopped_sentence(stderr)
