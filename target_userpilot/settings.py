"""Settings: the contract's table as a JSON schema, and the checks that run before any input.

Values reach the target three ways: a config file (the SDK parses its fractions as
``decimal.Decimal``), ``TARGET_USERPILOT_<NAME>`` environment variables (strings, each read as
its setting's type by :func:`env_config`, at the end of this module), and Python dicts in tests.
:meth:`Settings.from_config` turns all three into one typed, checked :class:`Settings`, so
nothing past this module sees a Decimal or a string where a number belongs. The rules for
``object_mapping`` live beside routing, in ``records/routing.py``; those for ``api_url`` and
``api_key`` beside the client, in ``userpilot/hosts.py``.
"""

from __future__ import annotations

import decimal
import difflib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from singer_sdk import typing as th

from target_userpilot.errors import ConfigurationError
from target_userpilot.logs import METRICS_LOG_LEVELS
from target_userpilot.records.imports import EVENTS_APIS, check_event_mappings
from target_userpilot.records.routing import check_object_mapping, kind_of
from target_userpilot.userpilot.hosts import check_api_key, check_api_url

logger = logging.getLogger("target_userpilot")

DEFAULT_API_URL = "https://analytex.userpilot.io"
MAX_BATCH_ROWS = 10_000
MAX_FILE_BYTES = 50_000_000

CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType,
        secret=True,
        description=(
            "Userpilot API key, sent as 'Authorization: Token ...'. Required unless dry_run."
        ),
    ),
    th.Property(
        "api_url",
        th.StringType,
        default=DEFAULT_API_URL,
        description=(
            "API host. EU data residency: https://analytex-eu.userpilot.io; Enterprise: the "
            "dedicated host shown under Environment in Userpilot. Must be https:// (plain http:// "
            "only for loopback hosts such as the local sandbox)."
        ),
    ),
    th.Property(
        "object_mapping",
        th.ObjectType(additional_properties=True),
        default={},
        description=(
            'Per stream name: {"object": "users" | "companies" | "events" | "ignore", ...}. '
            'Users and companies take "id_property" and "company_id_property"; events take '
            '"user_id_property", and "event_name_property" or a fixed "event_name", and '
            '"event_time_property" (default "timestamp"); with events_api import also '
            '"event_type" ("track" or "page_view", with "hostname_property" and '
            '"pathname_property"), "company_id_property" and "source". Streams without an '
            'entry: "companies"/"company" load companies, "events"/"event" send events, every '
            "other stream loads users; the name counts after a tap's schema prefix "
            "(public-companies, crm.companies)."
        ),
    ),
    th.Property(
        "on_invalid_record",
        th.StringType,
        default="skip",
        allowed_values=["skip", "fail"],
        description=(
            "What a record that cannot become a valid row gets: 'skip' (counted, logged, kept in "
            "rejects_path) or 'fail' (the run stops)."
        ),
    ),
    th.Property(
        "rejects_path",
        th.StringType,
        description=(
            "If set, every rejected record is appended to this file as NDJSON (readable by its "
            "owner only; an existing file is made so). Its folder must exist."
        ),
    ),
    th.Property(
        "plan_path",
        th.StringType,
        description=(
            "If set, the run is a plan: it reads the input and the ledger (read-only) and writes "
            "to this JSON file, and as a summary on stderr, what a real run would do per stream: "
            "new, changed and unchanged profiles, deletions with the mirror-delete guard's "
            "verdict, events new and already sent, rejections. Nothing is sent, nothing is "
            "written to the ledger, no STATE goes out. Its folder must exist."
        ),
    ),
    th.Property(
        "plan_sample_ids",
        th.IntegerType,
        default=5,
        description=(
            "How many ids a plan names as samples of each count (new, changed, to delete...); "
            "0 names none. Ids only, never record contents."
        ),
    ),
    th.Property(
        "batch_size_rows",
        th.IntegerType,
        default=MAX_BATCH_ROWS,
        description="Rows per upload, at most 10,000 (Userpilot's limit).",
    ),
    th.Property(
        "max_file_bytes",
        th.IntegerType,
        default=MAX_FILE_BYTES,
        description="Bytes per NDJSON upload, at most 50,000,000 (Userpilot's limit).",
    ),
    th.Property(
        "rows_per_minute",
        th.NumberType,
        default=1800,
        description="Userpilot's processing rate, for ETAs and for pacing job status polls.",
    ),
    th.Property(
        "job_timeout_seconds",
        th.IntegerType,
        default=7200,
        description=(
            "How long one job (including waiting out another client's job) may take before the "
            "run fails."
        ),
    ),
    th.Property(
        "request_timeout_seconds",
        th.NumberType,
        default=60,
        description=(
            "Read timeout of one HTTP request to Userpilot; a request that times out is retried, "
            "except an event's (Userpilot may have taken it: it is counted as unconfirmed)."
        ),
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description=(
            "No network at all: write each batch, exactly as it would be uploaded, to output_dir. "
            "Writes no STATE: nothing is durable in Userpilot, so the bookmark does not move."
        ),
    ),
    th.Property(
        "output_dir",
        th.StringType,
        default="userpilot-batches",
        description=(
            "Where dry_run writes <object>-<n>.ndjson files; a dry run first removes the files "
            "of the previous one there."
        ),
    ),
    th.Property(
        "skip_unchanged",
        th.BooleanType,
        default=False,
        description=(
            "Do not re-send a profile whose row is identical to the last one Userpilot confirmed."
        ),
    ),
    th.Property(
        "state_db",
        th.StringType,
        default=".target-userpilot/state.db",
        description=(
            "The ledger (row hashes for skip_unchanged, keys of events already sent, the sync "
            "history, deletions accepted, full-table versions for mirror deletes, the flattened "
            "keys a null object clears): a SQLite file path, or a SQLAlchemy URL such as "
            "postgresql://user:pass@host/db (driver from the `postgres` extra)."
        ),
    ),
    th.Property(
        "ledger_history_entries",
        th.IntegerType,
        default=3,
        description=(
            "Sync history entries kept per profile in the ledger, newest first (which job or "
            "deletion request sent it, when, and how it ended; read with userpilot-ledger). 0 "
            "keeps none. Recorded when the run uses the ledger (skip_unchanged, hard_delete)."
        ),
    ),
    th.Property(
        "hard_delete",
        th.BooleanType,
        default=False,
        description=(
            "Records whose _sdc_deleted_at holds a date-time become Userpilot deletion "
            "requests (erasure of the profile and its events, scheduled daily by Userpilot, not "
            "reversible). Off: such records are counted, and neither upserted nor deleted. Any "
            "other non-null mark is an invalid record either way. On, with a tap that sends "
            "full-table versions (ACTIVATE_VERSION), profiles a new version lacks are deleted "
            "too (mirror deletes)."
        ),
    ),
    th.Property(
        "mirror_delete_max_percent",
        th.IntegerType,
        default=10,
        description=(
            "Mirror deletes' guard: the largest share, in percent (1 to 100), of a stream's "
            "known profiles one full-table version may delete; more stops the run before any of "
            "them is deleted (exit 14). Raise it for one run when the source really lost that "
            "many rows."
        ),
    ),
    th.Property(
        "mirror_delete_floor",
        th.IntegerType,
        default=5,
        description=(
            "Mirror deletes of up to this many profiles per version are always allowed, "
            "whatever mirror_delete_max_percent says (small tables)."
        ),
    ),
    th.Property(
        "mirror_delete_on_end_of_input",
        th.BooleanType,
        default=False,
        description=(
            "For taps that send ACTIVATE_VERSION only before a copy (Meltano SDK taps such as "
            "tap-postgres): a clean end of input, with a STATE after the copy's last record, "
            "ends the version. Off: only a closing ACTIVATE_VERSION does. See the README's "
            "Mirror deletes for the risk."
        ),
    ),
    th.Property(
        "mirror_delete_filtered_streams",
        th.BooleanType,
        default=False,
        description=(
            "Mirror deletes for streams whose stream_maps entry has a __filter__: the records "
            "a filter leaves out never reach the target and look deleted from the source, so "
            "such streams get none unless this is on (then a profile the filter leaves out is "
            "deleted)."
        ),
    ),
    th.Property(
        "batch_wait_seconds",
        th.NumberType,
        default=2,
        description=(
            "Longest a row waits in an open batch while no job of ours runs; then that batch "
            "goes up, so a quiet stream or a slow tap never leaves Userpilot idle or holds "
            "STATE back."
        ),
    ),
    th.Property(
        "events_per_minute",
        th.NumberType,
        default=600,
        description="Pace of event (track) requests; Userpilot allows 600 a minute per API key.",
    ),
    th.Property(
        "events_api",
        th.StringType,
        default="track",
        allowed_values=list(EVENTS_APIS),
        description=(
            "How events go: 'track', one real-time request each, stamped when Userpilot "
            "receives it; or 'import', Import API files through the job lane that keep each "
            "event's time (event_time_property), for history and backfills (Enterprise plan "
            "or Growth add-on)."
        ),
    ),
    th.Property(
        "upload_format",
        th.StringType,
        default="ndjson",
        allowed_values=["ndjson", "json"],
        description="NDJSON file uploads, or JSON payloads as a fallback.",
    ),
    th.Property(
        "metrics_log_level",
        th.StringType,
        description=(
            "Level of the SDK's METRIC records (the singer_sdk.metrics logger): record counts per "
            "stream and request durations per endpoint, written at INFO. WARNING or above turns "
            "them off. Unset: the target's own level (TARGET_USERPILOT_LOGLEVEL, else LOGLEVEL, "
            "else INFO), as the SDK sets it."
        ),
    ),
).to_dict()


def json_type(prop: Mapping[str, Any]) -> str | None:
    """The one non-null JSON type of a schema property, or None when it has several or none."""
    declared = prop.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    types = [name for name in types if name != "null"]
    return types[0] if len(types) == 1 else None


def _settings_of_type(wanted: str) -> tuple[str, ...]:
    return tuple(
        name for name, prop in CONFIG_SCHEMA["properties"].items() if json_type(prop) == wanted
    )


#: Settings whose JSON type is "number" or "integer": read as floats and ints whatever their
#: source (config files give Decimals, environment variables strings).
NUMBER_SETTINGS = _settings_of_type("number")
INTEGER_SETTINGS = _settings_of_type("integer")


@dataclass(frozen=True)
class Settings:
    """The checked, typed settings of one run."""

    api_key: str | None = None
    api_url: str = DEFAULT_API_URL
    object_mapping: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    on_invalid_record: str = "skip"
    rejects_path: str | None = None
    plan_path: str | None = None
    plan_sample_ids: int = 5
    batch_size_rows: int = MAX_BATCH_ROWS
    max_file_bytes: int = MAX_FILE_BYTES
    rows_per_minute: float = 1800.0
    job_timeout_seconds: int = 7200
    request_timeout_seconds: float = 60.0
    dry_run: bool = False
    output_dir: str = "userpilot-batches"
    skip_unchanged: bool = False
    state_db: str = ".target-userpilot/state.db"
    ledger_history_entries: int = 3
    hard_delete: bool = False
    mirror_delete_max_percent: int = 10
    mirror_delete_floor: int = 5
    mirror_delete_on_end_of_input: bool = False
    mirror_delete_filtered_streams: bool = False
    batch_wait_seconds: float = 2.0
    events_per_minute: float = 600.0
    events_api: str = "track"
    upload_format: str = "ndjson"
    metrics_log_level: str | None = None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, known: Iterable[str] | None = None
    ) -> Settings:
        """Check ``config`` and return the settings, or raise :class:`ConfigurationError`.

        ``known`` names every setting the plugin has (the SDK's built-ins included); given it,
        each other key of ``config`` gets one WARNING naming the closest setting.
        """
        if known is not None:
            for sentence in unknown_settings(config, known):
                logger.warning(sentence)
        values = {
            f.name: _typed(f.name, config[f.name])
            for f in fields(cls)
            if config.get(f.name) is not None
        }
        if isinstance(values.get("api_key"), str):
            # A key read from a secrets file ends in a newline, which no header may carry.
            values["api_key"] = values["api_key"].strip()
        for name in ("api_url", "output_dir", "rejects_path", "plan_path"):
            if isinstance(values.get(name), str):
                values[name] = values[name].strip()
        for name in ("output_dir", "rejects_path", "plan_path"):
            if values.get(name):
                values[name] = os.path.expanduser(values[name])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Every check that must fail before any input is read."""
        if not self.dry_run and not self.api_key:
            msg = (
                "api_key is not set. Set it (TARGET_USERPILOT_API_KEY), or set dry_run to write "
                "batches to files without sending anything."
            )
            raise ConfigurationError(msg)
        if self.api_key:
            check_api_key(self.api_key)
        if not self.dry_run:
            check_api_url(self.api_url)
        if self.ledger_history_entries < 0:
            msg = (
                f"ledger_history_entries is {self.ledger_history_entries}; it counts the history "
                "entries kept per profile: 0 (none) or more."
            )
            raise ConfigurationError(msg)
        if not 1 <= self.batch_size_rows <= MAX_BATCH_ROWS:
            msg = (
                f"batch_size_rows is {self.batch_size_rows}; Userpilot takes 1 to "
                f"{MAX_BATCH_ROWS:,} rows per upload."
            )
            raise ConfigurationError(msg)
        if not 1 <= self.max_file_bytes <= MAX_FILE_BYTES:
            msg = (
                f"max_file_bytes is {self.max_file_bytes}; Userpilot takes files of at most "
                f"{MAX_FILE_BYTES:,} bytes."
            )
            raise ConfigurationError(msg)
        for name in (*NUMBER_SETTINGS, *INTEGER_SETTINGS):
            value = getattr(self, name)
            if name in ("mirror_delete_floor", "ledger_history_entries", "plan_sample_ids") and (
                value == 0
            ):
                continue  # none beyond the share; no history kept; no sample ids
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name} is {value}; it must be a positive number.")
        if self.mirror_delete_max_percent > 100:
            msg = (
                f"mirror_delete_max_percent is {self.mirror_delete_max_percent}; it is a share of "
                "a stream's profiles in percent, from 1 to 100."
            )
            raise ConfigurationError(msg)
        if self.on_invalid_record not in ("skip", "fail"):
            raise ConfigurationError("on_invalid_record must be 'skip' or 'fail'.")
        if self.upload_format not in ("ndjson", "json"):
            raise ConfigurationError("upload_format must be 'ndjson' or 'json'.")
        if self.metrics_log_level is not None and (
            self.metrics_log_level.strip().upper() not in METRICS_LOG_LEVELS
        ):
            msg = (
                f"metrics_log_level is '{self.metrics_log_level[:40]}'; it takes "
                f"{', '.join(METRICS_LOG_LEVELS)} (any case). Metrics are written at INFO: "
                "WARNING turns them off."
            )
            raise ConfigurationError(msg)
        check_object_mapping(self.object_mapping)
        check_event_mappings(self.object_mapping, self.events_api)
        if self.rejects_path:
            _check_rejects_path(self.rejects_path)
        if self.dry_run:
            _check_output_dir(self.output_dir)
        if self.plan_path is not None:
            _check_plan_path(self.plan_path, dry_run=self.dry_run)


def _typed(name: str, value: Any) -> Any:
    """``value`` as the Python type of setting ``name``, or a ConfigurationError naming it."""
    wanted = json_type(CONFIG_SCHEMA["properties"][name])
    if wanted == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (float, decimal.Decimal)):
            # 1800.0 is refused like 1800.5: the SDK's own schema check refuses both in a
            # config file, and one rule for file, environment and dict is easier to explain.
            msg = f"{name} is {value}; it must be a whole number, such as {_default(name)}."
            raise ConfigurationError(msg)
        raise ConfigurationError(f"{name} must be a whole number, such as {_default(name)}.")
    if wanted == "number":
        if isinstance(value, str):
            return _number_from_text(name, value)
        if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
            return float(value)
        raise ConfigurationError(f"{name} must be a number, such as {_default(name)}.")
    if wanted == "boolean" and not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be true or false.")
    if wanted == "string" and not isinstance(value, str):
        # Never the value: api_key is a string setting.
        raise ConfigurationError(f"{name} must be a string.")
    if wanted == "object" and not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} must be an object.")
    return value


def numbers_from_text(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each number setting given as text (``"2.5"``) read as a float.

    Meltano declares these settings ``kind: string`` (its ``integer`` kind refuses a fraction
    and its ``decimal`` kind fails on an environment variable), so they reach the config file
    as strings. Read here, before the SDK checks the config against the schema.
    """
    values = dict(config)
    for name in NUMBER_SETTINGS:
        if isinstance(values.get(name), str):
            values[name] = _number_from_text(name, values[name])
    return values


def _number_from_text(name: str, text: str) -> float:
    try:
        number = float(text.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        msg = (
            f"{name} is '{text.strip()[:60]}', not a number. Set it to a number such as "
            f"{_default(name)} (a fraction such as 2.5 is fine)."
        )
        raise ConfigurationError(msg)
    return number


_ERROR_PLACE = re.compile(r" in config\['([^']+)'\]")
_DECIMAL = re.compile(r"Decimal\('([^']*)'\)")


def explain_config_errors(errors: Iterable[str]) -> list[str]:
    """The SDK's config schema errors, as sentences an operator can act on.

    They quote the offending value: for a secret setting only its name is kept. A config file's
    fractions are Decimals, which the SDK would show as ``Decimal('1800.5')``.
    """
    explained = []
    for error in errors:
        place = _ERROR_PLACE.search(error)
        name = place.group(1) if place else ""
        prop = CONFIG_SCHEMA["properties"].get(name, {})
        fraction = _DECIMAL.search(error)
        if prop.get("secret"):
            explained.append(f"{name} has the wrong type (it must be a string)")
        elif json_type(prop) == "integer" and "is not of type 'integer'" in error and fraction:
            explained.append(
                f"{name} is {fraction.group(1)}; it must be a whole number, such as "
                f"{_default(name)}"
            )
        else:
            explained.append(_DECIMAL.sub(r"\1", error))
    return explained


def _default(name: str) -> Any:
    return CONFIG_SCHEMA["properties"][name].get("default")


def _file_folder(setting: str, path: str, example: str) -> str:
    """The folder of the file ``setting`` names; refused when ``path`` is a folder itself
    (``example`` is the file name suggested in it) or its folder does not exist."""
    if os.path.isdir(path):
        msg = (
            f"{setting} '{path}' is a folder; name a file instead, for example "
            f"'{os.path.join(path, example)}'."
        )
        raise ConfigurationError(msg)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        msg = (
            f"{setting} '{path}' is in a folder that does not exist ({folder}). Create the "
            f"folder, or choose another {setting}."
        )
        raise ConfigurationError(msg)
    return folder


def _check_rejects_path(path: str) -> None:
    folder = _file_folder("rejects_path", path, "rejects.ndjson")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            msg = f"rejects_path '{path}' cannot be written to. Check its permissions."
            raise ConfigurationError(msg)
    elif not os.access(folder, os.W_OK | os.X_OK):
        msg = (
            f"rejects_path '{path}' cannot be created: the folder {folder} is not writable. "
            "Check its permissions, or choose another rejects_path."
        )
        raise ConfigurationError(msg)


def _check_plan_path(path: str, *, dry_run: bool) -> None:
    if dry_run:
        msg = (
            "plan_path and dry_run are both set; a plan already sends nothing. Unset dry_run to "
            "plan the run, or plan_path to write the batches as files."
        )
        raise ConfigurationError(msg)
    if not path:
        raise ConfigurationError("plan_path is empty; name the JSON file the plan is written to.")
    folder = _file_folder("plan_path", path, "userpilot-plan.json")
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"plan_path '{path}' cannot be written: the folder {folder} is not writable."
        raise ConfigurationError(msg)


def _check_output_dir(path: str) -> None:
    if not path:
        raise ConfigurationError("output_dir is empty; name the folder dry_run writes to.")
    if os.path.exists(path):
        if not os.path.isdir(path):
            msg = f"output_dir '{path}' is a file, not a folder. Choose another output_dir."
            raise ConfigurationError(msg)
        if not os.access(path, os.W_OK | os.X_OK):
            msg = f"output_dir '{path}' is not writable. Check its permissions."
            raise ConfigurationError(msg)
        return
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        msg = (
            f"output_dir '{path}' cannot be created: {ancestor} is a file, not a folder. "
            "Choose another output_dir."
        )
        raise ConfigurationError(msg)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        msg = (
            f"output_dir '{path}' cannot be created: {ancestor} is not writable. Check its "
            "permissions, or choose another output_dir."
        )
        raise ConfigurationError(msg)


def unknown_settings(config: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """One sentence per key of ``config`` that is not in ``known``, with the closest setting."""
    names = sorted(set(known))
    by_lower = {name.lower(): name for name in names}
    sentences = []
    for key in config:
        if key in by_lower.values():
            continue
        close = difflib.get_close_matches(str(key).lower(), list(by_lower), n=1, cutoff=0.6)
        hint = f"did you mean {by_lower[close[0]]}?" if close else "see --about for the settings."
        sentences.append(f"Config key '{key}' is not a setting of target-userpilot; {hint}")
    return sentences


# Settings from TARGET_USERPILOT_* environment variables, each read as its schema's type.
#: Boolean environment values: the SDK's words for true, and the words for false. Anything else
#: is refused: the SDK would read a typo such as "ture" as false without a word.
TRUTHY = ("true", "1", "yes", "on")
FALSY = ("false", "0", "no", "off", "")


def env_config(
    schema: Mapping[str, Any], prefix: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Settings from ``<prefix><NAME>`` environment variables, each read as its schema's type.

    The SDK's own reader raises bare ``ValueError``s on a bad integer or JSON value, leaves
    numbers as strings and reads any unrecognised boolean as false. Here a value that cannot be
    its setting's type is a :class:`ConfigurationError` naming the variable. Without
    ``environ``, a ``.env`` file is loaded first, as the SDK does.
    """
    if environ is None:
        _load_dotenv(prefix)
        environ = os.environ
    config: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        variable = prefix + name.upper().replace("-", "_")
        if variable not in environ:
            continue
        logger.info("Parsing '%s' config from env variable '%s'.", name, variable)
        value = _env_value(variable, environ[variable], prop)
        if isinstance(value, dict) and environ.get("MELTANO_LOADER_NAME"):
            value = meltano_nested(value)
        config[name] = value
    return config


def meltano_nested(value: dict[str, Any]) -> dict[str, Any]:
    """An object setting as Meltano hands it to a command, nested as it nests a run's config.

    Meltano sets an object setting's variable with its keys flattened by dots
    (``{"accounts.object": "companies"}``) and nests them again only in the config file of a
    run; a command reading ``--config ENV`` (the loader's ``plan``) gets the flat form. Nested
    here the same way (``\\.`` is a literal dot), the command reads what the run reads.
    """
    nested: dict[str, Any] = {}
    for key, item in value.items():
        parts = [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", key)]
        node = nested
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(item, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(item)
        else:
            node[parts[-1]] = item
    return nested


def _load_dotenv(prefix: str) -> None:
    """Load a ``.env`` file into the environment the way the SDK finds and reads it."""
    # The SDK's own reader, given no settings, loads the .env file and parses nothing: the
    # file is then found and applied exactly as the SDK always did.
    from singer_sdk.configuration._dict_config import parse_environment_config

    parse_environment_config({"properties": {}}, prefix)


def _env_value(variable: str, raw: str, prop: Mapping[str, Any]) -> Any:
    wanted = json_type(prop)
    text = raw.strip()
    # Secrets are never echoed; other values are the operator's own configuration.
    shown = "" if prop.get("secret") else f" is '{text[:60]}'"
    if wanted == "integer":
        try:
            return int(text)
        except ValueError:
            example = prop.get("default", 1)
            msg = f"{variable}{shown}, not a whole number. Set it to an integer such as {example}."
            raise ConfigurationError(msg) from None
    if wanted == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            example = prop.get("default", 1)
            msg = f"{variable}{shown}, not a number. Set it to a number such as {example}."
            raise ConfigurationError(msg)
        return number
    if wanted == "boolean":
        if text.lower() in TRUTHY:
            return True
        if text.lower() in FALSY:
            return False
        msg = f"{variable}{shown}; set it to true or false."
        raise ConfigurationError(msg)
    if wanted in ("object", "array"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            # The position, not the text: stream maps and their config may hold secrets.
            where = ""
            if isinstance(exc, json.JSONDecodeError):
                where = f"line {exc.lineno}, column {exc.colno}"
            msg = (
                f"{variable} is not valid JSON ({getattr(exc, 'msg', exc)} at {where}). It must "
                f"hold a JSON {wanted}."
            )
            raise ConfigurationError(msg) from None
        expected = dict if wanted == "object" else list
        if not isinstance(value, expected):
            msg = f"{variable} holds {kind_of(value)}; it must hold a JSON {wanted}."
            raise ConfigurationError(msg)
        return value
    return raw
