"""The sink: one per stream. It routes, buffers rows in a batch file, and flushes to the lane."""

from __future__ import annotations

import json
import typing as t

from singer_sdk.exceptions import InvalidRecord as SchemaInvalidRecord
from singer_sdk.sinks import BatchSink

from target_userpilot.batch import BatchFile, SealedBatch
from target_userpilot.errors import InvalidRecord
from target_userpilot.rows import IGNORE, encode_row, route_for, to_row
from target_userpilot.validation import RecordValidator

if t.TYPE_CHECKING:
    from target_userpilot.target import TargetUserpilot


class UserpilotSink(BatchSink):
    """Turns a stream's records into Userpilot rows and hands full batches to the job lane.

    The sink keeps its own batch file rather than the SDK's in-memory record list, so the SDK's
    size checks are answered from the file: ``is_full`` when the next row would not fit.
    """

    def __init__(
        self,
        target: TargetUserpilot,
        stream_name: str,
        schema: dict,
        key_properties: t.Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self.load = target.load
        mapping = self.load.settings.object_mapping.get(stream_name)
        self.route = route_for(stream_name, schema.get("properties", {}), key_properties, mapping)
        self.tally = self.load.summary.stream(stream_name, self.route.object)
        self._batch: BatchFile | None = None
        self._ready: SealedBatch | None = None
        self._position = 0
        self._schema_error: str | None = None
        if self.route.ignored:
            self.logger.info("Stream '%s' is ignored (object_mapping).", stream_name)
        else:
            self.logger.info(
                "Stream '%s' loads %s, identified by '%s'.",
                stream_name,
                self.route.object,
                self.route.id_property,
            )

    # Size: answered from the batch file, not the SDK's record counter.

    @property
    def current_size(self) -> int:
        """Records waiting to be flushed."""
        open_records = self._batch.records if self._batch is not None else 0
        return open_records + (self._ready.rows if self._ready is not None else 0)

    @property
    def is_full(self) -> bool:
        """A sealed batch waits, or the open one has reached ``batch_size_rows``."""
        return self._ready is not None or (self._batch is not None and self._batch.full)

    # Per record

    def get_validator(self) -> RecordValidator | None:
        """The SDK's schema validation (``validate_records``), compiled for speed."""
        if not self.validate_schema:
            return None
        return RecordValidator(self.schema, validate_formats=self.validate_field_string_format)

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

    def _singer_validate_message(self, record: dict) -> None:
        """Missing key properties are judged by the row rules, which can reject one record."""

    def _after_process_record(self, context: dict) -> None:
        """Nothing per record: the SDK's per-record DEBUG line costs more than the row itself."""

    def process_record(self, record: dict, context: dict) -> None:
        """Turn one record into a row and add it to the open batch file."""
        del context  # the batch lives in self._batch
        # Runs for every record: attributes read more than once are read once into locals.
        self._position += 1
        load = self.load
        seq = load.checkpoints.record()
        self.tally.received += 1
        route = self.route
        if route.object == IGNORE:
            return
        load.check_lane()
        try:
            if self._schema_error is not None:
                reason, self._schema_error = self._schema_error, None
                raise InvalidRecord(reason)
            row_id, row = to_row(record, route)
            line = encode_row(row)
            max_bytes = load.settings.max_file_bytes
            if len(line) > max_bytes:
                msg = f"its row is {len(line)} bytes, more than max_file_bytes ({max_bytes})"
                raise InvalidRecord(msg)
        except InvalidRecord as exc:
            self.tally.rejected += 1
            load.rejects.reject(self.stream_name, self._position, str(exc), record)
            return
        batch = self._batch
        if batch is None:
            batch = self._batch = self._open_batch(seq)
        elif not batch.fits(row_id, line):
            self._ready = batch.seal()
            batch = self._batch = self._open_batch(seq)
        batch.add(row_id, line)

    # Per batch

    def process_batch(self, context: dict) -> None:
        """Hand the sealed (or else the open) batch to the job lane.

        Returns once the batch is uploaded, not when Userpilot has processed it: the job lane
        follows the job and releases STATE when it completes.
        """
        del context
        batch, self._ready = self._ready, None
        if batch is None and self._batch is not None:
            batch, self._batch = self._batch.seal(), None
        if batch is not None:
            self.load.submit(batch)

    def clean_up(self) -> None:
        """Remove batch files left behind by a run that stopped early."""
        if self._batch is not None:
            self._batch.discard()
            self._batch = None
        if self._ready is not None:
            self._ready.discard()
            self._ready = None
        super().clean_up()

    def _open_batch(self, first_seq: int) -> BatchFile:
        settings = self.load.settings
        return BatchFile(
            self.route.object,
            self.stream_name,
            max_rows=settings.batch_size_rows,
            max_bytes=settings.max_file_bytes,
            hold=self.load.checkpoints.hold(first_seq),
        )


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
