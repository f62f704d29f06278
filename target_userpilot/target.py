"""target-userpilot: the Singer target's declaration and its run lifecycle."""

from __future__ import annotations

import copy
import logging
import sys
import typing as t

import click
from singer_sdk import Target, metrics
from singer_sdk.exceptions import (
    ConfigValidationError,
    InvalidJSONSchema,
    MapExpressionError,
    MappingError,
)
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.helpers.capabilities import PluginCapabilities
from singer_sdk.mapper import RemoveRecordTransform

from target_userpilot.checkpoints import check_stdout
from target_userpilot.errors import (
    EXIT_CODES,
    AuthenticationError,
    ConfigurationError,
    Terminated,
    TransientError,
    UserpilotError,
    exit_code,
)
from target_userpilot.input.manifest import BatchEncoding, manifest_records
from target_userpilot.input.nesting import PrunedRecord
from target_userpilot.input.reader import InputReader
from target_userpilot.logs import (
    json_stderr,
    request_duration,
    set_metrics_level,
    structure_stray_output,
)
from target_userpilot.plan.planner import Planner
from target_userpilot.records.routing import COMPANIES, USERS
from target_userpilot.run import Run
from target_userpilot.settings import (
    CONFIG_SCHEMA,
    Settings,
    env_config,
    explain_config_errors,
    numbers_from_text,
)
from target_userpilot.sinks import UserpilotSink
from target_userpilot.userpilot.client import UserpilotClient

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override


class TargetUserpilot(Target):
    """Loads user and company profiles into Userpilot through its bulk API."""

    name = "target-userpilot"
    message_reader_class = InputReader
    # A copy: the SDK adds its built-in settings to the schema it is given.
    config_jsonschema = copy.deepcopy(CONFIG_SCHEMA)
    default_sink_class = UserpilotSink
    #: The SDK's, plus ``batch``: BATCH messages load exactly like RECORD messages.
    capabilities = [*Target.capabilities, PluginCapabilities.BATCH]

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        if isinstance(kwargs.get("config"), dict):
            # Meltano hands number settings over as text ("2.5"): read them before the SDK
            # checks the config against the schema.
            kwargs["config"] = numbers_from_text(kwargs["config"])
        super().__init__(*args, **kwargs)
        # The SDK would drain up to 8 sinks at once in joblib threads; ours share one buffer and
        # its lanes, and only ever run on the reading thread.
        self.max_parallelism = 1
        #: Streams whose ACTIVATE_VERSION has been acknowledged (one INFO line each).
        self._versions_acknowledged: set[str] = set()
        settings = Settings.from_config(self.config, known=self.config_jsonschema["properties"])
        separator = self.config.get("flattening_separator")
        if self.config.get("flattening_enabled") and separator not in (None, "__"):
            # Userpilot's rows flatten with "__" and a null object clears keys by that prefix;
            # another separator would leave stale keys in profiles without a word.
            msg = (
                f"flattening_separator is {separator!r}; target-userpilot flattens nested "
                "objects with '__' (address__city). Remove the setting, or rename keys with "
                "stream_maps."
            )
            raise ConfigurationError(msg)
        set_metrics_level(settings.metrics_log_level)
        #: The SDK's ``record_count`` counter of every sink built, flushed by a run that does
        #: not reach the end of input (the SDK flushes them only there).
        self._record_counters: list[metrics.Counter] = []
        #: The run, or with ``plan_path`` a plan of it: the same calls, nothing sent.
        self.run: Run | Planner = (
            Planner(settings) if settings.plan_path else Run(settings, user_agent=self.name)
        )
        # The one way a stop reaches the reading thread: it checks between lines, and a stop
        # wakes it while it waits for input.
        reader = self.message_reader
        if isinstance(reader, InputReader):
            reader.check = self.run.check
            self.run.wake_reader = reader.wake
        #: What each sink is handed (see ``UserpilotSink``): the sinks take nothing else.
        self.services = self.run.services
        if self.run.mirror is not None:
            self.run.mirror.use_stream_maps(self.config.get("stream_maps"))

    @classmethod
    @override
    def append_builtin_config(cls, config_jsonschema: dict[str, t.Any]) -> None:
        """The SDK's built-in settings, less ``load_method`` and ``batch_config``.

        Userpilot always merges profiles. ``batch_config`` says how a tap writes batch files;
        a BATCH message names its own files and encoding, so the target needs no setting.
        """
        super().append_builtin_config(config_jsonschema)
        config_jsonschema["properties"].pop("load_method", None)
        config_jsonschema["properties"].pop("batch_config", None)

    @classproperty
    @override
    def _env_var_config(cls) -> dict[str, t.Any]:
        """Environment settings read by type; a bad value names its variable (exit 2)."""
        schema = cls.config_jsonschema
        cls.append_builtin_config(schema)
        return env_config(schema, cls._env_var_prefix)

    # Lifecycle

    @override
    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        """SIGTERM/SIGINT: noted for the run's stop thread; nothing is raised here.

        The run then stops reading, sends nothing new, awaits the job in flight (its STATE goes
        out) and ends with exit 10; a second signal stops at once (see ``stop.py``).
        """
        if not hasattr(self, "run"):  # still starting: nothing read, nothing to wait for
            raise Terminated(f"Received signal {signum} while starting; no input was read.")
        self.run.signal(signum)

    @override
    def _process_state_message(self, message_dict: dict[str, t.Any]) -> None:
        """Hold STATE until its records are durable, instead of writing it after each drain."""
        self._assert_line_requires(message_dict, requires={"value"})
        value = message_dict["value"]
        if value is None:
            # Forwarding it would make the pipeline forget its bookmarks; dropping it quietly
            # would break the promise that nothing vanishes without a word.
            self.logger.warning(
                "A STATE message with a null value carries no bookmark; it is ignored and the "
                "STATE before it stands."
            )
            return
        self.run.add_state(value)

    @override
    def _process_schema_message(self, message_dict: dict[str, t.Any]) -> None:
        """The SDK's, then mirror deletes told: an ACTIVATE_VERSION right after it opens a copy.

        Each sink's ``record_count`` counter is noted too, for :meth:`_flush_record_counts`.
        """
        super()._process_schema_message(message_dict)
        mirror = self.run.mirror
        for stream_map in self.mapper.stream_maps.get(message_dict["stream"], []):
            alias = stream_map.stream_alias
            if mirror is not None:
                mirror.schema(alias)
            if self.sink_exists(alias):
                counter = self.get_sink(alias).record_counter_metric
                if not any(c is counter for c in self._record_counters):
                    self._record_counters.append(counter)

    def _flush_record_counts(self) -> None:
        """The run ends before the end of input: the METRIC record of what each stream counted.

        The SDK writes a sink's last ``record_count`` point only when it cleans the sink up at
        the end of input; a failed or stopped run would otherwise never report the records it
        read since the last point.
        """
        for counter in self._record_counters:
            if counter.value:
                counter.exit()

    @override
    def _process_batch_message(self, message_dict: dict[str, t.Any]) -> None:
        """Each record of each file of the manifest takes the RECORD path, one at a time.

        The SDK's own handler loads a whole file into a list and hands it to the sink's
        ``process_batch``, past stream maps, validation and the row rules. Here each record
        becomes a RECORD message: it is mapped, validated, turned into a row, merged, spooled
        and counted, and a STATE after the BATCH waits for it, exactly as if the tap had sent
        it on stdin. Files are streamed, so memory does not grow with their size.
        """
        stream = message_dict["stream"]
        encoding = BatchEncoding.from_message(message_dict["encoding"])
        process_record = self._process_record_message
        for record in manifest_records(stream, message_dict["manifest"], encoding):
            process_record({"type": "RECORD", "stream": stream, "record": record})

    @override
    def _process_record_message(self, message_dict: dict[str, t.Any]) -> None:
        """The SDK's record path, with the record's full-table ``version`` noted for the sink."""
        mirror = self.run.mirror
        if mirror is not None:
            version = message_dict.get("version")
            mirror.version = version if type(version) is int else None
            stream = message_dict.get("stream")
            if isinstance(stream, str) and not mirror.mapped(stream):
                self._map_for_mirror(stream)
        record = message_dict.get("record")
        if isinstance(record, PrunedRecord):
            self._reject_pruned(message_dict, record)
        else:
            super()._process_record_message(message_dict)

    def _reject_pruned(self, message_dict: dict[str, t.Any], record: PrunedRecord) -> None:
        """A record nested too deeply to read whole: rejected by each sink of its stream.

        It takes the SDK's record path with its shallow properties, so stream maps name its
        sinks and the profile it belongs to (a full-table version keeps that profile: mirror
        deletes never erase one for a record that was only too deep), and each sink rejects
        it instead of making a row. A map that needs a property left out, or a filter that
        drops what is left, still leaves the record rejected: never dropped without a word.
        """
        stream = message_dict["stream"]
        aliases = [m.stream_alias for m in self.mapper.stream_maps.get(stream, [])]
        sinks = [
            sink
            for alias in aliases
            if self.sink_exists(alias) and isinstance(sink := self.get_sink(alias), UserpilotSink)
        ]
        for sink in sinks:
            sink.pruned = record
        try:
            try:
                super()._process_record_message(message_dict)
            except MapExpressionError:
                pass  # the maps needed what was left out: rejected below, its profile unknown
            for sink in sinks:
                if sink.pruned is record:
                    sink.process_record({}, {})
        finally:
            for sink in sinks:
                sink.pruned = None

    def _map_for_mirror(self, stream: str) -> None:
        """Tell mirror deletes which sinks the stream maps feed from ``stream`` (filters)."""
        mirror = self.run.mirror
        maps = self.mapper.stream_maps.get(stream)
        if mirror is not None and maps is not None:
            mirror.map_stream(stream, [stream_map.stream_alias for stream_map in maps])

    @override
    def _process_activate_version_message(self, message_dict: dict[str, t.Any]) -> None:
        """A full-table version begins or ends: mirror deletes with ``hard_delete``.

        Without ``hard_delete`` (or for events and ignored streams) profiles have no versions:
        one INFO line per stream instead of the SDK's warning.
        """
        stream = message_dict["stream"]
        mirror = self.run.mirror
        if mirror is not None:
            seq = self.run.checkpoints.record()
            if not mirror.mapped(stream):
                self._map_for_mirror(stream)
            handled = False
            for stream_map in self.mapper.stream_maps.get(stream, []):
                alias = stream_map.stream_alias
                if isinstance(stream_map, RemoveRecordTransform) or not self.sink_exists(alias):
                    continue  # a stream the stream maps drop (``null``) loads nothing
                sink = self.get_sink(alias)
                obj = sink.rules.object if isinstance(sink, UserpilotSink) else None
                if obj in (USERS, COMPANIES):
                    mirror.activate(alias, obj, message_dict["version"], seq)
                    handled = True
            if handled:
                return
        if stream in self._versions_acknowledged:
            return
        self._versions_acknowledged.add(stream)
        self.logger.info(
            "Stream '%s' sent ACTIVATE_VERSION. Userpilot profiles have no versions, so it is "
            "acknowledged and nothing else changes: profiles missing from this sync stay in "
            "Userpilot (with hard_delete on, a new full-table version deletes them: see Mirror "
            "deletes in the README).",
            stream,
        )

    @override
    def process_endofpipe(self) -> None:
        """End of input: every open batch goes up, the last job is awaited, the final STATE
        goes out and the summary is printed."""
        try:
            super().process_endofpipe()
            self.run.finish()
        except BaseException as exc:
            self._flush_record_counts()
            self.run.close(exc)
            raise
        self.run.close()

    @classmethod
    @override
    # [override] ignored as on the SDK's own Target.invoke, whose keywords already differ from
    # PluginBase.invoke's; ours adds check_connection.
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        file_input: t.IO[str] | None = None,
        check_connection: bool = False,
        plan_path: str | None = None,
    ) -> None:
        """Run the target; a known failure ends with one clear sentence and its exit code.

        ``--plan PATH`` sets ``plan_path``: the run becomes a plan of itself (Meltano's
        ``plan`` command passes it, since a command can pass arguments but not settings).

        Built here rather than by the SDK's ``invoke`` so that a run that stops early still
        lets the job in flight end (its STATE goes out), removes its batch files and prints its
        summary.
        """
        if json_stderr(logging.getLogger("target_userpilot")):
            structure_stray_output(logging.getLogger(cls.name))
        try:
            if about:
                super().invoke(about=about, about_format=about_format)
            if check_connection:
                cls.check_connection(config)
                return
            cls.print_version(print_fn=cls.logger.info)
            check_stdout()
            values = getattr(config, "config", None)
            if plan_path is not None:
                values = {**(values or {}), "plan_path": plan_path}
            target = cls(
                config=values,
                validate_config=True,
                parse_env_config=bool(getattr(config, "parse_env", False)),
            )
            try:
                target.listen(file_input)
            except BaseException as exc:
                target._flush_record_counts()
                target.run.close(exc)
                raise
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
        settings = Settings.from_config(cls._read_config(config))
        if settings.dry_run:
            click.echo("dry_run is on: the target would not contact Userpilot at all.")
            return
        client = UserpilotClient(
            settings.api_url,
            settings.api_key or "",
            timeout=(10.0, settings.request_timeout_seconds),
            observe=request_duration,
        )
        try:
            jobs = client.list_jobs()
        except AuthenticationError:
            raise
        except UserpilotError as exc:
            if isinstance(exc, TransientError):
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
    def _read_config(cls, config: t.Any) -> dict[str, t.Any]:
        """The settings as a run would read them (files, then the environment), no target built.

        ``--check-connection`` needs only settings and a client: no sinks, no ledger, no lanes.
        """
        values = numbers_from_text(getattr(config, "config", None) or {})
        if getattr(config, "parse_env", False):
            values.update(cls._env_var_config)
        errors = _config_errors(values)
        if errors:
            raise ConfigValidationError("Config validation failed", errors=errors)
        return values

    @classmethod
    @override
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, plus ``--check-connection`` and ``--plan``."""
        command = super().get_singer_command()
        command.params.append(
            click.Option(
                ["--check-connection", "check_connection"],
                is_flag=True,
                default=False,
                help="Check api_key and api_url with one read-only request, then exit.",
            )
        )
        command.params.append(
            click.Option(
                ["--plan", "plan_path"],
                default=None,
                metavar="PATH",
                help=(
                    "Plan the run: write what it would do to the JSON file PATH (and a summary "
                    "to stderr); send nothing, write nothing to the ledger, write no STATE. "
                    "Sets plan_path."
                ),
            )
        )
        return command


def _config_errors(values: dict[str, t.Any]) -> list[str]:
    """JSON-schema errors of ``values`` against the settings, in the SDK's wording."""
    from jsonschema import Draft7Validator

    schema = copy.deepcopy(TargetUserpilot.config_jsonschema)
    schema.pop("required", None)
    return [
        f"config['{'.'.join(str(p) for p in error.path)}'] {error.message}"
        if error.path
        else error.message
        for error in Draft7Validator(schema).iter_errors(values)
    ]


if __name__ == "__main__":
    TargetUserpilot.cli()
