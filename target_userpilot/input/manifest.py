"""The files a BATCH message lists (its manifest), read one record at a time.

A tap using the SDK's batch extension writes its records to files and sends one BATCH message
naming them and their encoding. The target hands every record to the same path as a RECORD
message (see ``TargetUserpilot._process_batch_message``); this module only turns the files into
records. It never holds a whole file: a JSONL file is read line by line, a Parquet file one
record batch at a time, so memory stays flat however large the files are.

A file that cannot be read stops the run (exit 7) with a sentence naming the file and its
encoding, never a line of it: records carry personal data.
"""

from __future__ import annotations

import datetime
import gzip
import logging
import sys
import typing as t
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from target_userpilot.errors import BatchFileError
from target_userpilot.input.nesting import (
    MAX_DEPTH,
    NotAnObject,
    NotJSON,
    nested_deeper,
    pruned_record,
)
from target_userpilot.input.reader import parse_json
from target_userpilot.privacy.redact import redact_url

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override

from target_userpilot.summary import count

logger = logging.getLogger("target_userpilot")

#: Rows converted from Arrow to Python at a time: small enough to keep memory flat.
_PARQUET_ROWS = 1024
#: Appended to every refusal: what to check, and that the checkpoint holds.
_FIX = (
    " Check that the tap's batch files are readable from where the target runs and that the "
    "BATCH message's encoding is right, then rerun (nothing after the last STATE was lost)."
)


@dataclass(frozen=True)
class BatchEncoding:
    """How a BATCH message's files are encoded: ``jsonl`` or ``parquet``, gzip or not."""

    format: str
    compression: str | None = None

    @classmethod
    def from_message(cls, encoding: Mapping[str, t.Any]) -> BatchEncoding:
        """The encoding a BATCH message names (checked when its first file is opened)."""
        compression = encoding.get("compression")
        if compression in ("none", ""):
            compression = None
        return cls(str(encoding.get("format")), compression)

    @override
    def __str__(self) -> str:
        return f"{self.format}, {self.compression or 'uncompressed'}"


def manifest_records(
    stream: str, manifest: Sequence[str], encoding: BatchEncoding
) -> Iterator[dict[str, t.Any]]:
    """Every record of every file of a manifest, in order, one at a time."""
    for url in manifest:
        read = 0
        for read, record in enumerate(file_records(url, encoding), start=1):  # noqa: B007
            yield record
        logger.info(
            "Stream '%s': read %s from BATCH file %s (%s).",
            stream,
            count(read, "record"),
            _shown(url),
            encoding,
        )


def file_records(url: str, encoding: BatchEncoding) -> Iterator[dict[str, t.Any]]:
    """The records of one batch file (a URL or a plain path), one at a time."""
    if encoding.format == "jsonl":
        if encoding.compression not in (None, "gzip"):
            _refuse(url, encoding, f"the compression '{encoding.compression}' is not supported")
        yield from _jsonl_records(url, encoding)
    elif encoding.format == "parquet":
        yield from _parquet_records(url, encoding)
    else:
        _refuse(
            url,
            encoding,
            f"the format '{encoding.format}' is not one the target reads (jsonl or parquet)",
        )


def _jsonl_records(url: str, encoding: BatchEncoding) -> Iterator[dict[str, t.Any]]:
    line_number = 0
    try:
        with _opened(url, encoding) as raw:
            lines = gzip.GzipFile(fileobj=raw) if encoding.compression == "gzip" else raw
            for line_number, line in enumerate(lines, start=1):
                if line.isspace():
                    continue  # a trailing or blank line carries nothing, as on stdin
                depth = nested_deeper(line, MAX_DEPTH)
                if depth is not None:
                    # Rejected like a RECORD message nested this deep, never parsed whole.
                    yield _pruned(url, encoding, line, line_number, depth)
                    continue
                try:
                    # As a RECORD message on stdin is parsed: floats for fractions, exact ints.
                    record = parse_json(line)
                except (ValueError, RecursionError):
                    _refuse(url, encoding, f"line {line_number} is not valid JSON")
                if type(record) is not dict:
                    _refuse(url, encoding, f"line {line_number} is not a record (a JSON object)")
                yield record
    except BatchFileError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        where = f" after line {line_number}" if line_number else ""
        _refuse(url, encoding, _reason(exc) + where)


def _pruned(
    url: str, encoding: BatchEncoding, line: bytes, line_number: int, depth: int
) -> dict[str, t.Any]:
    """A JSONL record nested ``depth`` levels deep: its shallow part, rejected (nesting.py)."""
    try:
        text = line.decode("utf-8").strip(" \t\r\n")  # JSON's whitespace
        return pruned_record(text, 0, len(text), depth)
    except NotAnObject:
        _refuse(url, encoding, f"line {line_number} is not a record (a JSON object)")
    except (NotJSON, UnicodeDecodeError):
        _refuse(url, encoding, f"line {line_number} is not valid JSON")


def _parquet_records(url: str, encoding: BatchEncoding) -> Iterator[dict[str, t.Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        _refuse(
            url,
            encoding,
            "reading Parquet needs pyarrow, which is not installed; install the target with "
            "its parquet extra (pip install 'target-userpilot[parquet]')",
        )
    try:
        with _opened(url, encoding) as raw:
            parquet = pq.ParquetFile(raw)
            for batch in parquet.iter_batches(batch_size=_PARQUET_ROWS):
                for record in batch.to_pylist():
                    yield _json_like(record)
    except BatchFileError:
        raise
    except OSError as exc:
        _refuse(url, encoding, _reason(exc))
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors have no common public base
        # Arrow's messages describe the file's structure, not its values, but stay general.
        _refuse(url, encoding, f"it is not a readable Parquet file ({type(exc).__name__})")


@contextmanager
def _opened(url: str, encoding: BatchEncoding) -> Iterator[t.BinaryIO]:
    """The file a manifest entry names, opened for reading bytes.

    ``file://`` URLs and plain paths are opened directly; other URLs (``s3://`` and so on) go
    through fsspec, as in the SDK, and need that filesystem's package installed.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            _refuse(url, encoding, f"the file URL names the host '{parts.netloc}', not this one")
        path = unquote(parts.path)
    elif len(parts.scheme) <= 1:  # no scheme, or a Windows drive letter: a plain path
        path = url
    else:
        import fsspec

        try:
            opened = fsspec.open(url, mode="rb")
        except (ImportError, ValueError) as exc:
            reason = f"its scheme '{parts.scheme}' cannot be read here ({exc})"
            _refuse(url, encoding, reason)
        with opened as remote:
            yield t.cast("t.BinaryIO", remote)
        return
    with open(path, "rb") as local:
        yield local


def _json_like(value: t.Any) -> t.Any:
    """A Parquet value as a tap would have sent it in a RECORD: date-times as ISO 8601 text.

    Schema validation then judges a Parquet record exactly as the same record sent as JSON.
    """
    if isinstance(value, dict):
        return {key: _json_like(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_like(item) for item in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return value


def _reason(exc: BaseException) -> str:
    """Why a file could not be read, without quoting its bytes (gzip's own message does)."""
    if isinstance(exc, gzip.BadGzipFile):
        return "it is not gzip-compressed, although the BATCH message says gzip"
    if isinstance(exc, EOFError):
        return "it ends early (the file is truncated)"
    if isinstance(exc, zlib.error):
        return "its compressed data is corrupt"
    if isinstance(exc, FileNotFoundError):
        return "there is no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "the target may not read it (permission denied)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _shown(url: str) -> str:
    """The file's name for a message: a password in a URL stays out of the logs."""
    return redact_url(url)


def _refuse(url: str, encoding: BatchEncoding, reason: str) -> t.NoReturn:
    msg = f"The BATCH file {_shown(url)} ({encoding}) cannot be read: {reason}.{_FIX}"
    raise BatchFileError(msg)
