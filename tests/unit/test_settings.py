"""Settings: every value from a config file, a dict or an environment variable becomes a typed,
checked setting, or the run stops before reading input with exit 2 and a sentence naming it.

Unit tests of :class:`Settings` and :func:`env_config`; the same settings in real runs are in
``tests/integration/test_settings_in_a_run.py``, and those refused before any input in
``tests/e2e/test_settings_process.py``.
"""

from __future__ import annotations

import decimal
import os
import re
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.errors import ConfigurationError
from target_userpilot.settings import (
    CONFIG_SCHEMA,
    Settings,
    env_config,
    explain_config_errors,
    unknown_settings,
)
from target_userpilot.target import TargetUserpilot

PREFIX = "TARGET_USERPILOT_"


# api_key


def test_the_client_gets_the_trimmed_key() -> None:
    settings = Settings.from_config({"api_key": "\tkey-123 \r\n"})
    assert settings.api_key == "key-123"


@pytest.mark.parametrize(
    "key",
    ["zq7Xv9Lw4Rt", "zq7 Xv9", "zq7\tXv9", "zq7Xv9é", "zq7\u2019Xv9", "zq7-Xv9_Lw4.Rt~"],
)
def test_settings_and_client_apply_one_api_key_rule(key: str) -> None:
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


def test_an_empty_or_blank_api_key_is_not_set() -> None:
    with pytest.raises(ConfigurationError, match="api_key is not set"):
        Settings.from_config({"api_key": " \n"})


# Numbers


def test_settings_hold_floats_and_ints_never_decimals() -> None:
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


def test_config_errors_name_a_secret_setting_without_its_value() -> None:
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
def test_whole_number_settings_refuse_anything_but_an_integer(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"job_timeout_seconds .*whole number"):
        Settings.from_config({"dry_run": True, "job_timeout_seconds": value})


@pytest.mark.parametrize(
    "name",
    ["rows_per_minute", "request_timeout_seconds", "batch_wait_seconds", "events_per_minute"],
)
@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), decimal.Decimal("NaN")])
def test_number_settings_must_be_positive_and_finite(
    name: str, value: float | decimal.Decimal
) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} is .*positive number"):
        Settings.from_config({"dry_run": True, name: value})


# New settings


def test_new_settings_have_their_documented_defaults() -> None:
    settings = Settings.from_config({"dry_run": True})
    assert settings.batch_wait_seconds == 2.0
    assert settings.events_per_minute == 600.0
    assert settings.hard_delete is False


def test_hard_delete_must_be_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match="hard_delete must be true or false"):
        Settings.from_config({"dry_run": True, "hard_delete": "yes"})


# Environment variables


def _env(**values: str) -> dict[str, str]:
    return {PREFIX + name.upper(): value for name, value in values.items()}


def test_env_config_reads_each_setting_as_its_type() -> None:
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


def test_a_bad_api_key_variable_is_never_echoed() -> None:
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
def test_a_bad_object_mapping_entry_is_refused_naming_the_stream_and_key(
    entry: object, said: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_config({"dry_run": True, "object_mapping": {"crm": entry}})
    assert said in str(caught.value)
    assert "'crm'" in str(caught.value)


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
def test_object_mapping_accepts_each_objects_own_keys(mapping: dict[str, Any]) -> None:
    settings = Settings.from_config({"dry_run": True, "object_mapping": {"s": mapping}})
    assert settings.object_mapping == {"s": mapping}


def test_an_entry_without_object_takes_the_keys_of_the_streams_default_object() -> None:
    Settings.from_config({"dry_run": True, "object_mapping": {"events": {"event_name": "x"}}})
    with pytest.raises(ConfigurationError, match=r"an entry without object \(users\)"):
        Settings.from_config({"dry_run": True, "object_mapping": {"orders": {"event_name": "x"}}})


# Unknown config keys


def test_unknown_settings_match_regardless_of_case() -> None:
    (sentence,) = unknown_settings({"API_URL": 1}, ["api_url", "api_key"])
    assert "did you mean api_url?" in sentence


# Paths


def test_an_empty_output_dir_is_refused_in_a_dry_run() -> None:
    with pytest.raises(ConfigurationError, match="output_dir is empty"):
        Settings.from_config({"dry_run": True, "output_dir": " "})


def test_paths_are_trimmed_and_a_leading_tilde_means_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.from_config(
        {"dry_run": True, "output_dir": "~/batches\n", "rejects_path": " ~/rejects.ndjson"}
    )
    assert settings.output_dir == str(tmp_path / "batches")
    assert settings.rejects_path == str(tmp_path / "rejects.ndjson")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_rejects_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    with pytest.raises(ConfigurationError, match="not writable"):
        Settings.from_config({"dry_run": True, "rejects_path": str(folder / "r.ndjson")})


def test_no_setting_description_trips_meltanos_loader_test() -> None:
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
