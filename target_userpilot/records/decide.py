"""What a record becomes, decided once by pure code from its stream's rules. No SDK, no I/O.

A stream's :class:`StreamRules` are chosen once, when its sink is built (:func:`rules_for`): its
route, whether its events go one by one (track) or in Import API files, ``hard_delete``,
``max_file_bytes``, the schema's checks (``validate_records``). :func:`decide` then turns each
record into exactly one outcome, which the sink applies in one place:

- :class:`Upsert`: a profile row, as its id and its encoded NDJSON line;
- :class:`Deletion`: the id of a profile the source deleted (``hard_delete``);
- :class:`TrackEvent`: a track request's body, and the key it is sent once by;
- :class:`ImportRecord`: an Import API record, as its key, its encoded line and its user;
- :class:`Rejection`: why the record cannot be loaded, and the profile it still names (a
  full-table version keeps that profile: mirror deletes never erase one for a bad row);
- :class:`Skip`: nothing to send: an ignored stream, Meltano's loader test, or a record the
  source deleted while ``hard_delete`` is off.

Nothing here logs, counts or sends: what a stream says once (collisions, old events...) and
what is counted where are the sink's. The one state a decision reads and changes is the
stream's :class:`~target_userpilot.records.rows.NamesSeen` (the object keys a null clears).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from target_userpilot.errors import InvalidRecord
from target_userpilot.records.events import event_key, to_event
from target_userpilot.records.imports import event_time, page_view_left_out, to_import_record
from target_userpilot.records.marks import is_deleted
from target_userpilot.records.routing import EVENTS, IGNORE, LOADER_TEST, Route, route_for
from target_userpilot.records.rows import NamesSeen, deleted_id, encode_row, profile_id, to_row

#: Why a record breaks a schema, or None when it keeps it (``RecordValidator.problem``).
Check = Callable[[dict[str, Any]], str | None]


class Kind(enum.Enum):
    """What a stream's records become, fixed when its sink is built."""

    #: Users or companies: upserts, and deletions of what the source deleted.
    PROFILES = "profiles"
    #: Events, one track request each (``events_api: track``).
    TRACK = "track"
    #: Events in Import API files, with the time they happened (``events_api: import``).
    IMPORT = "import"
    #: ``object_mapping`` says ``ignore``: nothing is sent.
    IGNORED = "ignored"
    #: Meltano's loader test stream: the connection is checked, nothing is written.
    LOADER_TEST = "loader test"


@dataclass(frozen=True)
class StreamRules:
    """Everything that decides what one stream's records become, chosen once per sink."""

    stream: str
    route: Route
    kind: Kind
    #: A row (or Import API record) longer than this can never be uploaded: it is rejected.
    max_file_bytes: int
    #: The stream's key properties (an event's key; with ``keys_required``, checked first).
    key_properties: tuple[str, ...] = ()
    #: ``on_invalid_record: fail``: a record missing a key property is rejected before
    #: anything else, as the SDK's own record path would refuse it.
    keys_required: bool = False
    #: ``hard_delete``: a record the source deleted becomes a deletion, not a skip.
    hard_delete: bool = False
    #: ``validate_records``: why a record breaks the stream's schema.
    schema_problem: Check | None = None
    #: ``validate_records``: why a ``_sdc_deleted_at`` breaks the rule the tap's schema gives it
    #: (the SDK leaves the ``_sdc_*`` columns out of the stream's own schema).
    mark_problem: Check | None = None

    @property
    def object(self) -> str:
        """The Userpilot object the stream loads (``users``, ``companies``, ``events``...)."""
        return self.route.object


def rules_for(
    stream: str,
    schema_properties: Sequence[str] | Mapping[str, Any],
    key_properties: Sequence[str] | None,
    mapping: Mapping[str, Any] | None = None,
    *,
    max_file_bytes: int,
    events_api: str = "track",
    on_invalid_record: str = "skip",
    hard_delete: bool = False,
    schema_problem: Check | None = None,
    mark_problem: Check | None = None,
) -> StreamRules:
    """A stream's rules, from its schema, key properties and ``object_mapping`` entry."""
    importing = events_api == "import"
    route = route_for(stream, schema_properties, key_properties, mapping, import_events=importing)
    if route.object == LOADER_TEST:
        kind = Kind.LOADER_TEST
    elif route.object == IGNORE:
        kind = Kind.IGNORED
    elif route.object == EVENTS:
        kind = Kind.IMPORT if importing else Kind.TRACK
    else:
        kind = Kind.PROFILES
    return StreamRules(
        stream,
        route,
        kind,
        max_file_bytes,
        key_properties=tuple(key_properties or ()),
        keys_required=on_invalid_record == "fail",
        hard_delete=hard_delete,
        schema_problem=schema_problem,
        # Only a profile's mark can delete anything.
        mark_problem=mark_problem if kind is Kind.PROFILES else None,
    )


@dataclass(frozen=True, slots=True)
class Upsert:
    """A profile row: its id, and the NDJSON line that carries it."""

    row_id: str
    line: bytes


@dataclass(frozen=True, slots=True)
class Deletion:
    """The id of a profile the source deleted, for a deletion request."""

    row_id: str


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One track request's body, and the key the event is sent once by.

    ``happened_at``: when the event happened, if the record says (UTC ISO 8601). The track API
    cannot send it: Userpilot stamps the event on arrival, which the sink warns about once.
    """

    key: str
    body: dict[str, Any]
    happened_at: str | None = None


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One Import API record: its key, its NDJSON line, and the user it must wait for.

    ``left_out``: for a page view, which carries no metadata, the properties it does not send.
    """

    key: str
    line: bytes
    user_id: str
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be loaded.

    ``profile_id``: the profile it names, if readable (a full-table version keeps it).
    ``record_json``: the record as the tap sent it, for one too deep to read whole.
    ``missing_key``: refused for a missing key property (the SDK's error with ``fail``).
    """

    reason: str
    profile_id: str | None = None
    record_json: str | None = None
    missing_key: bool = False


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to send, and why (one of the ``SKIP_*`` values)."""

    why: str


SKIP_IGNORED = Skip("ignored stream")
SKIP_LOADER_TEST = Skip("Meltano's loader test")
#: A record the source deleted, while ``hard_delete`` is off: neither upserted nor deleted.
SKIP_DELETED = Skip("deleted in the source, hard_delete off")

Outcome = Upsert | Deletion | TrackEvent | ImportRecord | Rejection | Skip


class Unreadable(Protocol):
    """A record nested too deeply to read whole (``input.nesting.PrunedRecord``)."""

    reason: str
    record_json: str


def decide(
    record: dict[str, Any],
    rules: StreamRules,
    names: NamesSeen | None = None,
    unreadable: Unreadable | None = None,
) -> Outcome:
    """What ``record`` becomes under ``rules``: exactly one outcome, never an exception.

    ``names``: the stream's names seen so far (its object keys); ``unreadable``: set when the
    record is only the shallow part of one nested too deeply to read, which is rejected.
    """
    kind = rules.kind
    if kind is Kind.PROFILES and unreadable is None and not rules.keys_required:
        return _profile(record, rules, names)  # the common case, first
    if kind is Kind.IGNORED:
        return SKIP_IGNORED
    if kind is Kind.LOADER_TEST:
        return SKIP_LOADER_TEST
    profiles = kind is Kind.PROFILES
    if unreadable is not None:
        kept = profile_id(record, rules.route) if profiles else None
        return Rejection(unreadable.reason, kept, record_json=unreadable.record_json)
    if rules.keys_required:
        for key in rules.key_properties:
            if record.get(key) is None:
                reason = f"'{key}' is missing or null (a key property)"
                return Rejection(reason, missing_key=True)
    if kind is Kind.TRACK:
        return _track_event(record, rules, names)
    if kind is Kind.IMPORT:
        return _import_record(record, rules, names)
    return _profile(record, rules, names)


def _profile(record: dict[str, Any], rules: StreamRules, names: NamesSeen | None) -> Outcome:
    """A users or companies record: an upsert, a deletion, a skip or a rejection."""
    route = rules.route
    mark = record.get("_sdc_deleted_at")
    if mark is not None:
        # Only the id matters for a deletion: a log-based tap often leaves a deleted row's
        # other columns empty, against its schema, so the schema is not checked.
        try:
            is_deleted(record)  # True, or a doubtful mark: never guessed either way
        except InvalidRecord as exc:
            return Rejection(str(exc), profile_id(record, route))
        if rules.mark_problem is not None:
            problem = rules.mark_problem({"_sdc_deleted_at": mark})
            if problem is not None:
                return Rejection(problem, profile_id(record, route))
        if not rules.hard_delete:
            return SKIP_DELETED
        try:
            return Deletion(deleted_id(record, route))
        except InvalidRecord as exc:
            return Rejection(str(exc))
    if rules.schema_problem is not None:
        problem = rules.schema_problem(record)
        if problem is not None:
            return Rejection(problem, profile_id(record, route))
    try:
        row_id, row = to_row(record, route, names)
        line = encode_row(row)
    except InvalidRecord as exc:
        return Rejection(str(exc), profile_id(record, route))
    if len(line) > rules.max_file_bytes:
        reason = f"its row is {len(line)} bytes, more than max_file_bytes ({rules.max_file_bytes})"
        return Rejection(reason, row_id)
    return Upsert(row_id, line)


def _track_event(record: dict[str, Any], rules: StreamRules, names: NamesSeen | None) -> Outcome:
    """An event for the track API: its body and key, or a rejection."""
    if rules.schema_problem is not None:
        problem = rules.schema_problem(record)
        if problem is not None:
            return Rejection(problem)
    try:
        body = to_event(record, rules.route, names)
        key = event_key(record, rules.key_properties, stream=rules.stream)
        encode_row(body)  # the events lane spools it: one it cannot write is refused here
    except InvalidRecord as exc:
        return Rejection(str(exc))
    prop = rules.route.time_property or "timestamp"
    try:
        happened_at: str | None = event_time(record.get(prop), prop)
    except InvalidRecord:
        happened_at = None  # track mode sends no time: a missing one refuses nothing
    return TrackEvent(key, body, happened_at)


def _import_record(record: dict[str, Any], rules: StreamRules, names: NamesSeen | None) -> Outcome:
    """An event for the Import API: its record with the time it happened, or a rejection."""
    if rules.schema_problem is not None:
        problem = rules.schema_problem(record)
        if problem is not None:
            return Rejection(problem)
    try:
        row = to_import_record(record, rules.route, names)
        key = event_key(record, rules.key_properties, stream=rules.stream)
        line = encode_row(row)
    except InvalidRecord as exc:
        return Rejection(str(exc))
    if len(line) > rules.max_file_bytes:
        size = len(line)
        reason = f"its record is {size} bytes, more than max_file_bytes ({rules.max_file_bytes})"
        return Rejection(reason)
    route = rules.route
    left_out = page_view_left_out(record, route) if route.event_type == "page_view" else ()
    return ImportRecord(key, line, row["user_id"], tuple(left_out))
