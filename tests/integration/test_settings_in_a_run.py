"""Settings in a real run: a config file, environment variables and Meltano's text values load
as their types; an unknown key gets one warning; a bad one stops with exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox
from target_userpilot.settings import (
    Settings,
    numbers_from_text,
    unknown_settings,
)
from target_userpilot.target import TargetUserpilot

from support.messages import API_KEY, USER_SCHEMA, record, schema, user, users_messages
from support.runner import RunTarget, TargetRun

PREFIX = "TARGET_USERPILOT_"


def _stopped(run: TargetRun) -> str:
    """The one 'target-userpilot stopped:' sentence of a failed run."""
    lines = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0].split("target-userpilot stopped: ", 1)[1]


# api_key


def test_an_api_key_with_a_trailing_newline_is_trimmed_and_loads(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config["api_key"] = f"  {API_KEY}\n"  # as read from a secrets file

    run = run_target(config, users_messages(20), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 20
    assert API_KEY not in run.stderr + run.stdout


# Numbers


def test_fractional_numbers_from_a_config_file_load(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(request_timeout_seconds=30.5, rows_per_minute=600000.5, batch_wait_seconds=0.5)

    run = run_target(config, users_messages(30), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 30
    assert run.states[-1] == {"bookmarks": {"users": 29, "done": True}}


def test_number_settings_given_as_text_load_as_meltano_passes_them(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    # meltano.yml declares them kind: string, so the config file Meltano writes holds text.
    config.update(
        request_timeout_seconds="30.5",
        rows_per_minute=" 600000.5 ",
        batch_wait_seconds="0.5",
        events_per_minute="1200",
    )

    run = run_target(config, users_messages(30), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 30
    settings = Settings.from_config(numbers_from_text(config))
    assert (settings.request_timeout_seconds, settings.batch_wait_seconds) == (30.5, 0.5)
    assert settings.rows_per_minute == 600000.5


# Environment variables


def _env(**values: str) -> dict[str, str]:
    return {PREFIX + name.upper(): value for name, value in values.items()}


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("BATCH_SIZE_ROWS", "ten", "not a whole number"),
        ("JOB_TIMEOUT_SECONDS", "1800.5", "not a whole number"),
        ("REQUEST_TIMEOUT_SECONDS", "soon", "not a number"),
        ("DRY_RUN", "ture", "true or false"),
        ("OBJECT_MAPPING", '{"accounts": {"object": "companies"', "not valid JSON"),
        ("STREAM_MAPS", "{users: {}}", "not valid JSON"),
        ("OBJECT_MAPPING", "[]", "must hold a JSON object"),
    ],
)
def test_a_bad_environment_variable_stops_with_exit_2_naming_it(
    variable: str, value: str, said: str, sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    config = {"api_url": sandbox.url, "api_key": API_KEY}
    env = {PREFIX + variable: value}

    run = run_target(
        config, users_messages(5), tmp_path=tmp_path, env=env, args=["--config", "ENV"]
    )

    assert run.returncode == 2, run.stderr[-3000:]
    sentence = _stopped(run)
    assert PREFIX + variable in sentence
    assert said in sentence
    assert "Traceback" not in run.stderr
    assert sandbox.profiles("users") == {}


def test_settings_from_environment_variables_load(
    sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    env = _env(
        api_url=sandbox.url,
        api_key=f"{API_KEY}\n",
        request_timeout_seconds="30.5",
        rows_per_minute="600000",
        job_timeout_seconds="1800",
        batch_size_rows="7",
        skip_unchanged="FALSE",
        object_mapping='{"accounts": {"object": "companies", "id_property": "id"}}',
        stream_maps='{"users": {"plan": "plan.upper() if plan else None"}}',
    )
    run = run_target({}, users_messages(20), tmp_path=tmp_path, env=env, args=["--config", "ENV"])

    assert run.returncode == 0, run.stderr[-3000:]
    profiles = sandbox.profiles("users")
    assert len(profiles) == 20
    assert {p["metadata"]["plan"] for p in profiles.values()} == {"PRO", "FREE"}
    assert run.summary["streams"]["users"]["jobs"] == 3  # 20 rows, 7 per upload


# Unknown config keys


def test_an_unknown_config_key_gets_one_warning_with_the_closest_setting(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config.update(api_ur="https://example.invalid", skip_unchaged=True, zzz_qqq=1)

    run = run_target(config, users_messages(5), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [line for line in run.stderr.splitlines() if "is not a setting" in line]
    assert len(warnings) == 3, warnings
    assert any("'api_ur'" in w and "did you mean api_url?" in w for w in warnings)
    assert any("'skip_unchaged'" in w and "did you mean skip_unchanged?" in w for w in warnings)
    assert any("'zzz_qqq'" in w and "--about" in w for w in warnings)
    assert all("WARNING" in w for w in warnings)
    assert len(sandbox.profiles("users")) == 5


def test_every_setting_of_about_is_known_sdk_built_ins_included(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    schema = TargetUserpilot.config_jsonschema
    TargetUserpilot.append_builtin_config(schema)
    config.update(
        add_record_metadata=False,
        validate_records=True,
        stream_maps={},
        stream_map_config={},
        flattening_enabled=False,
        flattening_max_depth=3,
        hard_delete=False,
        batch_wait_seconds=1,
        events_per_minute=600,
        batch_size_rows=500,
    )
    assert set(config) <= set(schema["properties"])

    run = run_target(config, users_messages(5), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert "is not a setting" not in run.stderr
    assert unknown_settings(dict.fromkeys(schema["properties"]), schema["properties"]) == []


# Paths


def test_a_flattening_separator_other_than_two_underscores_is_a_configuration_error(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    config |= {"flattening_enabled": True, "flattening_max_depth": 3, "flattening_separator": "."}
    messages = [schema("users", USER_SCHEMA, ["id"]), record("users", user(1))]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 2, run.stderr[-3000:]
    assert "flattening_separator is '.'" in run.stderr
    assert sandbox.profiles("users") == {}
