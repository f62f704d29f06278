"""JSON logs of the target as a process: an unexpected error is one JSON record, and the
README's JSON logs example (the target piped through ``jq``) prints what the README shows.

The target runs with JSON logging turned on as a user turns it on: ``SINGER_SDK_LOG_CONFIG``
naming the README's logging config. The rest runs in process:
``tests/integration/test_logs_in_a_run.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from target_userpilot.sandbox import Sandbox

from support.logs import json_env, json_records, readme_log_config
from support.readme import section

REPO = Path(__file__).resolve().parents[2]


# JSON logs, line by line


def test_an_unexpected_error_is_one_json_record_without_hidden_context(tmp_path: Path) -> None:
    """What Python would print as a traceback of plain lines is one CRITICAL record."""
    script = tmp_path / "bug.py"
    script.write_text(
        "import logging, sys\n"
        "from singer_sdk._logging import _setup_console_logging\n"
        "from target_userpilot import logs\n"
        "_setup_console_logging()\n"
        "logs.structure_stray_output(logging.getLogger('target-userpilot'))\n"
        "import warnings; warnings.warn('an old API')\n"
        "try:\n"
        "    try:\n"
        "        raise ValueError('Token secret-in-logged-context')\n"
        "    except ValueError:\n"
        "        raise RuntimeError('caught') from None\n"
        "except RuntimeError:\n"
        "    logging.getLogger('target_userpilot').error('logged', exc_info=True)\n"
        "try:\n"
        "    raise ValueError('Token secret-in-context')\n"
        "except ValueError:\n"
        "    raise KeyError('the bug') from None\n",
        encoding="utf-8",
    )
    env = {**os.environ, **json_env(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, check=False
    )

    assert done.returncode == 1
    records = json_records(done.stderr)
    assert [r["level"] for r in records] == ["warning", "error", "critical"]
    assert records[1]["exception"]["type"] == "RuntimeError"
    assert records[2]["exception"]["type"] == "KeyError"
    assert "secret-in" not in done.stderr  # `from None` hid them: they stay hidden


def test_the_readme_json_logs_example_prints_what_it_shows(tmp_path: Path) -> None:
    jq = shutil.which("jq")
    if jq is None:
        if os.environ.get("CI"):
            pytest.fail("jq is not installed: the README's example needs it")
        pytest.skip("jq is not installed")
    logs_part = section("Logs and metrics")
    commands = re.search(
        r"```sh\n(SINGER_SDK_LOG_CONFIG=.*?)```\n\n```text\n(.*?)```", logs_part, re.S
    )
    assert commands, "the README's JSON logs example is missing"
    lines = commands[1].replace("\\\n", "").splitlines()
    run_line, jq_lines = lines[0], lines[1:]
    assert run_line.split() == [
        "SINGER_SDK_LOG_CONFIG=logging.yml",
        "target-userpilot",
        "--config",
        "examples/config.sandbox.json",
        "<",
        "examples/users_and_companies.singer.jsonl",
        ">",
        "state.jsonl",
        "2>",
        "log.jsonl",
    ]
    assert all(line.startswith("jq ") for line in jq_lines)
    (tmp_path / "logging.yml").write_text(readme_log_config(), encoding="utf-8")
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "users_and_companies.singer.jsonl", tmp_path / "examples")
    example_config = json.loads((REPO / "examples" / "config.sandbox.json").read_text())

    # The README's sandbox: `userpilot-sandbox --rows-per-minute 0`, with its default key.
    with Sandbox(port=0, api_key=example_config["api_key"], rows_per_minute=0) as sb:
        example_config["api_url"] = sb.url  # a free port instead of 8765: tests run in parallel
        (tmp_path / "examples" / "config.sandbox.json").write_text(json.dumps(example_config))
        target = Path(sys.executable).parent / "target-userpilot"
        done = subprocess.run(
            ["bash", "-c", run_line.replace("target-userpilot", str(target), 1)],
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{target.parent}:{os.environ['PATH']}"},
            check=False,
        )
        assert done.returncode == 0, (tmp_path / "log.jsonl").read_text()[-3000:]

    json_records((tmp_path / "log.jsonl").read_text(encoding="utf-8"))
    shown = []
    for line in jq_lines:
        out = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        shown += out.stdout.splitlines()
    assert shown == commands[2].splitlines()
