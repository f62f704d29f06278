"""The real Meltano CLI for the end-to-end tests: its environment, its commands, a project copy.

Meltano is installed once per machine into `.venv/meltano` (``scripts/meltano_venv.py``); the
``meltano`` fixture (``conftest.py``) gives its command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# What `meltano install` needs to install the loader from the copy (pip_url: -e .), and the
# sample tap with the example it prints.
PROJECT_FILES = ("meltano.yml", "pyproject.toml", "README.md", "examples", "scripts/tap-example")
#: The bundled example input the sample tap prints.
EXAMPLE = REPO / "examples" / "users_and_companies.singer.jsonl"


def example_input() -> tuple[set[str], set[str], dict[str, Any]]:
    """User ids, company ids and the last STATE of the bundled example input."""
    users, companies, last_state = set(), set(), {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD" and message["stream"] == "users":
            users.add(message["record"]["user_id"])
        elif message["type"] == "RECORD" and message["stream"] == "companies":
            companies.add(message["record"]["company_id"])
        elif message["type"] == "STATE":
            last_state = message["value"]
    return users, companies, last_state


def meltano_env(**settings: str) -> dict[str, str]:
    """This process's environment without any Meltano or target settings, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MELTANO_", "TARGET_USERPILOT_", "TAP_EXAMPLE_"))
    }
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_VENV_BACKEND="uv",  # plugin virtualenvs in seconds, not a minute
        NO_COLOR="1",
        **settings,
    )
    return env


def meltano_result(
    meltano: Path, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``meltano args`` and return how it ended, whatever its exit code."""
    return subprocess.run(
        [str(meltano), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_meltano(meltano: Path, *args: str, cwd: Path, env: dict[str, str]) -> str:
    """Run ``meltano args``, failing the test unless it succeeds; its stdout and stderr."""
    result = meltano_result(meltano, *args, cwd=cwd, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"meltano {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def meltano_stdout(meltano: Path, *args: str, cwd: Path, env: dict[str, str]) -> str:
    """What ``meltano args`` printed on stdout alone (Meltano logs to stderr)."""
    result = meltano_result(meltano, *args, cwd=cwd, env=env)
    assert result.returncode == 0, f"meltano {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return result.stdout


def copy_project(dest: Path, files: Iterable[str] = PROJECT_FILES) -> Path:
    """Copy ``files`` of the checkout (what a Meltano project of it needs unless told) and the
    package into ``dest``."""
    for name in files:
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    shutil.copytree(
        REPO / "target_userpilot",
        dest / "target_userpilot",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return dest
