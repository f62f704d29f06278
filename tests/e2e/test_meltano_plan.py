"""The loader's ``plan`` command with the real Meltano CLI, as the README's "Plan a run" types it.

A project of the checkout loads the example once (``skip_unchanged``, so the ledger keeps row
hashes), then plans the same tap output through ``meltano invoke target-userpilot:plan``: every
profile is unchanged, nothing reaches the sandbox, and the plan file is where the README says.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from target_userpilot.sandbox import Sandbox

from support.meltano import copy_project, meltano_env, run_meltano
from support.readme import section


def test_the_plan_command_plans_the_taps_output_with_the_runs_settings(
    meltano: Path, tmp_path: Path
) -> None:
    path = copy_project(tmp_path / "project")
    key = f"plan-key-{uuid.uuid4().hex[:8]}"
    (path / ".env").write_text(f"TARGET_USERPILOT_API_KEY={key}\n", encoding="utf-8")
    command = "meltano invoke tap-example | meltano invoke target-userpilot:plan"
    assert command in section("Plan a run")
    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = meltano_env(
            TARGET_USERPILOT_API_URL=sandbox.url, TARGET_USERPILOT_SKIP_UNCHANGED="true"
        )
        run_meltano(meltano, "install", "loader", "target-userpilot", cwd=path, env=env)
        run_meltano(meltano, "run", "tap-example", "target-userpilot", cwd=path, env=env)
        loaded = {obj: len(sandbox.profiles(obj)) for obj in ("users", "companies")}
        requests = len(sandbox.request_log())

        env["PATH"] = f"{meltano.parent}:{env.get('PATH', '')}"
        planned = subprocess.run(  # noqa: S602 - the README line, a constant
            command,
            check=False,
            shell=True,  # the README line as typed, with its pipe
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

        assert planned.returncode == 0, planned.stderr[-4000:]
        assert len(sandbox.request_log()) == requests
    plan = json.loads((path / "userpilot-plan.json").read_text(encoding="utf-8"))
    assert plan["outcome"]["completes"] is True
    streams = plan["streams"]
    unchanged = {name: s["profiles"]["unchanged"] for name, s in streams.items()}
    assert sum(unchanged.values()) == loaded["users"] + loaded["companies"]
    assert all(
        s["profiles"]["new"] == 0 and s["profiles"]["changed"] == 0 for s in streams.values()
    )
    assert plan["ledger"] == "SQLite file '.target-userpilot/state.db'"
