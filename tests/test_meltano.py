"""The real Meltano CLI: the project's meltano.yml, configured only through the environment.

Meltano is installed once per machine into `.venv/meltano` (scripts/meltano_venv.py, also run
by `make test`), and runs in a copy of the project in a temporary directory, so its `.meltano/`
(plugin virtualenvs, the state database) never lands in the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from target_userpilot.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import meltano_venv  # noqa: E402 - a script module, importable once scripts/ is on the path

EXAMPLE = REPO / "examples" / "users_and_companies.singer.jsonl"
HUB_DEFINITION = REPO / "plugin" / "loaders" / "target-userpilot--userpilot.yml"
# What `meltano install` needs to install the loader from the copy (pip_url: -e .), and the
# sample tap with the example it prints.
PROJECT_FILES = ("meltano.yml", "pyproject.toml", "README.md", "examples", "scripts/tap-example")


@pytest.fixture(scope="module")
def meltano() -> Path:
    """The pinned Meltano's command, installed on first use."""
    return meltano_venv.ensure()


def _env(**settings: str) -> dict[str, str]:
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


def _meltano(meltano: Path, *args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(meltano), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"meltano {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def _meltano_stdout(meltano: Path, *args: str, cwd: Path, env: dict[str, str]) -> str:
    """What ``meltano args`` printed on stdout alone (Meltano logs to stderr)."""
    result = subprocess.run(
        [str(meltano), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"meltano {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return result.stdout


def _copy_project(dest: Path) -> Path:
    for name in PROJECT_FILES:
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


def _example() -> tuple[set[str], set[str], dict]:
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


def test_meltano_run_loads_the_example_with_settings_from_the_environment(meltano, tmp_path):
    meltano_yml, had_meltano_dir = (REPO / "meltano.yml").read_bytes(), (REPO / ".meltano").exists()
    project = _copy_project(tmp_path / "project")
    key = f"env-only-key-{uuid.uuid4().hex[:8]}"
    users, companies, last_state = _example()
    assert users and companies and last_state

    _meltano(meltano, "install", cwd=project, env=_env())
    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        # meltano.yml's dev environment points at 127.0.0.1:8765 with the public sandbox key
        # and maps `accounts` to companies: the environment must win on all three.
        env = _env(
            TARGET_USERPILOT_API_URL=sandbox.url,
            TARGET_USERPILOT_API_KEY=key,
            TARGET_USERPILOT_OBJECT_MAPPING=json.dumps({"accounts": {"object": "ignore"}}),
            TARGET_USERPILOT_ROWS_PER_MINUTE="60000",
        )
        # An object setting is merged key by key (README, Meltano): the environment changes
        # `accounts.object`, and meltano.yml's `accounts.id_property` stays.
        dumped = _meltano_stdout(
            meltano, "invoke", "--dump=config", "target-userpilot", cwd=project, env=env
        )
        assert json.loads(dumped)["object_mapping"] == {
            "accounts": {"object": "ignore", "id_property": "account_id"}
        }
        checked = _meltano(
            meltano, "invoke", "target-userpilot", "--check-connection", cwd=project, env=env
        )
        assert f"Connected to {sandbox.url}: the API key was accepted" in checked
        # Meltano's JSON log format: the target's structured records keep their fields.
        output = _meltano(
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
    state_output = _meltano(
        meltano,
        "state",
        "get",
        "dev:tap-example-to-target-userpilot",
        cwd=project,
        env=_env(),
    )
    stored = json.loads(next(line for line in state_output.splitlines() if line.startswith("{")))
    assert stored == {"singer_state": last_state}
    # Nothing of this run in the working tree.
    assert (REPO / "meltano.yml").read_bytes() == meltano_yml
    assert (REPO / ".meltano").exists() == had_meltano_dir


def test_hub_definition_adds_a_working_loader_to_a_new_project(meltano, tmp_path):
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
    env = _env(
        TARGET_USERPILOT_API_KEY="hub-test-key-5512",
        TARGET_USERPILOT_OBJECT_MAPPING='{"contacts": {"object": "users"}}',
    )

    _meltano(
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
    listed = _meltano(meltano, "config", "list", "target-userpilot", "--all", cwd=project, env=env)

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
    meltano, tmp_path
):
    """`kind: integer` refused both (a traceback, then int('0.5')); `decimal` fails from the
    environment in Meltano 4.4. As `kind: string`, the target reads the number itself."""
    project = _copy_project(tmp_path / "project")
    for name, value in (("request_timeout_seconds", "2.5"), ("rows_per_minute", "60000.5")):
        said = _meltano(
            meltano, "config", "set", "target-userpilot", name, value, cwd=project, env=_env()
        )
        assert "Traceback" not in said
    _meltano(meltano, "install", cwd=project, env=_env())
    key = f"fraction-key-{uuid.uuid4().hex[:8]}"
    users, companies, _ = _example()

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = _env(
            TARGET_USERPILOT_API_URL=sandbox.url,
            TARGET_USERPILOT_API_KEY=key,
            TARGET_USERPILOT_BATCH_WAIT_SECONDS="0.5",
            TARGET_USERPILOT_EVENTS_PER_MINUTE="1200.5",
        )
        dumped = _meltano_stdout(
            meltano, "invoke", "--dump=config", "target-userpilot", cwd=project, env=env
        )
        _meltano(meltano, "run", "tap-example", "target-userpilot", cwd=project, env=env)
        loaded = set(sandbox.profiles("users")), set(sandbox.profiles("companies"))
        refused = subprocess.run(
            [str(meltano), "invoke", "target-userpilot", "--check-connection"],
            cwd=project,
            env={**env, "TARGET_USERPILOT_BATCH_WAIT_SECONDS": "half a second"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
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


@pytest.fixture(scope="module")
def loader_project(meltano, tmp_path_factory) -> Path:
    """A copy of the project with the loader installed, for the `meltano config test` tests."""
    project = _copy_project(tmp_path_factory.mktemp("loader") / "project")
    _meltano(meltano, "install", "loader", "target-userpilot", cwd=project, env=_env())
    return project


#: What Meltano says when the loader test passed.
VERDICT = "Test data was written to your target system"


def test_meltano_config_test_checks_the_connection_and_writes_no_profile(meltano, loader_project):
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
        env = _env(TARGET_USERPILOT_API_URL=sandbox.url, TARGET_USERPILOT_API_KEY=key)
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


def test_a_refused_key_shows_its_reason_at_meltanos_default_log_level(meltano, loader_project):
    """Meltano logs the loader's lines at debug level only, and on a failed test ends in its own
    ProcessLookupError before printing the last one: the target says why where Meltano's user
    looks (Meltano's own stderr, meltano_loader.py), once, without the key."""
    key = f"refused-key-{uuid.uuid4().hex[:8]}"

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = _env(TARGET_USERPILOT_API_URL=sandbox.url, TARGET_USERPILOT_API_KEY="wrong-" + key)
        refused = subprocess.run(
            [str(meltano), "config", "test", "target-userpilot"],
            cwd=loader_project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
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
    return subprocess.run(
        [str(meltano), "--log-level=debug", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_dry_run_under_meltano_stores_no_state_and_the_next_run_loads_everything(
    meltano, tmp_path
):
    """Meltano saves the STATE a target emits for the tap's next run: a dry run's would move the
    bookmark past records that were only written to files."""
    project = _copy_project(tmp_path / "project")
    key = f"dry-run-key-{uuid.uuid4().hex[:8]}"
    users, _, last_state = _example()
    state_id = "dev:tap-example-to-target-userpilot"
    _meltano(meltano, "install", cwd=project, env=_env())

    with Sandbox(port=0, api_key=key, rows_per_minute=0) as sandbox:
        env = _env(
            TARGET_USERPILOT_API_URL=sandbox.url,
            TARGET_USERPILOT_API_KEY=key,
            TARGET_USERPILOT_ROWS_PER_MINUTE="60000",
        )
        dry_env = {
            **env,
            "TARGET_USERPILOT_DRY_RUN": "true",
            "TARGET_USERPILOT_OUTPUT_DIR": str(tmp_path / "preview"),
        }
        previewed = _meltano(
            meltano, "run", "tap-example", "target-userpilot", cwd=project, env=dry_env
        )
        after_preview = _meltano_stdout(meltano, "state", "list", cwd=project, env=_env())
        assert sandbox.profiles("users") == {}
        _meltano(meltano, "run", "tap-example", "target-userpilot", cwd=project, env=env)
        loaded = set(sandbox.profiles("users"))
        stored = _meltano(meltano, "state", "get", state_id, cwd=project, env=_env())

    assert state_id not in after_preview  # Meltano had no STATE to store
    assert "STATE messages of the input were held back, none written to stdout" in previewed
    assert (tmp_path / "preview" / "users-1.ndjson").exists()
    assert loaded == users
    assert json.loads(next(line for line in stored.splitlines() if line.startswith("{"))) == {
        "singer_state": last_state
    }
