"""target-userpilot: the Singer target's declaration and its run lifecycle."""

from __future__ import annotations

import copy
import logging
import sys
import time
import typing as t

import click
from singer_sdk import Target
from singer_sdk.exceptions import (
    ConfigValidationError,
    InvalidJSONSchema,
    MappingError,
)
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.mapper import SameRecordTransform

from target_userpilot.client import UserpilotClient
from target_userpilot.errors import (
    EXIT_CODES,
    AuthenticationError,
    Terminated,
    TransientError,
    UnexpectedAnswer,
    UserpilotError,
    exit_code,
)
from target_userpilot.load import Load
from target_userpilot.reader import InputReader
from target_userpilot.settings import CONFIG_SCHEMA, Settings, env_config, explain_config_errors
from target_userpilot.sinks import UserpilotSink

#: The SDK's record metadata properties, dropped from records unless ``add_record_metadata``.
_SDC_KEYS = (
    "_sdc_extracted_at",
    "_sdc_received_at",
    "_sdc_batched_at",
    "_sdc_deleted_at",
    "_sdc_sequence",
    "_sdc_table_version",
    "_sdc_sync_started_at",
)


class TargetUserpilot(Target):
    """Loads user and company profiles into Userpilot through its bulk API."""

    name = "target-userpilot"
    message_reader_class = InputReader
    # A copy: the SDK adds its built-in settings to the schema it is given.
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)
    default_sink_class = UserpilotSink

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # One job at a time anyway: parallel drains would only queue on the lane.
        self.max_parallelism = 1
        #: Per stream, the fast path's decision (see ``_fast_stream``), valid for its maps.
        self._fast_streams: dict[str, tuple[t.Any, str | None, bool]] = {}
        settings = Settings.from_config(self.config, known=self.config_jsonschema["properties"])
        self.load = Load(settings, user_agent=f"{self.name}")

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """The SDK's built-in settings, less ``load_method``: Userpilot always merges profiles."""
        super().append_builtin_config(config_jsonschema)
        config_jsonschema["properties"].pop("load_method", None)

    @classproperty
    def _env_var_config(cls) -> dict[str, t.Any]:
        """Environment settings read by type; a bad value names its variable (exit 2)."""
        schema = cls.config_jsonschema
        cls.append_builtin_config(schema)
        return env_config(schema, cls._env_var_prefix)

    # Lifecycle

    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        """SIGTERM/SIGINT: stop reading; the job in flight is awaited on the way out (exit 10)."""
        if not hasattr(self, "load"):  # still starting: nothing read, nothing to wait for
            raise Terminated(f"Received signal {signum} while starting; no input was read.")
        self.load.terminate(signum)

    def _process_record_message(self, message_dict: dict) -> None:
        """The SDK's record handling, without its per-record overhead in the common case.

        A stream whose only map passes records through unchanged (no ``stream_maps`` entry, no
        flattening) skips the SDK's record copy, map call and no-op hooks; everything else
        goes the SDK's way. Kept as the SDK does it: records before their schema, ``_sdc_``
        metadata per ``add_record_metadata``, validation, the read tally and record counter,
        draining a full sink and draining all when a record is older than the max age.
        """
        stream_name = message_dict.get("stream")
        maps = self.mapper.stream_maps.get(stream_name)  # type: ignore[arg-type]
        fast = self._fast_streams.get(stream_name)  # type: ignore[arg-type]
        if fast is None or fast[0] is not maps:
            fast = self._fast_stream(stream_name, maps)
        record = message_dict.get("record")
        alias = fast[1]
        if alias is None or type(record) is not dict:
            super()._process_record_message(message_dict)
            return
        sink = self._sinks_active.get(alias)
        if sink is None:
            self._assert_sink_exists(alias)  # raises RecordsWithoutSchemaException
        context = sink._pending_batch
        if context is None:
            context = sink._get_context(record)
        if fast[2]:
            sink._add_sdc_metadata_to_record(record, message_dict, context)
        else:
            for key in _SDC_KEYS:
                if key in record:
                    del record[key]
        if sink._validator is not None:
            sink._validate_and_parse(record)
        sink._total_records_read += 1  # tally_record_read, inlined
        sink._batch_records_read += 1
        sink.process_record(record, context)
        sink.record_counter_metric.increment()
        if sink.is_full:
            self.logger.info(
                "Target sink for '%s' is full. Current size is '%s'. Draining...",
                sink.stream_name,
                sink.current_size,
            )
            self.drain_one(sink)
        if (time.time() - self._last_full_drain_at) / 60 > self._MAX_RECORD_AGE_IN_MINUTES:
            self._handle_max_record_age()

    def _fast_stream(self, stream_name: t.Any, maps: t.Any) -> tuple[t.Any, str | None, bool]:
        """Whether a stream's records may take the fast path: ``(maps, sink name, metadata)``.

        The sink name is None when the SDK's path must be taken: no schema yet (the SDK raises),
        several maps, or a map that changes records.
        """
        alias = None
        if (
            isinstance(stream_name, str)
            and maps is not None
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
            and type(self).get_sink is TargetUserpilot.get_sink
            # A subclass could give the hooks this path leaves out a use.
            and type(self._sinks_active.get(maps[0].stream_alias)) is UserpilotSink
        ):
            alias = maps[0].stream_alias
        fast = (maps, alias, bool(self.config.get("add_record_metadata", False)))
        if isinstance(stream_name, str):
            self._fast_streams[stream_name] = fast
        return fast

    def _process_state_message(self, message_dict: dict) -> None:
        """Hold STATE until its records are durable, instead of writing it after each drain."""
        self._assert_line_requires(message_dict, requires={"value"})
        self.load.add_state(message_dict["value"])

    def _process_schema_message(self, message_dict: dict) -> None:
        """On a schema change, flush the stream's old sink before the new one can upload.

        The SDK would keep the old sink's batch until its next full drain; meanwhile the new
        sink could upload newer rows of the same profiles first, and the older rows sent later
        would overwrite them.
        """
        super()._process_schema_message(message_dict)
        for sink in self._sinks_to_clear:
            self.drain_one(sink)

    def process_endofpipe(self) -> None:
        """Flush every sink, wait for the last job, so the final STATE goes out."""
        try:
            super().process_endofpipe()
            self.load.finish()
        finally:
            self.load.close()

    def listen(self, file_input: t.IO[str] | None = None) -> None:
        """Read all input; on any failure let the job in flight end before stopping.

        ``Load.close`` (below) waits for that job, so its STATE still goes out.
        """
        try:
            super().listen(file_input)
        except BaseException:
            # The SDK cleans sinks up only at the end of input; their batch files hold
            # personal data, so a run that stops early removes them too.
            for sink in [*self._sinks_to_clear, *self._sinks_active.values()]:
                sink.clean_up()
            raise
        finally:
            self.load.close()
            self.load.log_summary()

    @classmethod
    def invoke(  # type: ignore[override]
        cls, *args: t.Any, check_connection: bool = False, **kwargs: t.Any
    ) -> None:
        """Run the target; a known failure ends with one clear sentence and its exit code."""
        try:
            if check_connection:
                cls.check_connection(kwargs.get("config"))
                return
            super().invoke(*args, **kwargs)
        except tuple(EXIT_CODES) as exc:
            code = exit_code(exc)
            message = str(exc)
            if isinstance(exc, ConfigValidationError):
                message = "Invalid configuration: " + "; ".join(explain_config_errors(exc.errors))
            elif isinstance(exc, MappingError):
                message = f"Invalid stream_maps configuration: {exc}"
            elif isinstance(exc, InvalidJSONSchema):
                message = f"A SCHEMA message is not a valid JSON schema: {exc}"
            logging.getLogger(cls.name).error("target-userpilot stopped: %s", message)
            sys.exit(code)

    @classmethod
    def check_connection(cls, config: t.Any) -> None:
        """Verify api_key and api_url with one read-only call (the jobs list), then exit.

        Tells a refused key (HTTP 401/403) from a host that is not Userpilot's API and from a
        host that cannot be reached, before anyone starts a long load.
        """
        target = cls(
            config=getattr(config, "config", None),
            parse_env_config=bool(getattr(config, "parse_env", False)),
            validate_config=True,
        )
        settings = target.load.settings
        if settings.dry_run:
            click.echo("dry_run is on: the target would not contact Userpilot at all.")
            return
        client = UserpilotClient(
            settings.api_url,
            settings.api_key or "",
            timeout=(10.0, settings.request_timeout_seconds),
        )
        try:
            jobs = client.list_jobs()
        except AuthenticationError:
            raise
        except UserpilotError as exc:
            if isinstance(exc, TransientError) and not isinstance(exc, UnexpectedAnswer):
                msg = (
                    f"Could not reach Userpilot at {settings.api_url} ({exc}). Check api_url: "
                    "US https://analytex.userpilot.io, EU https://analytex-eu.userpilot.io, or "
                    "your Enterprise host; and that this machine can reach it."
                )
                raise TransientError(msg) from None
            msg = (
                f"{settings.api_url} does not answer like Userpilot's API ({exc}). Check api_url "
                "(region, Enterprise host)."
            )
            raise UserpilotError(msg) from None
        finally:
            client.close()
        running = [j for j in jobs if str(j.get("status")) not in ("completed", "failed")]
        click.echo(
            f"Connected to {settings.api_url}: the API key was accepted; {len(jobs)} bulk jobs "
            f"listed, {len(running)} running."
        )

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, plus ``--check-connection``."""
        command = super().get_singer_command()
        command.params.append(
            click.Option(
                ["--check-connection", "check_connection"],
                is_flag=True,
                default=False,
                help="Check api_key and api_url with one read-only request, then exit.",
            )
        )
        return command


if __name__ == "__main__":
    TargetUserpilot.cli()
