"""The README's "In your own Meltano project" steps, run as written with the real Meltano CLI.

The shell block is read from README.md, so the test breaks when the README drifts. It runs in a
copy of the checkout in a temporary directory (the block starts there and makes its project
next to it), as one bash script, line by line, with three liberties a person at a terminal
takes too:

- the sandbox's port 8765 becomes a free port, so runs on one machine do not collide;
- after the line that starts the sandbox in the background (``&``), the script waits until the
  port answers, as a person would before the next command;
- the test reads what landed from the sandbox, then stops it.

The loader is installed from the copy of the checkout (``pip_url: -e <checkout>``), never from
an index; its dependencies come from the package registry as for any install.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.meltano import copy_project

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import meltano_venv  # noqa: E402 - a script module, importable once scripts/ is on the path

README = (REPO / "README.md").read_text(encoding="utf-8")
EXAMPLE = REPO / "examples" / "users_and_companies.singer.jsonl"
#: What an editable install of the checkout needs, and what the steps read from it.
CHECKOUT_FILES = ("pyproject.toml", "README.md", "meltano.yml", "examples", "plugin")
README_PORT = "8765"


def readme_steps(text: str = README) -> list[str]:
    """The lines of the shell block under "### In your own Meltano project"."""
    start = text.index("\n### In your own Meltano project\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else None]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's 'In your own Meltano project' section has no ```sh block"
    return block.group(1).strip().splitlines()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _script(steps: list[str], port: int) -> str:
    """The README's steps as one bash script, with the liberties the module docstring names."""
    lines = ["set -euo pipefail"]
    for step in steps:
        lines.append(step.replace(README_PORT, str(port)))
        if re.search(r"&\s*(#.*)?$", step):
            lines.append(
                f"{sys.executable} -c 'import socket, time\n"
                "deadline = time.monotonic() + 120\n"
                "while True:\n"
                "    try:\n"
                f'        socket.create_connection(("127.0.0.1", {port}), 1).close(); break\n'
                "    except OSError:\n"
                '        assert time.monotonic() < deadline, "the sandbox did not start"\n'
                "        time.sleep(0.2)'"
            )
    return "\n".join(lines) + "\n"


def _env(meltano: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MELTANO_", "TARGET_USERPILOT_", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{meltano.parent}{os.pathsep}{env.get('PATH', '')}",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_VENV_BACKEND="uv",  # plugin virtualenvs in seconds, not a minute
        NO_COLOR="1",
    )
    return env


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback sandbox
        document: dict[str, Any] = json.loads(answer.read())
    return document


def _example_ids() -> tuple[set[str], set[str], set[str]]:
    """User, company and account ids of the bundled example."""
    ids: dict[str, set[str]] = {"users": set(), "companies": set(), "accounts": set()}
    keys = {"users": "user_id", "companies": "company_id", "accounts": "account_id"}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD" and message["stream"] in keys:
            stream = message["stream"]
            ids[stream].add(str(message["record"][keys[stream]]))
    return ids["users"], ids["companies"], ids["accounts"]


def test_the_steps_are_found_and_install_from_the_checkout() -> None:
    steps = readme_steps()
    assert any(step.startswith("meltano add ") and "--from-ref" in step for step in steps)
    assert any("target-userpilot:sandbox" in step and step.rstrip().endswith("&") for step in steps)
    assert not any("pip install target-userpilot" in step for step in steps)


def test_readme_meltano_steps_work_in_a_fresh_project_as_written(tmp_path: Path) -> None:
    meltano = meltano_venv.ensure()
    checkout = copy_project(tmp_path / "target-userpilot", CHECKOUT_FILES)
    port = _free_port()
    script = tmp_path / "readme-steps.sh"
    script.write_text(_script(readme_steps(), port), encoding="utf-8")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    users, companies, accounts = _example_ids()

    # Files, not pipes: the sandbox left running in the background would hold a pipe open.
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            ["bash", str(script)],
            cwd=checkout,
            env=_env(meltano),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # the script, Meltano and the sandbox: one group to stop
        )
    try:
        code = proc.wait(timeout=600)
        output = out.read_text(errors="replace") + err.read_text(errors="replace")
        assert code == 0, f"the README's steps failed (exit {code}):\n{output[-5000:]}"
        loaded_users = _get(f"http://127.0.0.1:{port}/_sandbox/profiles/users")
        loaded_companies = _get(f"http://127.0.0.1:{port}/_sandbox/profiles/companies")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    assert f"Connected to http://127.0.0.1:{port}: the API key was accepted" in output
    assert set(loaded_users) == users
    assert set(loaded_companies) == companies | accounts  # object_mapping from the steps
    project = tmp_path / "my-meltano-project"
    loader = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]["loaders"][0]
    assert loader["pip_url"] == f"-e {checkout}"  # installed from the checkout
    assert "sandbox-key" not in (project / "meltano.yml").read_text()  # the key went to .env
    assert "TARGET_USERPILOT_API_KEY" in (project / ".env").read_text()


@pytest.mark.parametrize(
    ("line", "waits"),
    [("meltano invoke target-userpilot:sandbox --port 8765 &", True), ("meltano add x", False)],
)
def test_the_script_waits_for_a_background_step_and_uses_a_free_port(
    line: str, waits: bool
) -> None:
    script = _script([line], 40001)
    assert ("create_connection" in script) == waits
    assert "8765" not in script
