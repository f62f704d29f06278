"""The sink: one per stream. It routes records, turns them into rows, and hands rows to the buffer.

Records reach it through the SDK's public record path only (stream maps, ``_sdc_`` metadata,
validation, ``process_record``). Rows do not stay in the sink: they go to the run's
:class:`~target_userpilot.batching.buffer.BatchBuffer`, one open batch per Userpilot object,
which decides when a batch goes up. The SDK's own drains therefore find nothing to drain.
"""

from __future__ import annotations

import datetime
import json
import sys
import typing as t

from singer_sdk.exceptions import InvalidRecord as SchemaInvalidRecord
from singer_sdk.sinks import BatchSink

from target_userpilot.errors import (
    InvalidRecord,
    InvalidRecordError,
    MissingKeyRecordError,
    UserpilotError,
)
from target_userpilot.input.nesting import PrunedRecord
from target_userpilot.meltano_loader import tell_parent
from target_userpilot.records.imports import event_age, page_view_left_out, to_import_record
from target_userpilot.records.marks import is_deleted
from target_userpilot.records.rows import (
    COMPANIES,
    EVENTS,
    IGNORE,
    LOADER_TEST,
    USERS,
    deleted_id,
    encode_row,
    event_key,
    identifier,
    route_for,
    table_name,
    to_event,
    to_row,
)
from target_userpilot.records.validation import RecordValidator

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

#: Track mode: an event older than this gets one WARNING per stream (its time is lost).
OLD_EVENT_SECONDS = 3600.0

if t.TYPE_CHECKING:
    from singer_sdk import Target

    from target_userpilot.lanes.events import EventLane
    from target_userpilot.records.object_keys import ObjectKeys
    from target_userpilot.run import SinkServices


class UserpilotSink(BatchSink):
    """Turns a stream's records into Userpilot rows for the run's batch buffer."""

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict,
        key_properties: t.Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        services: SinkServices = target.services  # type: ignore[attr-defined]
        self._settings = services.settings
        self._rejects = services.rejects
        self._summary = services.summary
        self._checkpoints = services.checkpoints
        self._buffer = services.buffer
        self._check = services.check
        self._deletions = services.deletions
        mapping = self._settings.object_mapping.get(stream_name)
        #: events_api import: this stream's events go to the buffer as Import API records.
        self._importing = self._settings.events_api == "import"
        self.route = route_for(
            stream_name,
            schema.get("properties", {}),
            key_properties,
            mapping,
            import_events=self._importing,
        )
        self.tally = services.summary.stream(stream_name, self.route.object)
        self._schema_error: str | None = None
        #: Set by the target while a record nested too deeply to read whole takes the record
        #: path: the record that arrives is rejected (see ``TargetUserpilot._reject_pruned``).
        self.pruned: PrunedRecord | None = None
        self._collisions_warned = 0
        self._deletes_noted = False
        self._upsert_after_delete_warned = False
        self._events: EventLane | None = None
        profiles = self.route.object in (USERS, COMPANIES)
        #: The keys sent under each object property, so a null or smaller object clears them.
        self._keys = services.object_keys(stream_name) if profiles else None
        self._save_keys = services.save_object_keys
        self._keys_full_warned = False
        #: hard_delete: every profile row is noted for mirror deletes (with its version, if any).
        self._mirror = services.mirror if profiles else None
        #: Track mode: whether the one WARNING about old events was given.
        self._old_events_warned = False
        self._page_view_warned = False
        #: The schema's own rule for ``_sdc_deleted_at``, checked on every deletion mark.
        self._mark_validator: RecordValidator | None = None
        if self.route.object == EVENTS and not self._importing:
            self._events = services.events()
        elif self.route.object in (USERS, COMPANIES):
            self._mark_validator = self._deletion_mark_validator()
        if self.route.object == LOADER_TEST:
            # `meltano config test` sends this stream to see that the loader works: what it
            # can check without writing is the connection (its record would become user 1).
            try:
                outcome = services.check_connection()
            except UserpilotError as exc:
                # Meltano shows none of the loader's output at its default level: the reason
                # goes to its own stderr as well (loader_test.py).
                tell_parent(f"target-userpilot: Meltano's loader test failed: {exc}")
                raise
            self.logger.info(
                "Stream '%s' is Meltano's loader test: %s. Its records are not written to "
                "Userpilot.",
                stream_name,
                outcome,
            )
        elif self.route.ignored:
            self.logger.info("Stream '%s' is ignored (object_mapping).", stream_name)
        elif self.route.object == EVENTS and self._importing:
            self.logger.info(
                "Stream '%s' sends %s events through the Import API (POST /v1/imports) of the "
                "user in '%s', at the time in '%s'.",
                stream_name,
                self.route.event_type,
                self.route.id_property,
                self.route.time_property,
            )
        elif self._events is not None:
            self.logger.info(
                "Stream '%s' sends events (POST /v1/track) of the user in '%s', named %s.",
                stream_name,
                self.route.id_property,
                f"'{self.route.event_name}'"
                if self.route.event_name
                else f"by '{self.route.event_name_property}'",
            )
        if self._events is not None and (mapping or {}).get("event_time_property"):
            self.logger.warning(
                "Stream '%s' sets event_time_property '%s', but the track API stamps each "
                "event when Userpilot receives it: that time is not sent (it stays in the "
                "metadata). Set events_api to 'import' to keep each event's time (Enterprise "
                "plan or Growth add-on).",
                stream_name,
                self.route.time_property,
            )
        if self.route.object not in (EVENTS, IGNORE):
            self.logger.info(
                "Stream '%s' loads %s, identified by '%s'%s.",
                stream_name,
                self.route.object,
                self.route.id_property,
                _by_table_name(stream_name, mapping),
            )

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

    # Per record

    @override
    def _remove_sdc_metadata_from_record(self, record: dict) -> None:
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
    def get_validator(self) -> RecordValidator | None:
        """The SDK's schema validation (``validate_records``), compiled for speed."""
        if not self.validate_schema:
            return None
        return RecordValidator(self.schema, validate_formats=self.validate_field_string_format)

    @override
    def _validate_and_parse(self, record: dict) -> dict:
        """Validate against the schema (if ``validate_records``), but leave values as they are.

        A schema violation becomes a rejected record, handled by ``on_invalid_record`` like any
        other, instead of an exception that would end the run. Date-times are not parsed: they
        arrive as ISO 8601 strings and Userpilot wants exactly that.
        """
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except SchemaInvalidRecord as exc:
                self._schema_error = _schema_reason(exc)
        return record

    @override
    def _singer_validate_message(self, record: dict) -> None:
        """Missing key properties: the SDK's error with ``fail``, a rejected record with ``skip``.

        With ``skip`` the row rules judge the record (its id may come from ``id_property``), so
        one bad record is left out instead of ending the run.
        """
        if self._settings.on_invalid_record != "fail" or self.pruned is not None:
            return
        missing = [key for key in self.key_properties if record.get(key) is None]
        if missing:
            try:
                reason = f"'{missing[0]}' is missing or null (a key property)"
                self._rejects.reject(self.stream_name, self.tally.received + 1, reason, record)
            except InvalidRecordError as exc:
                raise MissingKeyRecordError(str(exc)) from None

    @override
    def _after_process_record(self, context: dict) -> None:
        """Nothing per record: the SDK's per-record DEBUG line costs more than the row itself."""

    @override
    def process_record(self, record: dict, context: dict) -> None:
        """Turn one record into a row and add it to the run's open batch for its object."""
        del context  # rows live in the buffer
        seq = self._checkpoints.record()
        tally = self.tally
        tally.received += 1  # the one counter only this (the reading) thread changes
        if self.pruned is not None:
            self._reject_pruned(record, seq)
            return
        route = self.route
        if route.object in (IGNORE, LOADER_TEST):
            return
        self._check()
        if self._events is not None:
            self._take_event(record, seq)
            return
        if route.object == EVENTS:
            self._take_import(record, seq)
            return
        try:
            deleted = self._deletion_mark(record)
        except InvalidRecord as exc:
            # Neither an erasure nor an upsert: the mark says something the target cannot read.
            self._schema_error = None
            tally.rejected += 1
            self._rejects.reject(self.stream_name, tally.received, str(exc), record)
            return
        if deleted:
            # Only the id matters: a log-based tap often leaves a deleted row's other columns
            # empty, against its schema.
            self._schema_error = None
            self._take_deletion(record, seq)
            return
        try:
            if self._schema_error is not None:
                reason, self._schema_error = self._schema_error, None
                raise InvalidRecord(reason)
            keys = self._keys
            row_id, row = to_row(record, route, keys)
            line = encode_row(row)
            max_bytes = self._settings.max_file_bytes
            if len(line) > max_bytes:
                msg = f"its row is {len(line)} bytes, more than max_file_bytes ({max_bytes})"
                raise InvalidRecord(msg)
        except InvalidRecord as exc:
            self._summary.add(self.stream_name, "rejected")
            self._rejects.reject(self.stream_name, tally.received, str(exc), record)
            self._keep_in_version(record, seq)
            return
        if keys is not None and keys.pending:
            self._new_keys(keys)
        self._buffer.add(route.object, self.stream_name, row_id, line, seq)
        mirror = self._mirror
        if mirror is not None:
            mirror.seen(self.stream_name, route.object, row_id, seq)
        if len(route.collisions) != self._collisions_warned:
            self._warn_collisions()
        if not self._upsert_after_delete_warned and self._deletions.was_deleted(
            route.object, row_id
        ):
            self._upsert_after_delete_warned = True
            self.logger.warning(
                "Stream '%s' sent a %s profile again after its deletion earlier in this run; "
                "it is upserted, but Userpilot's daily deletion run (02:00 UTC) may erase the "
                "new profile as well. Rerun it after that deletion run to be sure it stays.",
                self.stream_name,
                route.object,
            )

    def _reject_pruned(self, record: dict, seq: int) -> None:
        """A record nested too deeply to read whole: rejected, whatever this stream loads.

        ``record`` holds what was shallow enough of it, after the stream maps: a profile it
        names stays in a full-table version. ``rejects_path`` gets the whole record as JSON
        text, which can be kept although it cannot be read.
        """
        pruned, self.pruned = self.pruned, None
        self._schema_error = None  # the pruned record's own misfit says nothing
        if pruned is None or self.route.object in (IGNORE, LOADER_TEST):
            return  # nothing of this stream is loaded, so nothing is left out
        self._summary.add(self.stream_name, "rejected")
        self._rejects.reject(
            self.stream_name, self.tally.received, pruned.reason, record_json=pruned.record_json
        )
        self._keep_in_version(record, seq)

    def _keep_in_version(self, record: dict, seq: int) -> None:
        """A rejected record of a full-table version still names a profile the source has.

        Its row was not sent, but the profile must not look gone from the version: mirror
        deletes would erase it for a row that was only too large or off its schema.
        """
        mirror = self._mirror
        if mirror is None:
            return
        try:
            row_id = identifier(record.get(self.route.id_property), self.route.id_property)
        except InvalidRecord:
            return
        mirror.seen(self.stream_name, self.route.object, row_id, seq)

    def _new_keys(self, keys: ObjectKeys) -> None:
        """Keys sent for the first time: into the ledger before their row goes up."""
        self._save_keys(self.stream_name, keys)
        if keys.full and not self._keys_full_warned:
            self._keys_full_warned = True
            self.logger.warning(
                "Stream '%s': its object properties gave more than %d distinct flattened keys; "
                "keys past that are sent but not remembered, so a later null object does not "
                "clear them. Turn such a property into one JSON string with stream_maps.",
                self.stream_name,
                keys.limit,
            )

    def _deletion_mark(self, record: dict) -> bool:
        """Whether a profile record is a deletion; :class:`InvalidRecord` for a doubtful mark.

        ``is_deleted`` knows the Singer rule (only a date-time). A mark must also keep the
        schema's own rule for ``_sdc_deleted_at`` when ``validate_records`` is on: a value
        that breaks its declared schema is an invalid record, not an erasure.
        """
        if record.get("_sdc_deleted_at") is None:  # the common case: live
            return False
        deleted = is_deleted(record)
        if self._mark_validator is not None:
            try:
                self._mark_validator.validate({"_sdc_deleted_at": record["_sdc_deleted_at"]})
            except SchemaInvalidRecord as exc:
                raise InvalidRecord(_schema_reason(exc)) from None
        return deleted

    def _deletion_mark_validator(self) -> RecordValidator | None:
        """A validator of the tap's ``_sdc_deleted_at`` alone, if its schema declares the mark.

        The tap's own schema: the SDK removes ``_sdc_*`` columns from the sink's (or puts its
        own there, with ``add_record_metadata``), so records are not checked against it.
        """
        declared = self.original_schema.get("properties", {}).get("_sdc_deleted_at")
        if not self.validate_schema or not isinstance(declared, dict):
            return None
        schema = {"type": "object", "properties": {"_sdc_deleted_at": declared}}
        return RecordValidator(schema, validate_formats=self.validate_field_string_format)

    def _take_event(self, record: dict, seq: int) -> None:
        """An event: one track request, sent by the events lane after the users before it."""
        tally = self.tally
        try:
            if self._schema_error is not None:
                reason, self._schema_error = self._schema_error, None
                raise InvalidRecord(reason)
            event = to_event(record, self.route)
            key = event_key(record, self.key_properties, stream=self.stream_name)
            assert self._events is not None
            self._events.add(self.stream_name, seq, tally.received, key, event)
        except InvalidRecord as exc:
            self._summary.add(self.stream_name, "rejected")
            self._rejects.reject(self.stream_name, tally.received, str(exc), record)
            return
        if len(self.route.collisions) != self._collisions_warned:
            self._warn_collisions()
        if not self._old_events_warned:
            self._warn_if_old(record)

    def _warn_if_old(self, record: dict) -> None:
        """Track mode: one WARNING per stream once an event is over an hour old."""
        now = datetime.datetime.now(datetime.timezone.utc)
        age = event_age(record.get(self.route.time_property or "timestamp"), now)
        if age is None or age <= OLD_EVENT_SECONDS:
            return
        self._old_events_warned = True
        self.logger.warning(
            "Stream '%s' sends events that happened over an hour ago ('%s'), but the track "
            "API stamps each event when Userpilot receives it: Userpilot will show them at "
            "the time of this run. Set events_api to 'import' to keep each event's time "
            "(Enterprise plan or Growth add-on); see the README's Events section.",
            self.stream_name,
            self.route.time_property,
        )

    def _take_import(self, record: dict, seq: int) -> None:
        """An event for the Import API: a record with its time, into the buffer's events file."""
        tally = self.tally
        try:
            if self._schema_error is not None:
                reason, self._schema_error = self._schema_error, None
                raise InvalidRecord(reason)
            row = to_import_record(record, self.route)
            key = event_key(record, self.key_properties, stream=self.stream_name)
            line = encode_row(row)
            max_bytes = self._settings.max_file_bytes
            if len(line) > max_bytes:
                msg = f"its record is {len(line)} bytes, more than max_file_bytes ({max_bytes})"
                raise InvalidRecord(msg)
        except InvalidRecord as exc:
            tally.rejected += 1
            self._rejects.reject(self.stream_name, tally.received, str(exc), record)
            return
        self._buffer.add(EVENTS, self.stream_name, key, line, seq, user_id=row["user_id"])
        if len(self.route.collisions) != self._collisions_warned:
            self._warn_collisions()
        if self.route.event_type == "page_view" and not self._page_view_warned:
            left_out = page_view_left_out(record, self.route)
            if left_out:
                self._page_view_warned = True
                self.logger.warning(
                    "Stream '%s' sends page views, which carry no metadata: %s %s not sent. "
                    "Send them as a stream of track events if Userpilot needs them.",
                    self.stream_name,
                    ", ".join(f"'{name}'" for name in left_out[:10]),
                    "is" if len(left_out) == 1 else "are",
                )

    def _take_deletion(self, record: dict, seq: int) -> None:
        """A record whose ``_sdc_deleted_at`` is set: a deletion request, or counted as ignored."""
        tally = self.tally
        if not self._settings.hard_delete:
            self._summary.add(self.stream_name, "deleted_ignored")
            if not self._deletes_noted:
                self._deletes_noted = True
                self.logger.info(
                    "Stream '%s' has records marked deleted in the source (_sdc_deleted_at): "
                    "they are neither upserted nor deleted, and counted as ignored. Set "
                    "hard_delete to true to delete those %s from Userpilot (erasure of the "
                    "profile and its events, not reversible).",
                    self.stream_name,
                    self.route.object,
                )
            return
        try:
            row_id = deleted_id(record, self.route)
        except InvalidRecord as exc:
            self._summary.add(self.stream_name, "rejected")
            self._rejects.reject(self.stream_name, tally.received, str(exc), record)
            return
        if self._buffer.supersede(self.route.object, row_id):
            # Its earlier rows in the open batch will not be sent.
            self._summary.add(self.stream_name, "superseded")
        self._deletions.add(self.route.object, self.stream_name, row_id, seq)

    def _warn_collisions(self) -> None:
        self._collisions_warned = len(self.route.collisions)
        names = self.route.take_collisions()
        if names:
            self.logger.warning(
                "Stream '%s': %s got two values in one record (a flat key and a nested object "
                "flatten to the same name); the value later in the record was sent. Rename one "
                "with stream_maps.",
                self.stream_name,
                ", ".join(f"'{name}'" for name in names),
            )

    # Per batch: nothing, the buffer and the job lane send batches.

    @override
    def process_batch(self, context: dict) -> None:
        """Nothing to do: rows went to the run's buffer as they arrived."""


def _by_table_name(stream_name: str, mapping: t.Mapping[str, t.Any] | None) -> str:
    """Why a prefixed stream goes where it goes, for its INFO line (empty when plain)."""
    if (mapping or {}).get("object") or table_name(stream_name) == stream_name:
        return ""
    return f" (by its table name '{table_name(stream_name)}', after the tap's prefix)"


def _schema_reason(exc: SchemaInvalidRecord) -> str:
    """Why a record failed its schema, naming the property and the rule, never the value."""
    cause = exc.__cause__
    path = ".".join(str(p) for p in getattr(cause, "absolute_path", ()) or ())
    rule = getattr(cause, "validator", None)
    if rule is None:
        return "does not match the stream's schema"
    expected = json.dumps(getattr(cause, "validator_value", None), default=str)
    where = f"property '{path}'" if path else "the record"
    return f"does not match the stream's schema: {where} fails '{rule}' ({expected})"
