"""The real Meltano CLI: the project's meltano.yml, configured only through the environment.

Meltano is installed once per machine into `.venv/meltano` (scripts/meltano_venv.py, also run
by `make test`), and runs in a copy of the project in a temporary directory, so its `.meltano/`
(plugin virtualenvs, the state database) never lands in the working tree.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from target_userpilot.sandbox import Sandbox

from support.meltano import (
    copy_project,
    example_input,
    meltano_env,
    meltano_result,
    meltano_stdout,
    run_meltano,
)

REPO = Path(__file__).resolve().parents[2]

HUB_DEFINITION = REPO / "plugin" / "loaders" / "target-userpilot--userpilot.yml"


def test_meltano_run_loads_the_example_with_settings_from_the_environment(
    meltano: Path, tmp_path: Path
) -> None:
    meltano_yml, had_meltano_dir = (REPO / "meltano.yml").read_bytes(), (REPO / ".meltano").exists()
    project = copy_project(tmp_path / "project")
    key = f"env-only-key-{uuid.uuid4().hex[:8]}"
    users, companies, last_state = example_input()
    assert users and companies and last_state

    run_meltano(meltano, "install", cwd=project, env=meltano_env())
    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        # meltano.yml's dev environment points at 127.0.0.1:8765 with the public sandbox key
        # and maps `accounts` to companies: the environment must win on all three.
        env = meltano_env(
            TARGET_USERPILOT_API_URL=sandbox.url,
            TARGET_USERPILOT_API_KEY=key,
            TARGET_USERPILOT_OBJECT_MAPPING=json.dumps({"accounts": {"object": "ignore"}}),
            TARGET_USERPILOT_ROWS_PER_MINUTE="60000",
        )
        # An object setting is merged key by key (README, Meltano): the environment changes
        # `accounts.object`, and meltano.yml's `accounts.id_property` stays.
        dumped = meltano_stdout(
            meltano, "invoke", "--dump=config", "target-userpilot", cwd=project, env=env
        )
        assert json.loads(dumped)["object_mapping"] == {
            "accounts": {"object": "ignore", "id_property": "account_id"}
        }
        checked = run_meltano(
            meltano, "invoke", "target-userpilot", "--check-connection", cwd=project, env=env
        )
        assert f"Connected to {sandbox.url}: the API key was accepted" in checked
        # Meltano's JSON log format: the target's structured records keep their fields.
        output = run_meltano(
            meltano,
            "--log-format=json",
            "run",
            "tap-example",
            "target-userpilot",
            cwd=project,
            env=env,
        )
        loaded_users = sandbox.profiles("users")
        loaded_companies = sandbox.profiles("companies")

    assert set(loaded_users) == users
    assert set(loaded_companies) == companies  # no companies from the ignored accounts stream
    assert "Stream 'accounts' is ignored (object_mapping)." in output
    assert key not in output
    # Meltano runs the loader with the SDK's JSON logs (the structured-logging capability): the
    # summary is a record whose field holds its JSON, and every line Meltano prints is JSON.
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    [summary] = [r["target_userpilot_summary"] for r in records if "target_userpilot_summary" in r]
    assert summary["total"]["rows_sent"] == len(users) + len(companies)
    assert summary["streams"]["accounts"]["object"] == "ignore"
    assert "TARGET_USERPILOT_SUMMARY" not in output
    # The METRIC records reach Meltano with their tags, for its users' monitoring.
    metric_info = [r["metric_info"] for r in records if r.get("event") == "METRIC"]
    counts = {m["tags"]["stream"]: m["value"] for m in metric_info if m["metric"] == "record_count"}
    assert counts == {name: s["received"] for name, s in summary["streams"].items()}
    assert {
        m["tags"]["endpoint"] for m in metric_info if m["metric"] == "http_request_duration"
    } == {"/v1/companies/bulk_identify", "/v1/users/bulk_identify", "/v1/background_jobs/{id}"}
    # Meltano kept the STATE the target emitted last, for the tap's next run.
    state_output = run_meltano(
        meltano,
        "state",
        "get",
        "dev:tap-example-to-target-userpilot",
        cwd=project,
        env=meltano_env(),
    )
    stored = json.loads(next(line for line in state_output.splitlines() if line.startswith("{")))
    assert stored == {"singer_state": last_state}
    # Nothing of this run in the working tree.
    assert (REPO / "meltano.yml").read_bytes() == meltano_yml
    assert (REPO / ".meltano").exists() == had_meltano_dir


def test_hub_definition_adds_a_working_loader_to_a_new_project(
    meltano: Path, tmp_path: Path
) -> None:
    project = tmp_path / "new-project"
    project.mkdir()
    (project / "meltano.yml").write_text(
        yaml.safe_dump(
            {
                "project_id": str(uuid.uuid4()),
                "send_anonymous_usage_stats": False,
                "default_environment": "dev",
                "environments": [{"name": "dev"}],
            }
        )
    )
    definition = yaml.safe_load(HUB_DEFINITION.read_text(encoding="utf-8"))
    env = meltano_env(
        TARGET_USERPILOT_API_KEY="hub-test-key-5512",
        TARGET_USERPILOT_OBJECT_MAPPING='{"contacts": {"object": "users"}}',
    )

    run_meltano(
        meltano,
        "add",
        "--plugin-type",
        "loader",
        "target-userpilot",
        "--from-ref",
        str(HUB_DEFINITION),
        "--no-install",
        cwd=project,
        env=env,
    )
    listed = run_meltano(
        meltano, "config", "list", "target-userpilot", "--all", cwd=project, env=env
    )

    loader = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]["loaders"][0]
    assert loader["variant"] == definition["variant"]
    assert loader["pip_url"] == definition["pip_url"]
    assert {s["name"]: s["kind"] for s in loader["settings"]} == {
        s["name"]: s["kind"] for s in definition["settings"]
    }
    for setting in definition["settings"]:
        assert f"{setting['name']} [env: TARGET_USERPILOT_" in listed, setting["name"]
    assert "hub-test-key-5512" not in listed  # sensitive: Meltano redacts it
    assert "{'contacts': {'object': 'users'}}" in listed


def test_fractional_number_settings_work_through_meltano_config_and_the_environment(
    meltano: Path, tmp_path: Path
) -> None:
    """`kind: integer` refused both (a traceback, then int('0.5')); `decimal` fails from the
    environment in Meltano 4.4. As `kind: string`, the target reads the number itself."""
    project = copy_project(tmp_path / "project")
    for name, value in (("request_timeout_seconds", "2.5"), ("rows_per_minute", "60000.5")):
        said = run_meltano(
            meltano,
            "config",
            "set",
            "target-userpilot",
            name,
            value,
            cwd=project,
            env=meltano_env(),
        )
        assert "Traceback" not in said
    run_meltano(meltano, "install", cwd=project, env=meltano_env())
    key = f"fraction-key-{uuid.uuid4().hex[:8]}"
    users, companies, _ = example_input()

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = meltano_env(
            TARGET_USERPILOT_API_URL=sandbox.url,
            TARGET_USERPILOT_API_KEY=key,
            TARGET_USERPILOT_BATCH_WAIT_SECONDS="0.5",
            TARGET_USERPILOT_EVENTS_PER_MINUTE="1200.5",
        )
        dumped = meltano_stdout(
            meltano, "invoke", "--dump=config", "target-userpilot", cwd=project, env=env
        )
        run_meltano(meltano, "run", "tap-example", "target-userpilot", cwd=project, env=env)
        loaded = set(sandbox.profiles("users")), set(sandbox.profiles("companies"))
        refused = meltano_result(
            meltano,
            "invoke",
            "target-userpilot",
            "--check-connection",
            cwd=project,
            env={**env, "TARGET_USERPILOT_BATCH_WAIT_SECONDS": "half a second"},
        )

    config = json.loads(dumped)
    assert config["request_timeout_seconds"] == "2.5"
    assert config["rows_per_minute"] == "60000.5"
    assert config["batch_wait_seconds"] == "0.5"
    assert config["events_per_minute"] == "1200.5"
    assert loaded[0] == users
    assert loaded[1] >= companies  # and the accounts meltano.yml maps to companies
    # A value that is no number is the target's own clear sentence, not Meltano's traceback.
    assert refused.returncode == 2
    assert "batch_wait_seconds is 'half a second', not a number" in refused.stderr


#: What Meltano says when the loader test passed.
