"""The sink: one per stream. Its rules are chosen once; each record's outcome is applied here.

Records reach it through the SDK's public record path (stream maps, ``_sdc_`` metadata,
``process_record``). What a record becomes is decided by pure code (``records/decide.py``) from
the stream's :class:`~target_userpilot.records.decide.StreamRules`; the sink applies that outcome
in one place: rows go to the run's :class:`~target_userpilot.batching.buffer.BatchBuffer` (one
open batch per Userpilot object, which decides when a batch goes up), deletions and events to
their lanes, rejections to the run's :class:`~target_userpilot.rejects.RejectLog`. The SDK's own
drains therefore find nothing to drain.
"""

from __future__ import annotations

import datetime
import sys
import typing as t
from functools import cached_property

from singer_sdk.sinks import BatchSink

from target_userpilot.errors import InvalidRecordError, MissingKeyRecordError, UserpilotError
from target_userpilot.input.nesting import PrunedRecord
from target_userpilot.meltano_loader import tell_parent
from target_userpilot.records.decide import (
    SKIP_DELETED,
    Deletion,
    ImportRecord,
    Kind,
    Outcome,
    Rejection,
    Skip,
    StreamRules,
    TrackEvent,
    Upsert,
    decide,
    rules_for,
)
from target_userpilot.records.routing import EVENTS, table_name
from target_userpilot.records.rows import NamesSeen
from target_userpilot.records.validation import RecordValidator
from target_userpilot.run import SinkServices

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

#: Track mode: an event older than this gets one WARNING per stream (its time is lost).
OLD_EVENT_SECONDS = 3600.0

if t.TYPE_CHECKING:
    import logging

    from singer_sdk.target_base import Target

    from target_userpilot.lanes.deletions import DeletionLane
    from target_userpilot.records.object_keys import ObjectKeys


class UserpilotSink(BatchSink):
    """Applies what each record of one stream becomes: a row, a deletion, an event or a refusal."""

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict[str, t.Any],
        key_properties: t.Sequence[str] | None,
    ) -> None:
        #: Read before the SDK's __init__, which asks for it (``include_sdc_metadata_properties``).
        self._add_record_metadata = bool(target.config.get("add_record_metadata", False))
        super().__init__(target, stream_name, schema, key_properties)
        services = _services_of(target)
        settings = services.settings
        validator = self.record_validator
        mapping = settings.object_mapping.get(stream_name)
        #: What this stream's records become: chosen here, once.
        self.rules = rules_for(
            stream_name,
            schema.get("properties", {}),
            key_properties,
            mapping,
            max_file_bytes=settings.max_file_bytes,
            events_api=settings.events_api,
            on_invalid_record=settings.on_invalid_record,
            hard_delete=settings.hard_delete,
            schema_problem=validator.problem if validator is not None else None,
            mark_problem=self._deletion_mark_problem(),
        )
        rules = self.rules
        profiles = rules.kind is Kind.PROFILES
        self._rejects = services.rejects
        self._summary = services.summary
        self._checkpoints = services.checkpoints
        self._check = services.check
        self._save_keys = services.save_object_keys
        #: hard_delete: every profile row is noted for mirror deletes (with its version, if any).
        self._mirror = services.mirror if profiles else None
        #: A plan (``plan_path``) counts each outcome; a run applies it (below).
        self._plan = services.plan
        if services.plan is None:
            assert services.buffer is not None
            assert services.deletions is not None and services.events is not None
            self._buffer = services.buffer
            self._deletions = services.deletions
            self._events = services.events() if rules.kind is Kind.TRACK else None
        #: The names this stream's records used; for profiles, the keys sent under each object
        #: property, so a null or smaller object clears them.
        self.names = NamesSeen(services.object_keys(stream_name) if profiles else None)
        self.tally = services.summary.stream(stream_name, rules.object)
        self._notes = StreamNotes(rules, self.logger)
        #: Set by the target while a record nested too deeply to read whole takes the record
        #: path: the record that arrives is rejected (see ``TargetUserpilot._reject_pruned``).
        self.pruned: PrunedRecord | None = None
        if rules.kind is Kind.LOADER_TEST:
            # `meltano config test` sends this stream to see that the loader works: what it
            # can check without writing is the connection (its record would become user 1).
            try:
                outcome = services.check_connection()
            except UserpilotError as exc:
                # Meltano shows none of the loader's output at its default level: the reason
                # goes to its own stderr as well (loader_test.py).
                tell_parent(f"target-userpilot: Meltano's loader test failed: {exc}")
                raise
            self._notes.loader_test(outcome)
        else:
            self._notes.route(mapping)

    # Size: rows live in the run's buffer, which seals batches itself.

    @property
    @override
    def current_size(self) -> int:
        """Nothing waits in the sink itself, so the SDK's drains have nothing to do."""
        return 0

    @property
    @override
    def is_full(self) -> bool:
        """Never: the buffer seals a batch when it reaches the limits."""
        return False

    # The SDK's record path

    @property
    @override
    def include_sdc_metadata_properties(self) -> bool:
        """``add_record_metadata``, read once: the SDK asks for every record."""
        return self._add_record_metadata

    @cached_property
    def record_validator(self) -> RecordValidator | None:
        """The stream's schema compiled for speed (``validate_records``); built once."""
        if not self.validate_schema:
            return None
        return RecordValidator(self.schema, validate_formats=self.validate_field_string_format)

    @override
    def get_validator(self) -> RecordValidator | None:
        """The SDK's schema validation (``validate_records``), compiled for speed."""
        return self.record_validator

    @override
    def _remove_sdc_metadata_from_record(self, record: dict[str, t.Any]) -> None:
        """Drop the ``_sdc_*`` columns as the SDK does, but keep a set ``_sdc_deleted_at``.

        The SDK drops them all unless ``add_record_metadata`` is on, so a deleted row of a tap
        that sends the mark without declaring it in its schema would be upserted without a
        word. Rows and events never carry ``_sdc_*`` columns (``rows.py`` leaves them out).
        """
        deleted = record.get("_sdc_deleted_at")
        super()._remove_sdc_metadata_from_record(record)
        if deleted is not None:
            record["_sdc_deleted_at"] = deleted

    @override
    def _validate_and_parse(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        """Leave the record as it came: its schema is checked when it is classified.

        The check is part of the record's one decision (``records/decide.py``), so a record
        that breaks its schema is a rejected record, handled by ``on_invalid_record`` like any
        other, and the verdict never waits in the sink for a later hook. Date-times are not
        parsed: they arrive as ISO 8601 strings and Userpilot wants exactly that.
        """
        return record

    @override
    def _singer_validate_message(self, record: dict[str, t.Any]) -> None:
        """Nothing here: key properties are checked when the record is classified.

        The SDK raises for any record missing a key property; with ``skip`` the row rules judge
        the record instead (its id may come from ``id_property``), and with ``fail`` the
        record's decision refuses it with the SDK's own error type.
        """

    @override
    def _after_process_record(self, context: dict[str, t.Any]) -> None:
        """Nothing per record: the SDK's per-record DEBUG line costs more than the row itself."""

    @override
    def process_record(self, record: dict[str, t.Any], context: dict[str, t.Any]) -> None:
        """Classify one record, then apply what it became."""
        del context  # rows live in the buffer
        plan = self._plan
        if plan is not None and plan.stopped:
            plan.skip()  # the run would have stopped before this record
            return
        seq = self._checkpoints.record()
        tally = self.tally
        tally.received += 1  # the one counter only this (the reading) thread changes
        unreadable, self.pruned = self.pruned, None
        self._check()
        names = self.names
        outcome = decide(record, self.rules, names, unreadable)
        stream = self.stream_name
        if plan is not None:
            plan.count(stream, self.rules, outcome, tally.received, seq)
        else:
            self._apply(outcome, record, seq)
        if len(names.collisions) != self._notes.collisions_warned:
            self._notes.collisions(names)

    def _apply(self, outcome: Outcome, record: dict[str, t.Any], seq: int) -> None:
        """The one place a record's outcome becomes work: a row, a deletion, an event, a refusal."""
        stream = self.stream_name
        names = self.names
        match outcome:
            case Upsert(row_id, line):
                keys = names.keys
                if keys is not None and keys.pending:
                    self._new_keys(keys)
                obj = self.rules.object
                self._buffer.add(obj, stream, row_id, line, seq)
                if self._mirror is not None:
                    self._mirror.seen(stream, obj, row_id, seq)
                if self.rules.hard_delete:  # only then can this run have deleted it
                    self._notes.upserted(row_id, self._deletions)
            case TrackEvent(key, body, happened_at):
                assert self._events is not None  # a TRACK stream's
                self._events.add(stream, seq, self.tally.received, key, body)
                self._notes.tracked(happened_at)
            case ImportRecord(key, line, user_id, left_out):
                self._buffer.add(EVENTS, stream, key, line, seq, user_id=user_id)
                self._notes.imported(left_out)
            case Deletion(row_id):
                if self._buffer.supersede(self.rules.object, row_id):
                    # Its earlier rows in the open batch will not be sent.
                    self._summary.add(stream, "superseded")
                self._deletions.add(self.rules.object, stream, row_id, seq)
            case Rejection():
                self._reject(outcome, record, self.tally.received, seq)
            case Skip():
                if outcome is SKIP_DELETED:
                    self._summary.add(stream, "deleted_ignored")
                    self._notes.deleted_ignored()

    def _reject(
        self, rejection: Rejection, record: dict[str, t.Any], position: int, seq: int
    ) -> None:
        """The one place a record of this stream is refused: counted, logged, kept, or the run
        stopped (``on_invalid_record``).

        A refused record of a full-table version still names a profile the source has: it
        stays in the version, or mirror deletes would erase it for a row that was only too
        large or off its schema.
        """
        try:
            self._rejects.reject(
                self.stream_name,
                position,
                rejection.reason,
                record,
                record_json=rejection.record_json,
            )
        except InvalidRecordError as exc:
            if rejection.missing_key:
                raise MissingKeyRecordError(str(exc)) from None
            raise
        if rejection.profile_id is not None and self._mirror is not None:
            self._mirror.seen(self.stream_name, self.rules.object, rejection.profile_id, seq)

    def _new_keys(self, keys: ObjectKeys) -> None:
        """Keys sent for the first time: into the ledger before their row goes up."""
        self._save_keys(self.stream_name, keys)
        if keys.full:
            self._notes.keys_full(keys.limit)

    def _deletion_mark_problem(self) -> t.Callable[[dict[str, t.Any]], str | None] | None:
        """The tap's own rule for ``_sdc_deleted_at``, if its schema declares the mark.

        The tap's own schema: the SDK removes ``_sdc_*`` columns from the sink's (or puts its
        own there, with ``add_record_metadata``), so records are not checked against it.
        """
        declared = self.original_schema.get("properties", {}).get("_sdc_deleted_at")
        if not self.validate_schema or not isinstance(declared, dict):
            return None
        schema = {"type": "object", "properties": {"_sdc_deleted_at": declared}}
        validator = RecordValidator(schema, validate_formats=self.validate_field_string_format)
        return validator.problem

    # Per batch: nothing, the buffer and the job lane send batches.

    @override
    def process_batch(self, context: dict[str, t.Any]) -> None:
        """Nothing to do: rows went to the run's buffer as they arrived."""


class StreamNotes:
    """What a stream tells its operator: where it goes, and each warning once per stream."""

    def __init__(self, rules: StreamRules, logger: logging.Logger) -> None:
        self._rules = rules
        self._logger = logger
        self.collisions_warned = 0
        self._warned: set[str] = set()

    def route(self, mapping: t.Mapping[str, t.Any] | None) -> None:
        """One INFO line: where the stream's records go (a WARNING for a time track loses)."""
        rules, log, stream = self._rules, self._logger, self._rules.stream
        route = rules.route
        if rules.kind is Kind.IGNORED:
            log.info("Stream '%s' is ignored (object_mapping).", stream)
        elif rules.kind is Kind.IMPORT:
            log.info(
                "Stream '%s' sends %s events through the Import API (POST /v1/imports) of the "
                "user in '%s', at the time in '%s'.",
                stream,
                route.event_type,
                route.id_property,
                route.time_property,
            )
        elif rules.kind is Kind.TRACK:
            log.info(
                "Stream '%s' sends events (POST /v1/track) of the user in '%s', named %s.",
                stream,
                route.id_property,
                f"'{route.event_name}'"
                if route.event_name
                else f"by '{route.event_name_property}'",
            )
            if (mapping or {}).get("event_time_property"):
                log.warning(
                    "Stream '%s' sets event_time_property '%s', but the track API stamps each "
                    "event when Userpilot receives it: that time is not sent (it stays in the "
                    "metadata). Set events_api to 'import' to keep each event's time "
                    "(Enterprise plan or Growth add-on).",
                    stream,
                    route.time_property,
                )
        else:
            log.info(
                "Stream '%s' loads %s, identified by '%s'%s.",
                stream,
                route.object,
                route.id_property,
                _by_table_name(stream, mapping),
            )

    def loader_test(self, outcome: str) -> None:
        """Meltano's loader test stream: what the connection check found."""
        self._logger.info(
            "Stream '%s' is Meltano's loader test: %s. Its records are not written to Userpilot.",
            self._rules.stream,
            outcome,
        )

    def _first(self, what: str) -> bool:
        """True the first time ``what`` is noted for this stream."""
        if what in self._warned:
            return False
        self._warned.add(what)
        return True

    def collisions(self, names: NamesSeen) -> None:
        """Metadata names two properties of one record both gave: each named once."""
        self.collisions_warned = len(names.collisions)
        collided = names.take_collisions()
        if collided:
            self._logger.warning(
                "Stream '%s': %s got two values in one record (a flat key and a nested object "
                "flatten to the same name); the value later in the record was sent. Rename one "
                "with stream_maps.",
                self._rules.stream,
                ", ".join(f"'{name}'" for name in collided),
            )

    def upserted(self, row_id: str, deletions: DeletionLane) -> None:
        """A row of a profile this run deleted earlier: Userpilot may erase it again."""
        if "upsert after delete" in self._warned:
            return
        if not deletions.was_deleted(self._rules.object, row_id):
            return
        self._warned.add("upsert after delete")
        self._logger.warning(
            "Stream '%s' sent a %s profile again after its deletion earlier in this run; "
            "it is upserted, but Userpilot's daily deletion run (02:00 UTC) may erase the "
            "new profile as well. Rerun it after that deletion run to be sure it stays.",
            self._rules.stream,
            self._rules.object,
        )

    def deleted_ignored(self) -> None:
        """A record the source deleted, with ``hard_delete`` off: one INFO line per stream."""
        if not self._first("deleted ignored"):
            return
        self._logger.info(
            "Stream '%s' has records marked deleted in the source (_sdc_deleted_at): "
            "they are neither upserted nor deleted, and counted as ignored. Set "
            "hard_delete to true to delete those %s from Userpilot (erasure of the "
            "profile and its events, not reversible).",
            self._rules.stream,
            self._rules.object,
        )

    def keys_full(self, limit: int) -> None:
        """The object keys remembered for the stream reached their bound."""
        if not self._first("keys full"):
            return
        self._logger.warning(
            "Stream '%s': its object properties gave more than %d distinct flattened keys; "
            "keys past that are sent but not remembered, so a later null object does not "
            "clear them. Turn such a property into one JSON string with stream_maps.",
            self._rules.stream,
            limit,
        )

    def tracked(self, happened_at: str | None) -> None:
        """Track mode: one WARNING per stream once an event is over an hour old."""
        if happened_at is None or "old events" in self._warned:
            return
        route = self._rules.route
        now = datetime.datetime.now(datetime.timezone.utc)
        moment = datetime.datetime.fromisoformat(happened_at.replace("Z", "+00:00"))
        if (now - moment).total_seconds() <= OLD_EVENT_SECONDS:
            return
        self._warned.add("old events")
        self._logger.warning(
            "Stream '%s' sends events that happened over an hour ago ('%s'), but the track "
            "API stamps each event when Userpilot receives it: Userpilot will show them at "
            "the time of this run. Set events_api to 'import' to keep each event's time "
            "(Enterprise plan or Growth add-on); see the README's Events section.",
            self._rules.stream,
            route.time_property,
        )

    def imported(self, left_out: tuple[str, ...]) -> None:
        """Page views carry no metadata: the properties left out are named once per stream."""
        if not left_out or "page views" in self._warned:
            return
        self._warned.add("page views")
        self._logger.warning(
            "Stream '%s' sends page views, which carry no metadata: %s %s not sent. "
            "Send them as a stream of track events if Userpilot needs them.",
            self._rules.stream,
            ", ".join(f"'{name}'" for name in left_out[:10]),
            "is" if len(left_out) == 1 else "are",
        )


def _by_table_name(stream_name: str, mapping: t.Mapping[str, t.Any] | None) -> str:
    """Why a prefixed stream goes where it goes, for its INFO line (empty when plain)."""
    if (mapping or {}).get("object") or table_name(stream_name) == stream_name:
        return ""
    return f" (by its table name '{table_name(stream_name)}', after the tap's prefix)"


def _services_of(target: Target) -> SinkServices:
    """The run's parts a sink is handed: ``TargetUserpilot.services`` (the target builds the
    run before the SDK builds any sink). Read by name, so this module never imports the target
    that imports it."""
    services = getattr(target, "services", None)
    if not isinstance(services, SinkServices):
        raise TypeError(f"{UserpilotSink.__name__} is built by TargetUserpilot, not {target!r}")
    return services
