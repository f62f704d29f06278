"""Singer input: one line at a time, checked before the SDK acts on it.

This is the one place that decides whether a line is a Singer message the target can act on.
A line that is not stops the run (exit 7) with a sentence naming the line and what is wrong
with it, never the line itself: records carry personal data. The checks are the few type tests
the SDK's handlers assume and do not make, so that a malformed message cannot become a
traceback deep in the SDK, or a RECORD silently dropped while STATE moves past it. One valid
line is no stop: a RECORD nested deeper than the target reads (``nesting.py``) goes on as a
rejected record of its stream.

The main thread reads the input itself (:class:`InputFeed`), but only what is there: it waits
for input with ``poll``, never in a read that only a signal could interrupt. While the tap is
silent it checks every quarter second whether the run stops, and a stop (a signal, a lane's
failure) wakes it at once through a pipe; it then raises why, between two lines. No thread
hands it lines: each hand-over made the main thread give up the interpreter to a reading
thread, a few hundred times per 10,000 records, which cost a third of the throughput while a
job uploaded on a loaded machine.
"""

from __future__ import annotations

import codecs
import json
import os
import select
import sys
import threading
import typing as t
from collections import Counter

import msgspec
from singer_sdk.exceptions import InvalidInputLine
from singer_sdk.io_base import SingerReader

from target_userpilot.input.nesting import (
    MAX_DEPTH,
    NotAnObject,
    NotJSON,
    PrunedRecord,
    names,
    nested_deeper,
    object_members,
    pruned_record,
)

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

#: Appended to every refusal: what the user does next, and that the checkpoint holds.
_FIX = (
    " It is not a valid Singer message: fix the tap and rerun (nothing after the last STATE "
    "was lost)."
)
#: The deepest a message may be nested: a record's limit, plus the message around it.
MAX_MESSAGE_DEPTH = MAX_DEPTH + 1
#: A stream name is quoted in messages, but never at any length.
_NAME_LIMIT = 80
#: Bytes read from the input at once (whatever is there, up to this much).
CHUNK_BYTES = 1 << 16
#: While the tap is silent, how often the main thread checks whether the run stops anyway.
IDLE_CHECK_SECONDS = 0.25
#: The fast JSON parser (about twice the standard library's speed): strings, ints of any size
#: and floats exactly as ``json.loads`` gives them. What it refuses goes to ``json.loads``,
#: which accepts a little more (NaN, Infinity, numbers beyond a float's range, lone surrogates)
#: and otherwise says what is wrong, as the target always did.
_decode = msgspec.json.Decoder().decode


def parse_json(text: str | bytes) -> t.Any:
    """One JSON text, parsed by the fast parser, or by ``json.loads`` where it refuses: the one
    way the target reads input JSON (stdin lines, and BATCH files' JSONL). Raises as
    ``json.loads`` does (``ValueError``, ``RecursionError``)."""
    try:
        return _decode(text)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(text)


#: ``poll`` on any file descriptor is POSIX's: elsewhere (Windows) the input is read as a plain
#: stream, and a stop acts when the next line arrives or the input ends.
_CAN_POLL = hasattr(select, "poll")


class InputFeed:
    """Lines of the input, read by the main thread when there are some, between checks.

    ``wake`` (any thread but a signal handler) makes the main thread, waiting for input, call
    its ``check`` at once. Lines are split on ``\\n`` only: a JSON message never holds a raw
    line break, and ``\\r`` before it is whitespace to the JSON parser.
    """

    def __init__(self, stream: t.IO[str], fd: int) -> None:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        errors = getattr(stream, "errors", None) or "strict"
        self._decoder = codecs.getincrementaldecoder(encoding)(errors)
        self._fd = fd
        # The wake pipe is closed once the input is read; the lock keeps a late ``wake`` from
        # writing to a descriptor number the process has given to another file since.
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def lines(self, check: t.Callable[[], None]) -> t.Iterator[str]:
        """Every line, in order; ``check`` runs whenever the feed is woken or idle."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        # Data, the end of the input, or its failure: each is read (and says which it is).
        readable = select.POLLIN | select.POLLHUP | select.POLLERR
        poller.register(self._wake_read, select.POLLIN)
        decode = self._decoder.decode
        idle_ms = int(IDLE_CHECK_SECONDS * 1000)
        tail = ""
        try:
            while True:
                ready = dict(poller.poll(idle_ms))
                if not ready:
                    check()
                    continue
                if self._wake_read in ready:
                    self._drain_wakes()
                    check()
                if not ready.get(self._fd, 0) & readable:
                    continue
                data = os.read(self._fd, CHUNK_BYTES)
                if not data:
                    break
                lines = (tail + decode(data)).split("\n")
                tail = lines.pop()
                yield from lines
            rest = tail + decode(b"", final=True)
            if rest:
                yield rest
            check()  # a stop that came with the last lines is still a stop
        finally:
            self._close()

    def wake(self) -> None:
        """Make the main thread check now, if it waits for input (any thread but a handler)."""
        with self._lock:
            if self._wake_write < 0:
                return
            try:
                os.write(self._wake_write, b"w")
            except BlockingIOError:
                pass  # the pipe is full of wakes: the main thread will check anyway

    def _drain_wakes(self) -> None:
        try:
            while os.read(self._wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def _close(self) -> None:
        with self._lock:
            fds, self._wake_read, self._wake_write = (self._wake_read, self._wake_write), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def _fileno(stream: t.Any) -> int | None:
    """The stream's file descriptor, if it has one that nothing has buffered from yet."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) else None


class InputReader(SingerReader):
    """Singer input with errors that name the line, and never echo a whole record to the log."""

    def __init__(self) -> None:
        super().__init__()
        #: 1-based number of the line read last, blank lines included (what an editor shows).
        self.line_number = 0
        #: Streams that have had a SCHEMA message: the only ones other messages may name.
        self.streams: set[str] = set()
        #: Called between lines while reading from a feed: raises why the run stops, if it does.
        self.check: t.Callable[[], None] = _nothing
        self._feed: InputFeed | None = None

    def wake(self) -> None:
        """The run stops: a main thread waiting for input checks now (any thread)."""
        feed = self._feed
        if feed is not None:
            feed.wake()

    def _input_lines(self, file_input: t.IO[str]) -> t.Iterable[str]:
        """Lines from a feed when the input is a file descriptor, else the stream itself."""
        fd = _fileno(file_input)
        if fd is None or not _CAN_POLL:
            return file_input  # an in-memory stream never blocks
        self._feed = InputFeed(file_input, fd)
        return self._feed.lines(self.check)

    @override
    def process_lines(
        self,
        file_input: t.IO[str] | None,
        callbacks: dict[str, t.Callable[[dict[str, t.Any]], None]],
    ) -> t.Counter[str]:
        """Read every line: skip blank ones, check each message, hand it to its handler.

        Runs for every line of input: a RECORD, by far the most frequent, costs two type tests.
        """
        stats: t.Counter[str] = Counter()
        for line in self._input_lines(file_input or self.default_input):
            self.line_number += 1
            if not line or line.isspace():
                continue  # blank lines between messages carry nothing (contract: skipped)
            self._current_message = line
            message = self.deserialize_json(line)
            kind: t.Any = message.get("type")  # a string once checked: anything else stops
            if kind == "RECORD":
                if (
                    type(message.get("stream")) is not str
                    or type(message.get("record")) is not dict
                ):
                    self._refuse_record(message)
            else:
                self._check(message, kind)
            callback = callbacks.get(kind)
            if callback is None:
                self._process_unknown_message(message)
            else:
                callback(message)
            stats[kind] += 1
        return stats

    @override
    def deserialize_json(self, line: str) -> dict[str, t.Any]:
        """Parse one input line; a bad one stops the run with its line number.

        Numbers with a fraction become floats, not the SDK's Decimals: Userpilot stores numbers
        as JavaScript doubles, so a Decimal would only be made and converted back to a float
        for every number of every record. Integers stay exact ints (ids keep every digit).
        A line nested deeper than the target reads is never handed to a parser (see
        :meth:`_deep_message`), so neither parser's own depth limit is ever reached.
        """
        depth = nested_deeper(line, MAX_MESSAGE_DEPTH)
        if depth is not None:
            return self._deep_message(line, depth)
        try:
            message = parse_json(line)
        except (ValueError, RecursionError) as exc:
            self._not_json(_reason(exc))
        if not isinstance(message, dict):
            self._not_a_message()
        return message

    def _deep_message(self, line: str, depth: int) -> dict[str, t.Any]:
        """A message nested ``depth`` levels deep, more than the target reads.

        A RECORD becomes a rejected record of its stream, so one odd record does not stop a
        long load: its record is a :class:`~target_userpilot.input.nesting.PrunedRecord` (what is
        shallow enough of it, why it is rejected, and the record as JSON text), and the usual
        checks of its stream and record follow. Any other message stops the run (exit 7): a
        SCHEMA or STATE cannot be left out. The line is checked to be valid JSON first, so a
        truncated line is never taken for a deep one.
        """
        try:
            members = object_members(line)
        except NotAnObject:
            self._not_a_message()
        except NotJSON as exc:
            where = (
                "it ends before its brackets close"
                if exc.position >= len(line.rstrip())
                else f"malformed at character {exc.position + 1}"
            )
            self._not_json(f"{where}, {depth:,} levels deep")
        last = {member.name: member for member in members}  # a name given twice: the last
        message: dict[str, t.Any] = {}
        deep: list[str] = []
        for name, member in last.items():
            if member.depth <= MAX_DEPTH:
                message[name] = json.loads(line[member.start : member.end])
            else:
                # Only its kind is known: enough for the checks to say what is wrong.
                message[name] = {} if line[member.start] == "{" else []
                deep.append(name)
        kind = message.get("type")
        if kind != "RECORD":
            what = f"{_a(_quoted(kind))} message" if type(kind) is str and kind else "a message"
            self._refuse_deep(
                f"is {what} nested {depth:,} levels deep; the target reads messages nested at "
                f"most {MAX_MESSAGE_DEPTH} levels, and sets aside only a RECORD nested deeper "
                "(as a rejected record)."
            )
        if not isinstance(message.get("record"), dict):
            return message  # the checks refuse it, naming what the record is
        record = last["record"]
        if "record" in deep:
            message["record"] = pruned_record(line, record.start, record.end, record.depth)
        else:
            message["record"] = PrunedRecord(
                message["record"],
                reason=f"its RECORD message is nested {depth:,} levels deep (in {names(deep)}, "
                f"beside the record), deeper than the {MAX_MESSAGE_DEPTH} levels the target reads",
                record_json=line[record.start : record.end],
            )
        return message

    def _not_json(self, reason: str) -> t.NoReturn:
        msg = (
            f"Input line {self.line_number} is not valid JSON ({reason}). The tap's output is "
            "malformed; nothing after the last STATE was lost, fix the tap and rerun."
        )
        raise InvalidInputLine(msg) from None

    def _not_a_message(self) -> t.NoReturn:
        msg = f"Input line {self.line_number} is not a Singer message (a JSON object)."
        raise InvalidInputLine(msg) from None

    def _refuse_deep(self, problem: str) -> t.NoReturn:
        msg = (
            f"Input line {self.line_number} {problem} Fix the tap and rerun (nothing after the "
            "last STATE was lost)."
        )
        raise InvalidInputLine(msg)

    @override
    # The SDK's is a staticmethod; it is only ever called through the reader (``self.``), so
    # an instance method, which can name the line, takes its place.
    def assert_line_requires(  # type: ignore[override]
        self, line_dict: dict[str, t.Any], requires: set[str]
    ) -> None:
        """Name the line and the missing keys, never the message (it may hold personal data).

        The SDK asks once per record: a message with every key costs one comparison.
        """
        if line_dict.keys() >= requires:
            return
        missing = requires - set(line_dict)
        if missing:
            msg = (
                f"Input line {self.line_number} is missing the key(s) "
                f"{', '.join(sorted(missing))}; it is not a valid Singer message. Fix the tap "
                "and rerun."
            )
            raise InvalidInputLine(msg)

    @override
    def _process_unknown_message(self, message_dict: dict[str, t.Any]) -> None:
        msg = (
            f"Input line {self.line_number} has unknown Singer message type "
            f"'{_quoted(message_dict.get('type'))}'; expected SCHEMA, RECORD, STATE, "
            "ACTIVATE_VERSION or BATCH."
        )
        raise InvalidInputLine(msg)

    # Checks, one per message type (RECORD's fast test is inline in process_lines).

    def _check(self, message: dict[str, t.Any], kind: t.Any) -> None:
        """Check a message other than a well-formed RECORD; raise on the first problem."""
        if kind is None and "type" not in message:
            self.assert_line_requires(message, {"type"})
        if type(kind) is not str:
            self._refuse(f"has a 'type' that is {_json_type(kind)}, not a string.")
        if kind == "RECORD":
            self._refuse_record(message)
        elif kind == "SCHEMA":
            self._check_schema(message)
        elif kind == "STATE":
            if "value" not in message:
                self._refuse("is a STATE message without a 'value'.")
        elif kind in ("ACTIVATE_VERSION", "BATCH"):
            stream = self._stream(message, kind)
            if stream not in self.streams:
                self._refuse(
                    f"is {_a(kind)} message for stream "
                    f"'{_quoted(stream)}', which has had no SCHEMA message before it."
                )
            if kind == "BATCH":
                self._check_batch(message)
            else:
                version = message.get("version")
                if type(version) is not int:
                    self._refuse(
                        "is an ACTIVATE_VERSION message whose 'version' is "
                        f"{'missing' if version is None else _json_type(version)}, not an integer."
                    )

    def _refuse_record(self, message: dict[str, t.Any]) -> None:
        """Say what is wrong with a RECORD message's stream or record."""
        self._stream(message, "RECORD")
        if "record" not in message:
            self._refuse("is a RECORD message without a 'record'.")
        record = message["record"]
        if not isinstance(record, dict):  # a PrunedRecord is one (a rejected record, later)
            self._refuse(
                f"is a RECORD message whose 'record' is {_json_type(record)}, not an object."
            )

    def _check_schema(self, message: dict[str, t.Any]) -> None:
        stream = self._stream(message, "SCHEMA")
        if "schema" not in message:
            self._refuse("is a SCHEMA message without a 'schema'.")
        body = message["schema"]
        if type(body) is not dict:
            self._refuse(
                f"is a SCHEMA message whose 'schema' is {_json_type(body)}, not an object."
            )
        properties = body.get("properties")
        if type(properties) is not dict:
            what = "has no 'properties'" if properties is None else "has 'properties' that are "
            if properties is not None:
                what += f"{_json_type(properties)}, not an object"
            self._refuse(f"is a SCHEMA message whose 'schema' {what}.")
        keys = message.get("key_properties")
        if keys is not None and (type(keys) is not list or any(type(k) is not str for k in keys)):
            self._refuse(
                "is a SCHEMA message whose 'key_properties' is not a list of property names "
                "(strings)."
            )
        self.streams.add(stream)

    def _check_batch(self, message: dict[str, t.Any]) -> None:
        if type(message.get("encoding")) is not dict:
            self._refuse("is a BATCH message whose 'encoding' is missing or not an object.")
        manifest = message.get("manifest")
        if type(manifest) is not list or any(type(f) is not str for f in manifest):
            self._refuse("is a BATCH message whose 'manifest' is not a list of file names.")

    def _stream(self, message: dict[str, t.Any], kind: str) -> str:
        """The message's stream name, which must be a string."""
        if "stream" not in message:
            self._refuse(f"is {_a(kind)} message without a 'stream'.")
        stream = message["stream"]
        if type(stream) is not str:
            self._refuse(
                f"is {_a(kind)} message whose 'stream' is {_json_type(stream)}, not a string."
            )
        return stream

    def _refuse(self, problem: str) -> t.NoReturn:
        raise InvalidInputLine(f"Input line {self.line_number} {problem}{_FIX}")


def _nothing() -> None:
    """No check (the reader runs without a run, as in the SDK's own tests)."""


def _a(kind: str) -> str:
    """A message type with its article: "a RECORD", "an ACTIVATE_VERSION"."""
    return f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"


def _json_type(value: t.Any) -> str:
    """What JSON calls a value's type, with its article: never the value (it may be data)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _quoted(name: t.Any) -> str:
    """A stream or type name for a message, cut short: it came from the input."""
    text = str(name)
    return text if len(text) <= _NAME_LIMIT else text[: _NAME_LIMIT - 1] + "…"


def _reason(exc: BaseException) -> str:
    """Why a line is not JSON, without quoting it (``json`` gives only positions)."""
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return str(exc)
