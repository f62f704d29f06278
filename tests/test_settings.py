"""Settings: every value from a config file, a dict or an environment variable becomes a typed,
checked setting, or the run stops before reading input with exit 2 and a sentence naming it.

End-to-end cases run the real target (``run_target``) against the sandbox; the rest are unit
tests of :class:`Settings` and :func:`env_config`.
"""

from __future__ import annotations

import decimal
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    API_KEY,
    USER_SCHEMA,
    TargetRun,
    record,
    run_target,
    schema,
    user,
    users_messages,
)

from target_userpilot.errors import ConfigurationError
from target_userpilot.settings import (
    CONFIG_SCHEMA,
    Settings,
    env_config,
    explain_config_errors,
    numbers_from_text,
    unknown_settings,
)
from target_userpilot.target import TargetUserpilot

PREFIX = "TARGET_USERPILOT_"


def _stopped(run: TargetRun) -> str:
    """The one 'target-userpilot stopped:' sentence of a failed run."""
    lines = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0].split("target-userpilot stopped: ", 1)[1]


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


def test_an_api_key_with_a_trailing_newline_is_trimmed_and_loads(sandbox, config, tmp_path):
    config["api_key"] = f"  {API_KEY}\n"  # as read from a secrets file

    run = run_target(config, users_messages(20), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 20
    assert API_KEY not in run.stderr + run.stdout


def test_the_client_gets_the_trimmed_key():
    settings = Settings.from_config({"api_key": "\tkey-123 \r\n"})
    assert settings.api_key == "key-123"


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
    key, sandbox, config, tmp_path
):
    config["api_key"] = key

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    assert "api_key" in _stopped_sentence(stderr)
    assert "HTTP header" in _stopped_sentence(stderr)
    for part in ("zq7", "Xv9", "Lw4Rt", "clé"):
        assert part not in stderr
    assert sandbox.profiles("users") == {}


@pytest.mark.parametrize(
    "key",
    ["zq7Xv9Lw4Rt", "zq7 Xv9", "zq7\tXv9", "zq7Xv9é", "zq7\u2019Xv9", "zq7-Xv9_Lw4.Rt~"],
)
def test_settings_and_client_apply_one_api_key_rule(key):
    """A key the settings accept never fails later in the client, and the other way round."""
    from target_userpilot.userpilot.client import UserpilotClient

    def refused(make: Any) -> bool:
        try:
            make()
        except ConfigurationError:
            return True
        return False

    by_settings = refused(lambda: Settings.from_config({"api_key": key}))
    by_client = refused(lambda: UserpilotClient("http://127.0.0.1:9", key))
    assert by_settings == by_client


def test_an_empty_or_blank_api_key_is_not_set():
    with pytest.raises(ConfigurationError, match="api_key is not set"):
        Settings.from_config({"api_key": " \n"})


# Numbers


def test_fractional_numbers_from_a_config_file_load(sandbox, config, tmp_path):
    config.update(request_timeout_seconds=30.5, rows_per_minute=600000.5, batch_wait_seconds=0.5)

    run = run_target(config, users_messages(30), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 30
    assert run.states[-1] == {"bookmarks": {"users": 29, "done": True}}


def test_number_settings_given_as_text_load_as_meltano_passes_them(sandbox, config, tmp_path):
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


@pytest.mark.parametrize("value", ["half a second", "", "nan", "1,5"])
def test_a_number_setting_whose_text_is_no_number_stops_with_exit_2(value, config, tmp_path):
    config["batch_wait_seconds"] = value

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    assert f"batch_wait_seconds is '{value}', not a number" in _stopped_sentence(stderr)


def test_settings_hold_floats_and_ints_never_decimals():
    settings = Settings.from_config(
        {
            "api_key": "k",
            "request_timeout_seconds": decimal.Decimal("120.0"),
            "rows_per_minute": decimal.Decimal("1800.5"),
            "events_per_minute": 600,
            "batch_wait_seconds": decimal.Decimal("0.25"),
            "job_timeout_seconds": 1800,
        }
    )
    assert settings.request_timeout_seconds == 120.0
    assert settings.rows_per_minute == 1800.5
    assert settings.batch_wait_seconds == 0.25
    for name in ("request_timeout_seconds", "rows_per_minute", "events_per_minute"):
        assert type(getattr(settings, name)) is float, name
    assert type(settings.job_timeout_seconds) is int


@pytest.mark.parametrize("value", [1800.5, 1800.0])
def test_a_whole_number_setting_given_with_a_fraction_stops_with_exit_2(value, config, tmp_path):
    config["job_timeout_seconds"] = value

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    sentence = _stopped_sentence(stderr)
    assert f"job_timeout_seconds is {value}; it must be a whole number, such as 7200" in sentence
    assert "Decimal" not in sentence


def test_config_errors_name_a_secret_setting_without_its_value():
    errors = [
        "['zq7Xv9Lw4Rt'] is not of type 'string', 'null' in config['api_key']",
        "Decimal('0.5') is not of type 'integer', 'null' in config['batch_size_rows']",
        "Decimal('12.5') is not one of ['skip', 'fail'] in config['on_invalid_record']",
    ]
    assert explain_config_errors(errors) == [
        "api_key has the wrong type (it must be a string)",
        "batch_size_rows is 0.5; it must be a whole number, such as 10000",
        "12.5 is not one of ['skip', 'fail'] in config['on_invalid_record']",
    ]


@pytest.mark.parametrize(
    "value", [decimal.Decimal("1800.5"), 1800.0, decimal.Decimal("1800.0"), "1800", True]
)
def test_whole_number_settings_refuse_anything_but_an_integer(value):
    with pytest.raises(ConfigurationError, match=r"job_timeout_seconds .*whole number"):
        Settings.from_config({"dry_run": True, "job_timeout_seconds": value})


@pytest.mark.parametrize(
    "name",
    ["rows_per_minute", "request_timeout_seconds", "batch_wait_seconds", "events_per_minute"],
)
@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), decimal.Decimal("NaN")])
def test_number_settings_must_be_positive_and_finite(name, value):
    with pytest.raises(ConfigurationError, match=f"{name} is .*positive number"):
        Settings.from_config({"dry_run": True, name: value})


# New settings


def test_new_settings_have_their_documented_defaults():
    settings = Settings.from_config({"dry_run": True})
    assert settings.batch_wait_seconds == 2.0
    assert settings.events_per_minute == 600.0
    assert settings.hard_delete is False


def test_about_lists_the_new_settings_with_their_defaults(tmp_path):
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


def test_hard_delete_must_be_a_boolean():
    with pytest.raises(ConfigurationError, match="hard_delete must be true or false"):
        Settings.from_config({"dry_run": True, "hard_delete": "yes"})


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
    variable, value, said, sandbox, tmp_path
):
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


def test_settings_from_environment_variables_load(sandbox, tmp_path):
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


def test_env_config_reads_each_setting_as_its_type():
    schema = TargetUserpilot.config_jsonschema
    TargetUserpilot.append_builtin_config(schema)
    environ = _env(
        request_timeout_seconds="30.5",
        job_timeout_seconds=" 1800 ",
        dry_run="Yes",
        skip_unchanged="0",
        hard_delete="on",
        object_mapping='{"a": {"object": "ignore"}}',
        flattening_max_depth="2",
        api_key="k\n",
    )
    environ["UNRELATED"] = "x"

    config = env_config(schema, PREFIX, environ)

    assert config == {
        "request_timeout_seconds": 30.5,
        "job_timeout_seconds": 1800,
        "dry_run": True,
        "skip_unchanged": False,
        "hard_delete": True,
        "object_mapping": {"a": {"object": "ignore"}},
        "flattening_max_depth": 2,
        "api_key": "k\n",  # trimmed by Settings, like a key from a file
    }


def test_a_bad_api_key_variable_is_never_echoed():
    schema = {"properties": {"api_key": {**CONFIG_SCHEMA["properties"]["api_key"]}}}
    schema["properties"]["api_key"]["type"] = ["integer"]  # any type error on a secret
    with pytest.raises(ConfigurationError) as caught:
        env_config(schema, PREFIX, _env(api_key="zq7Xv9Lw4Rt"))
    assert "zq7Xv9Lw4Rt" not in str(caught.value)
    assert "TARGET_USERPILOT_API_KEY" in str(caught.value)


# object_mapping


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"id_property": ["id", "email"]}, "object_mapping['crm'].id_property is a list"),
        ({"id_property": 3}, "object_mapping['crm'].id_property is a number"),
        ({"company_id_property": ""}, "company_id_property is an empty string"),
        ({"object": "accounts"}, "object is 'accounts'; use one of users, companies, events"),
        ({"object": ["users"]}, "object is a list"),
        ({"object": "users", "event_name": "x"}, "unknown key(s) event_name"),
        ({"object": "events", "id_property": "id"}, "unknown key(s) id_property"),
        ({"object": "events", "event_name": 7}, "event_name is a number"),
        ({"object": "users", "id": "user_id"}, "takes object, id_property, company_id_property"),
        ("users", "must be an object"),
    ],
)
def test_a_bad_object_mapping_entry_is_refused_naming_the_stream_and_key(entry, said):
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_config({"dry_run": True, "object_mapping": {"crm": entry}})
    assert said in str(caught.value)
    assert "'crm'" in str(caught.value)


def test_an_id_property_given_as_a_list_stops_the_run_with_exit_2(config, tmp_path):
    config["object_mapping"] = {"users": {"id_property": ["id"]}}

    code, stderr = _refused_before_input(config, tmp_path)

    assert code == 2, stderr[-3000:]
    assert "object_mapping['users'].id_property is a list" in _stopped_sentence(stderr)


@pytest.mark.parametrize(
    "mapping",
    [
        {"object": "events", "user_id_property": "uid", "event_name_property": "what"},
        {"object": "events", "event_name": "invoice_paid"},
        {"object": "users", "id_property": "uid", "company_id_property": "org"},
        {"object": "companies", "id_property": "org_id"},
        {"object": "ignore", "id_property": "uid"},  # a stream switched off keeps its entry
        {"id_property": "uid"},
    ],
)
def test_object_mapping_accepts_each_objects_own_keys(mapping):
    settings = Settings.from_config({"dry_run": True, "object_mapping": {"s": mapping}})
    assert settings.object_mapping == {"s": mapping}


def test_an_entry_without_object_takes_the_keys_of_the_streams_default_object():
    Settings.from_config({"dry_run": True, "object_mapping": {"events": {"event_name": "x"}}})
    with pytest.raises(ConfigurationError, match=r"an entry without object \(users\)"):
        Settings.from_config({"dry_run": True, "object_mapping": {"orders": {"event_name": "x"}}})


# Unknown config keys


def test_an_unknown_config_key_gets_one_warning_with_the_closest_setting(sandbox, config, tmp_path):
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


def test_every_setting_of_about_is_known_sdk_built_ins_included(sandbox, config, tmp_path):
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


def test_unknown_settings_match_regardless_of_case():
    (sentence,) = unknown_settings({"API_URL": 1}, ["api_url", "api_key"])
    assert "did you mean api_url?" in sentence


# Paths


def test_an_empty_output_dir_is_refused_in_a_dry_run():
    with pytest.raises(ConfigurationError, match="output_dir is empty"):
        Settings.from_config({"dry_run": True, "output_dir": " "})


def test_paths_are_trimmed_and_a_leading_tilde_means_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.from_config(
        {"dry_run": True, "output_dir": "~/batches\n", "rejects_path": " ~/rejects.ndjson"}
    )
    assert settings.output_dir == str(tmp_path / "batches")
    assert settings.rejects_path == str(tmp_path / "rejects.ndjson")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_rejects_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    with pytest.raises(ConfigurationError, match="not writable"):
        Settings.from_config({"dry_run": True, "rejects_path": str(folder / "r.ndjson")})


def test_a_flattening_separator_other_than_two_underscores_is_a_configuration_error(
    sandbox, config, tmp_path
):
    config |= {"flattening_enabled": True, "flattening_max_depth": 3, "flattening_separator": "."}
    messages = [schema("users", USER_SCHEMA, ["id"]), record("users", user(1))]

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 2, run.stderr[-3000:]
    assert "flattening_separator is '.'" in run.stderr
    assert sandbox.profiles("users") == {}


def test_no_setting_description_trips_meltanos_loader_test():
    """`meltano --log-level=debug config test` fails a loader that prints "error" or
    "exception" anywhere (Meltano 4.4.1's plugin_test_service), and at DEBUG the SDK prints the
    settings' schema, descriptions included: a description saying "WARNING or ERROR" failed it.
    """
    words = [
        name
        for name, prop in CONFIG_SCHEMA["properties"].items()
        if re.search(r"error|exception", str(prop.get("description", "")), re.IGNORECASE)
    ]
    assert words == []
