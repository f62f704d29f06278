"""Meltano's loader test and runs of a project with the loader installed (``meltano config
test``, a refused key at Meltano's default log level, a dry run that stores no state), one
project shared by the module's tests.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from target_userpilot.sandbox import Sandbox

from support.meltano import (
    copy_project,
    example_input,
    meltano_env,
    meltano_result,
    meltano_stdout,
    run_meltano,
)


@pytest.fixture(scope="module")
def loader_project(meltano: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with the loader installed, for the `meltano config test` tests."""
    project = copy_project(tmp_path_factory.mktemp("loader") / "project")
    run_meltano(meltano, "install", "loader", "target-userpilot", cwd=project, env=meltano_env())
    return project


#: What Meltano says when the loader test passed.
VERDICT = "Test data was written to your target system"


def test_meltano_config_test_checks_the_connection_and_writes_no_profile(
    meltano: Path, loader_project: Path
) -> None:
    """`meltano config test target-userpilot` sends `meltano_test_stream` (id 1, "Meltano Test
    Record"): the target checks the key and writes nothing; a refused key fails the test.

    Meltano 4.4.1 then stops with its own ProcessLookupError, once it has given its verdict
    (it terminates the loader after waiting for its exit), whatever the loader did; so the
    verdict line is what is asserted, not Meltano's exit code.
    """
    project = loader_project
    key = f"config-test-key-{uuid.uuid4().hex[:8]}"
    verdict = VERDICT

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = meltano_env(TARGET_USERPILOT_API_URL=sandbox.url, TARGET_USERPILOT_API_KEY=key)
        passed = _meltano_debug(meltano, "config", "test", "target-userpilot", cwd=project, env=env)
        env["TARGET_USERPILOT_API_KEY"] = "wrong-" + key
        refused = _meltano_debug(
            meltano, "config", "test", "target-userpilot", cwd=project, env=env
        )
        assert sandbox.profiles("users") == {}
        assert sandbox.profiles("companies") == {}
        calls = [(r["endpoint"], r["status"]) for r in sandbox.request_log()]

    assert verdict in passed.stdout + passed.stderr, (passed.stdout + passed.stderr)[-4000:]
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert verdict not in output, output[-4000:]
    assert "Userpilot refused the API key (HTTP 401)" in output
    assert calls == [("list", 200), ("list", 401)]  # one read-only request each, no upload
    assert key not in passed.stdout + passed.stderr + output


def test_a_refused_key_shows_its_reason_at_meltanos_default_log_level(
    meltano: Path, loader_project: Path
) -> None:
    """Meltano logs the loader's lines at debug level only, and on a failed test ends in its own
    ProcessLookupError before printing the last one: the target says why where Meltano's user
    looks (Meltano's own stderr, meltano_loader.py), once, without the key."""
    key = f"refused-key-{uuid.uuid4().hex[:8]}"

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = meltano_env(
            TARGET_USERPILOT_API_URL=sandbox.url, TARGET_USERPILOT_API_KEY="wrong-" + key
        )
        refused = meltano_result(
            meltano, "config", "test", "target-userpilot", cwd=loader_project, env=env
        )
        assert sandbox.profiles("users") == {}

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert VERDICT not in output
    reason = [line for line in refused.stderr.splitlines() if "Meltano's loader test" in line]
    assert reason == [
        "target-userpilot: Meltano's loader test failed: Userpilot refused the API key (HTTP "
        "401). Check api_key, and api_url for EU or Enterprise accounts (e.g. "
        "https://analytex-eu.userpilot.io)."
    ], output[-4000:]
    assert key not in output
    assert "[debug" not in output  # Meltano's default level: its debug lines are not shown


def _meltano_debug(
    meltano: Path, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``meltano --log-level=debug <args>``, whatever its exit code (the loader's lines are
    logged at debug level)."""
    return meltano_result(meltano, "--log-level=debug", *args, cwd=cwd, env=env)


def test_a_dry_run_under_meltano_stores_no_state_and_the_next_run_loads_everything(
    meltano: Path, tmp_path: Path
) -> None:
    """Meltano saves the STATE a target emits for the tap's next run: a dry run's would move the
    bookmark past records that were only written to files."""
    project = copy_project(tmp_path / "project")
    key = f"dry-run-key-{uuid.uuid4().hex[:8]}"
    users, _, last_state = example_input()
    state_id = "dev:tap-example-to-target-userpilot"
    run_meltano(meltano, "install", cwd=project, env=meltano_env())

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = meltano_env(
            TARGET_USERPILOT_API_URL=sandbox.url,
            TARGET_USERPILOT_API_KEY=key,
            TARGET_USERPILOT_ROWS_PER_MINUTE="60000",
        )
        dry_env = {
            **env,
            "TARGET_USERPILOT_DRY_RUN": "true",
            "TARGET_USERPILOT_OUTPUT_DIR": str(tmp_path / "preview"),
        }
        previewed = run_meltano(
            meltano, "run", "tap-example", "target-userpilot", cwd=project, env=dry_env
        )
        after_preview = meltano_stdout(meltano, "state", "list", cwd=project, env=meltano_env())
        assert sandbox.profiles("users") == {}
        run_meltano(meltano, "run", "tap-example", "target-userpilot", cwd=project, env=env)
        loaded = set(sandbox.profiles("users"))
        stored = run_meltano(meltano, "state", "get", state_id, cwd=project, env=meltano_env())

    assert state_id not in after_preview  # Meltano had no STATE to store
    assert "STATE messages of the input were held back, none written to stdout" in previewed
    assert (tmp_path / "preview" / "users-1.ndjson").exists()
    assert loaded == users
    assert json.loads(next(line for line in stored.splitlines() if line.startswith("{"))) == {
        "singer_state": last_state
    }
