"""Settings: the contract's table as a JSON schema, and the checks that run before any input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from singer_sdk import typing as th

from target_userpilot.client import check_api_url
from target_userpilot.errors import ConfigurationError
from target_userpilot.rows import OBJECTS

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
            'Per stream name: {"object": "users" | "companies" | "ignore", "id_property": "...", '
            '"company_id_property": "..."}. Streams without an entry: "companies"/"company" load '
            "companies, every other stream loads users."
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
        description="If set, every rejected record is appended to this file as NDJSON.",
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
            "Read timeout of one HTTP request to Userpilot; a request that times out is retried."
        ),
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description=(
            "No network at all: write each batch, exactly as it would be uploaded, to output_dir."
        ),
    ),
    th.Property(
        "output_dir",
        th.StringType,
        default="userpilot-batches",
        description="Where dry_run writes <object>-<n>.ndjson files.",
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
        description="SQLite file that remembers confirmed rows for skip_unchanged.",
    ),
    th.Property(
        "batch_wait_seconds",
        th.NumberType,
        default=2.0,
        description=(
            "Longest a row waits in an open batch while no job of ours runs; then the batch "
            "holding the oldest row goes up."
        ),
    ),
    th.Property(
        "upload_format",
        th.StringType,
        default="ndjson",
        allowed_values=["ndjson", "json"],
        description="NDJSON file uploads, or JSON payloads as a fallback.",
    ),
).to_dict()

#: Settings whose JSON type is "number": environment variables arrive as strings.
NUMBER_SETTINGS = ("rows_per_minute", "request_timeout_seconds", "batch_wait_seconds")


@dataclass(frozen=True)
class Settings:
    """The checked, typed settings of one run."""

    api_key: str | None = None
    api_url: str = DEFAULT_API_URL
    object_mapping: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    on_invalid_record: str = "skip"
    rejects_path: str | None = None
    batch_size_rows: int = MAX_BATCH_ROWS
    max_file_bytes: int = MAX_FILE_BYTES
    rows_per_minute: float = 1800.0
    job_timeout_seconds: float = 7200.0
    request_timeout_seconds: float = 60.0
    dry_run: bool = False
    output_dir: str = "userpilot-batches"
    skip_unchanged: bool = False
    state_db: str = ".target-userpilot/state.db"
    upload_format: str = "ndjson"
    batch_wait_seconds: float = 2.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Check ``config`` and return the settings, or raise :class:`ConfigurationError`."""
        known = {name for name in cls.__dataclass_fields__}
        values = {k: v for k, v in config.items() if k in known and v is not None}
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
        if not self.dry_run:
            check_api_url(self.api_url)
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
        if self.rows_per_minute <= 0:
            raise ConfigurationError("rows_per_minute must be a positive number.")
        if self.job_timeout_seconds <= 0 or self.request_timeout_seconds <= 0:
            raise ConfigurationError(
                "job_timeout_seconds and request_timeout_seconds must be positive."
            )
        if self.on_invalid_record not in ("skip", "fail"):
            raise ConfigurationError("on_invalid_record must be 'skip' or 'fail'.")
        if self.upload_format not in ("ndjson", "json"):
            raise ConfigurationError("upload_format must be 'ndjson' or 'json'.")
        if not isinstance(self.object_mapping, Mapping):
            raise ConfigurationError("object_mapping must be an object keyed by stream name.")
        for stream, entry in self.object_mapping.items():
            if not isinstance(entry, Mapping):
                msg = f'object_mapping[\'{stream}\'] must be an object like {{"object": "users"}}.'
                raise ConfigurationError(msg)
            obj = entry.get("object")
            if obj is not None and obj not in OBJECTS:
                msg = (
                    f"object_mapping['{stream}'].object is '{obj}'; use one of "
                    f"{', '.join(OBJECTS)}."
                )
                raise ConfigurationError(msg)
            unknown = set(entry) - {"object", "id_property", "company_id_property"}
            if unknown:
                msg = (
                    f"object_mapping['{stream}'] has unknown keys {sorted(unknown)}; "
                    "known: object, id_property, company_id_property."
                )
                raise ConfigurationError(msg)
