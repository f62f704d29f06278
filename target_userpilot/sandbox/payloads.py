"""Request bodies as Userpilot reads them: bulk uploads (JSON or a multipart NDJSON file) and
the rows inside, each checked with the rules and messages of the real API."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from target_userpilot.sandbox.wire import Rejected

#: Per object: the identifier field of a row, the optional fields, and the job `type`.
OBJECTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "users": ("user_id", ("company_id", "metadata"), "users_bulk_identify"),
    "companies": ("company_id", ("metadata",), "companies_bulk_identify"),
}


@dataclass
class Upload:
    """A bulk upload's validated rows and what the job object reports about its file."""

    rows: list[dict[str, Any]]
    filename: str | None
    file_size: int
    data: bytes = b""  # the NDJSON file (or JSON body) as received, for `keep_uploads`


def json_type(value: Any) -> str:
    """How an error message names the JSON type of `value`."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _refuse_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's parser accepts them, Userpilot's would not."""
    raise ValueError(f"{name} is not valid JSON")


def load_json(data: bytes) -> Any:
    """Parse strict JSON (no NaN or Infinity); ValueError says why it is not JSON."""
    return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)


def _check_row(obj: str, row: Any, where: str) -> dict[str, Any]:
    """Validate one row as Userpilot does and return it; raise `Rejected` naming the problem."""

    def invalid(problem: str) -> Rejected:
        return Rejected(400, "invalid_row", "VALIDATION_ERROR", f"{where}: {problem}")

    id_field, optional, _ = OBJECTS[obj]
    if not isinstance(row, dict):
        raise invalid(f"a row must be a JSON object, got {json_type(row)}")
    unknown = sorted(set(row) - {id_field, *optional})
    if unknown:
        allowed = ", ".join((id_field, *optional))
        raise invalid(f"unknown field {unknown[0]!r} (a {obj[:-1]} row has {allowed})")
    if id_field not in row:
        raise invalid(f"{id_field} is missing")
    if not isinstance(row[id_field], str) or not row[id_field]:
        raise invalid(f"{id_field} must be a non-empty string, got {json_type(row[id_field])}")
    if obj == "users" and row.get("company_id") is not None:
        company = row["company_id"]
        if not isinstance(company, str) or not company:
            raise invalid(f"company_id must be a non-empty string, got {json_type(company)}")
    metadata = row.get("metadata", {})
    check_metadata(metadata, invalid)
    return row


def _file_part(content_type: str, body: bytes) -> tuple[str | None, bytes]:
    """Find the form field `file` in a multipart body, with the stdlib email parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n"
    message = email.message_from_bytes(
        head.encode("latin-1", "replace") + body, policy=email.policy.HTTP
    )
    if not message.is_multipart() or message.defects:
        raise Rejected(
            400,
            "invalid_request",
            "BAD_REQUEST",
            "the multipart/form-data body could not be read (missing boundary or truncated)",
        )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return part.get_filename(), payload if isinstance(payload, bytes) else b""
    raise Rejected(
        400, "invalid_request", "BAD_REQUEST", "the multipart body has no form field named 'file'"
    )


def too_large(message: str) -> Rejected:
    """A 413 in Userpilot's envelope."""
    return Rejected(413, "payload_too_large", "PAYLOAD_TOO_LARGE", message)


def parse_upload(
    obj: str, content_type: str, body: bytes | None, max_rows: int, max_bytes: int
) -> Upload:
    """Turn a bulk_identify body (JSON or multipart NDJSON) into validated rows.

    Size and row-count limits are checked before any row is validated, as a server that counts
    lines first would: a client splitting on 413 then never sees a 400 for the same batch.
    """
    if body is None or len(body) > max_bytes:
        raise too_large(f"the request body is larger than {max_bytes} bytes")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        filename, data = _file_part(content_type, body)
        if len(data) > max_bytes:
            raise too_large(f"the file has {len(data)} bytes; the limit is {max_bytes}")
        numbered = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
        if len(numbered) > max_rows:
            raise too_large(f"the file has {len(numbered)} rows; the limit is {max_rows}")
        rows = []
        for number, line in numbered:
            try:
                row = load_json(line)
            except (UnicodeDecodeError, ValueError) as exc:
                raise Rejected(
                    400, "invalid_row", "VALIDATION_ERROR", f"line {number}: not valid JSON ({exc})"
                ) from None
            rows.append(_check_row(obj, row, f"line {number}"))
        return Upload(rows, filename, len(data), data)
    if media_type == "application/json" or media_type.endswith("+json"):
        if len(body) > max_bytes:
            raise too_large(f"the body has {len(body)} bytes; the limit is {max_bytes}")
        try:
            document = load_json(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Rejected(
                400, "invalid_request", "BAD_REQUEST", f"the body is not valid JSON ({exc})"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get(obj), list):
            raise Rejected(
                400,
                "invalid_request",
                "BAD_REQUEST",
                f'the body must be a JSON object with an array "{obj}"',
            )
        items = document[obj]
        if len(items) > max_rows:
            raise too_large(f"the body has {len(items)} rows; the limit is {max_rows}")
        rows = [_check_row(obj, item, f"row {n}") for n, item in enumerate(items, 1)]
        return Upload(rows, None, len(body), body)
    raise Rejected(
        415,
        "unsupported_media_type",
        "UNSUPPORTED_MEDIA_TYPE",
        "send application/json or multipart/form-data with the NDJSON file in the field 'file'",
    )


def _json_document(content_type: str, body: bytes | None, max_bytes: int) -> dict[str, Any]:
    """A real-time API body: one JSON object, or a `Rejected` saying what is wrong with it."""
    if body is None or len(body) > max_bytes:
        raise too_large(f"the request body is larger than {max_bytes} bytes")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Rejected(
            415, "unsupported_media_type", "UNSUPPORTED_MEDIA_TYPE", "send application/json"
        )
    try:
        document = load_json(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(
            400, "invalid_request", "BAD_REQUEST", f"the body is not valid JSON ({exc})"
        ) from None
    if not isinstance(document, dict):
        raise Rejected(400, "invalid_request", "BAD_REQUEST", "the body must be a JSON object")
    return document


def parse_deletion(
    obj: str, content_type: str, body: bytes | None, max_ids: int | None, max_bytes: int
) -> list[str]:
    """The ids of a `DELETE /v1/users` or `/v1/companies` body (`{"users": [ids]}`).

    The id count is checked before the ids themselves, as for bulk rows: a client splitting on
    413 never sees a 400 for the same request.
    """
    document = _json_document(content_type, body, max_bytes)

    def invalid(message: str) -> Rejected:
        return Rejected(400, "invalid_request", "BAD_REQUEST", message)

    ids = document.get(obj)
    if not isinstance(ids, list):
        raise invalid(f'the body must be a JSON object with an array "{obj}" of ids')
    unknown = sorted(set(document) - {obj})
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r} (the body has only {obj!r})")
    if not ids:
        raise invalid(f'"{obj}" is empty: name at least one id to delete')
    if max_ids is not None and len(ids) > max_ids:
        raise too_large(f"the request names {len(ids)} ids; the limit is {max_ids}")
    for position, value in enumerate(ids):
        if not isinstance(value, str) or not value:
            raise invalid(f"{obj}[{position}] must be a non-empty string, got {json_type(value)}")
    return ids


def parse_event(content_type: str, body: bytes | None, max_bytes: int) -> dict[str, Any]:
    """A `POST /v1/track` body as the event to store: user_id, event_name and metadata."""
    document = _json_document(content_type, body, max_bytes)

    def invalid(message: str) -> Rejected:
        return Rejected(400, "invalid_event", "VALIDATION_ERROR", message)

    unknown = sorted(set(document) - {"user_id", "event_name", "metadata"})
    if unknown:
        raise invalid(
            f"unknown field {unknown[0]!r} (an event has user_id, event_name and metadata)"
        )
    for name in ("user_id", "event_name"):
        if name not in document:
            raise invalid(f"{name} is missing")
        if not isinstance(document[name], str) or not document[name]:
            raise invalid(f"{name} must be a non-empty string, got {json_type(document[name])}")
    metadata = document.get("metadata")
    if metadata is None:
        metadata = {}
    check_metadata(metadata, invalid)
    return {
        "user_id": document["user_id"],
        "event_name": document["event_name"],
        "metadata": metadata,
    }


def check_metadata(metadata: Any, invalid: Callable[[str], Exception]) -> None:
    """Userpilot's rule for metadata, for rows and events alike: an object of primitives."""
    if not isinstance(metadata, dict):
        raise invalid(f"metadata must be an object, got {json_type(metadata)}")
    for key, value in metadata.items():
        if isinstance(value, dict | list):
            raise invalid(
                f"metadata.{key} is {json_type(value)}; metadata values must be strings, "
                f"numbers, booleans or null"
            )


#: The Import API's record types and the fields each requires (Userpilot's "Event Schema").
IMPORT_TYPES: dict[str, tuple[str, ...]] = {
    "identify_user": ("user_id", "metadata", "source", "inserted_at"),
    "identify_company": ("company_id", "metadata", "source", "inserted_at"),
    "page_view": ("user_id", "hostname", "pathname", "source", "inserted_at"),
    "track": ("user_id", "event_name", "source", "inserted_at", "metadata"),
}
#: Fields any import record may carry besides the required ones (the examples' context fields).
IMPORT_OPTIONAL = frozenset(
    {
        "company_id",
        "event_name",
        "metadata",
        "hostname",
        "pathname",
        "country_code",
        "screen_width",
        "screen_height",
        "operating_system",
        "browser",
        "browser_language",
        "user_agent",
        "device_type",
    }
)


@dataclass
class ImportFile:
    """An Import API upload: its valid records, and the first malformed line, which fails the
    job (Userpilot validates an import file after accepting it, as a job phase)."""

    rows: list[dict[str, Any]]
    filename: str | None
    file_size: int
    data: bytes = b""
    problem: str | None = None


def parse_import(
    content_type: str, body: bytes | None, max_rows: int, max_bytes: int
) -> ImportFile:
    """A `POST /v1/imports` body: a multipart NDJSON file in the field `file`.

    Size and line count are checked first (413, as for bulk uploads); a malformed line does
    not refuse the upload: the job is accepted and fails, naming the line.
    """
    if body is None:
        raise too_large(f"the request body is larger than {max_bytes} bytes")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "multipart/form-data":
        raise Rejected(
            415,
            "unsupported_media_type",
            "UNSUPPORTED_MEDIA_TYPE",
            "send multipart/form-data with the NDJSON (or CSV) file in the field 'file'",
        )
    filename, data = _file_part(content_type, body)
    if len(data) > max_bytes:
        raise too_large(f"the file has {len(data)} bytes; the limit is {max_bytes}")
    numbered = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    if len(numbered) > max_rows:
        raise too_large(f"the file has {len(numbered)} rows; the limit is {max_rows}")
    if not numbered:
        raise Rejected(400, "invalid_request", "BAD_REQUEST", "the import file holds no records")
    records = []
    for number, line in numbered:
        try:
            records.append(check_import_record(load_json(line)))
        except (UnicodeDecodeError, ValueError) as exc:
            return ImportFile([], filename, len(data), data, f"line {number}: {exc}")
    return ImportFile(records, filename, len(data), data)


def check_import_record(record: Any) -> dict[str, Any]:
    """One import record as Userpilot's Event Schema requires it; ValueError says why not."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {json_type(record)}")
    kind = record.get("event_type")
    if kind not in IMPORT_TYPES:
        raise ValueError(f"event_type must be one of {', '.join(IMPORT_TYPES)}, got {kind!r}")
    required = IMPORT_TYPES[kind]
    unknown = sorted(set(record) - {"event_type", *required, *IMPORT_OPTIONAL})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} in a {kind} record")
    for name in required:
        if name not in record:
            raise ValueError(f"{name} is missing (a {kind} record requires it)")
    for name in ("user_id", "company_id", "event_name", "source", "hostname", "pathname"):
        value = record.get(name)
        if name in record and not (isinstance(value, str) and value):
            if name == "company_id" and value is None and kind != "identify_company":
                continue
            raise ValueError(f"{name} must be a non-empty string, got {json_type(value)}")
    inserted = record["inserted_at"]
    if not isinstance(inserted, str):
        raise ValueError(f"inserted_at must be an ISO 8601 string, got {json_type(inserted)}")
    try:
        datetime.fromisoformat(inserted.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"inserted_at {inserted!r} is not an ISO 8601 date-time") from None

    def invalid(message: str) -> ValueError:
        return ValueError(message)

    if "metadata" in record:
        check_metadata(record["metadata"], invalid)
    return record
