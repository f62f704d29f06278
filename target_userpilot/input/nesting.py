"""JSON nested deeper than the target reads, told apart without recursion.

Python's JSON parser recurses once per level and gives up near 1,000 levels (a RecursionError),
and much of the record path recurses too: stream maps, the SDK's flattening, a row's arrays
written as JSON text, some of it two or three stack frames a level. A record nested a few hundred
levels deep would end the run with a traceback wherever it happens to land. So the target reads
records nested at most :data:`MAX_DEPTH` levels, and finds a deeper one before any recursive code
sees it:

- :func:`nested_deeper`: two ``str.count`` calls settle nearly every line (a line with fewer
  brackets than the limit cannot be nested deeper); only a line with more is measured.
- :func:`object_members`: an iterative scanner of one JSON object, which checks that the text is
  valid JSON (a truncated or broken line is not mistaken for a deep one) and gives each member's
  place in the text and its depth.
- :func:`pruned_record`: a deep record's shallow properties, parsed, with why it is rejected and
  the record itself as JSON text (what ``rejects_path`` keeps).

Pure functions, no I/O; nothing here quotes a value, only property names (cut short).
"""

from __future__ import annotations

import json
import re
import typing as t
from dataclasses import dataclass
from itertools import accumulate

#: The deepest a record may be nested (``{"id": 1}`` is 1 level, ``{"a": [1]}`` 2). Real records
#: stay far below it; the record path, at three stack frames a level, stays far from Python's
#: limit of 1,000.
MAX_DEPTH = 200
#: A property name is quoted in a reason, but never at any length.
_NAME_LIMIT = 80
#: Deep properties named in one reason; the rest are counted.
_NAMES_SHOWN = 3

# What a depth measurement keeps of a line: brackets (all made braces, for nesting only counts
# them), and the quotes that tell strings apart.
_BRACES = bytes.maketrans(b"[]", b"{}")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_OPEN = ord("{")

# One JSON token after optional whitespace: the grammar json.loads accepts (NaN and the
# infinities included, raw control characters in strings not).
_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
        (?P<string>"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")
      | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
      | (?P<literal>true|false|null|NaN|Infinity|-Infinity)
      | (?P<mark>[\[\]{}:,])
    )""",
    re.VERBOSE,
)
_SPACE = re.compile(r"[ \t\n\r]*")
_CLOSING = {"{": "}", "[": "]"}

# What the scanner expects next.
_VALUE, _VALUE_OR_END, _KEY, _KEY_OR_END, _COLON, _COMMA_OR_END = range(6)


class NotJSON(ValueError):
    """The text is not valid JSON; ``position`` is the character where it stops making sense."""

    def __init__(self, position: int) -> None:
        super().__init__(f"invalid JSON at character {position}")
        self.position = position


class NotAnObject(ValueError):
    """The text is valid JSON, but not an object."""


@dataclass(frozen=True)
class Member:
    """One member of a JSON object: its name, where its value is in the text, and its depth.

    ``depth`` is 0 for a string, number or literal, 1 for ``[]`` or ``{"a": 1}``, and so on.
    """

    name: str
    start: int
    end: int
    depth: int


class PrunedRecord(dict[str, t.Any]):
    """A record nested deeper than :data:`MAX_DEPTH`: it is rejected, never loaded.

    It holds the record's properties that are shallow enough to read (so stream maps can name
    its sink and the profile it belongs to); ``reason`` says why it is rejected, naming the
    deep properties; ``record_json`` is the whole record as the tap sent it, as JSON text.
    """

    def __init__(self, values: dict[str, t.Any], *, reason: str, record_json: str) -> None:
        super().__init__(values)
        self.reason = reason
        self.record_json = record_json


def nested_deeper(text: str | bytes, limit: int) -> int | None:
    """How deeply the JSON ``text`` is nested, if that is deeper than ``limit``; else None.

    Costs two counts for a line with no more than ``limit`` opening brackets. A line with more
    is measured in C-speed passes (strings left out, then the innermost pairs removed, once per
    level up to ``limit``), about half of what parsing it costs; only a deeper line is walked
    bracket by bracket. Text that is not JSON gets some answer: the parser or the scanner then
    says what is wrong with it.
    """
    if isinstance(text, str):
        if text.count("{") + text.count("[") <= limit:
            return None
        data = text.encode("utf-8", "surrogatepass")
    elif text.count(b"{") + text.count(b"[") <= limit:
        return None
    else:
        data = text
    if b"\\" in data:
        # Backslashes only escape inside strings, in pairs from the left: an escaped backslash,
        # then an escaped quote, which does not end its string.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    data = data.translate(_BRACES, _NOT_STRUCTURE)
    braces = b"".join(data.split(b'"')[::2])  # every other piece is a string's content
    rest = braces
    for _ in range(limit):
        if not rest:
            return None
        rest = rest.replace(b"{}", b"")  # one level: replace does not cascade
    if not rest:
        return None
    depth = max(accumulate(1 if c == _OPEN else -1 for c in braces))
    return depth if depth > limit else None


def object_members(text: str, start: int = 0, end: int | None = None) -> list[Member]:
    """The members of the JSON object in ``text[start:end]``, in order, found without recursion.

    Raises :class:`NotJSON` where the text is not valid JSON, and :class:`NotAnObject` for
    valid JSON of another kind. A name given twice is listed twice (the last one counts, as in
    ``json.loads``).
    """
    return _ObjectScan(text, len(text) if end is None else end).members(start)


class _ObjectScan:
    """One pass over a JSON object's tokens, the open brackets on a list instead of the stack."""

    def __init__(self, text: str, end: int) -> None:
        self.text = text
        self.end = end
        self.found: list[Member] = []
        self.containers: list[str] = []  # the open brackets, outermost first
        self.expect = _VALUE
        #: The top-level member being read: its name, where its value began, its depth so far.
        self.name = ""
        self.value_start = 0
        self.value_depth = 0

    def members(self, pos: int) -> list[Member]:
        text, end, match = self.text, self.end, _TOKEN.match
        while True:
            token = match(text, pos, end)
            if token is None:
                raise NotJSON(_after_space(text, pos, end))
            kind = token.lastgroup or ""
            at, pos = token.start(kind), token.end()
            mark = token.group(kind) if kind == "mark" else ""
            expect = self.expect
            if expect in (_VALUE, _VALUE_OR_END) and mark in ("{", "[", ""):
                self._value(mark, at, pos)
            elif self._closes(mark):
                if self._close(pos):
                    rest = _after_space(text, pos, end)
                    if rest != end:
                        raise NotJSON(rest)  # something after the object
                    return self.found
            elif expect in (_KEY, _KEY_OR_END) and kind == "string":
                if len(self.containers) == 1:
                    self.name = json.loads(token.group(kind))  # a flat string: no recursion
                self.expect = _COLON
            elif expect == _COLON and mark == ":":
                self.expect = _VALUE
            elif expect == _COMMA_OR_END and mark == ",":
                self.expect = _KEY if self.containers[-1] == "{" else _VALUE
            else:
                raise NotJSON(at)

    def _value(self, mark: str, at: int, end: int) -> None:
        """A value begins: a bracket opens, or a string, number or literal is the whole of it."""
        level = len(self.containers)
        if level == 0 and mark != "{":
            raise NotAnObject("the JSON text is not an object")
        if not mark:
            if level == 1:
                self.found.append(Member(self.name, at, end, 0))
            self.expect = _COMMA_OR_END
            return
        if level == 1:
            self.value_start, self.value_depth = at, 0
        self.containers.append(mark)
        self.value_depth = max(self.value_depth, level)
        self.expect = _KEY_OR_END if mark == "{" else _VALUE_OR_END

    def _closes(self, mark: str) -> bool:
        """Whether ``mark`` closes the innermost bracket here (not after a comma or a colon)."""
        if self.expect == _VALUE_OR_END:
            return mark == "]"
        if self.expect in (_KEY_OR_END, _COMMA_OR_END):
            return mark == _CLOSING[self.containers[-1]]
        return False

    def _close(self, end: int) -> bool:
        """The innermost bracket closed; True when it was the object's own."""
        level = len(self.containers)
        self.containers.pop()
        if level == 2:
            self.found.append(Member(self.name, self.value_start, end, self.value_depth))
        self.expect = _COMMA_OR_END
        return level == 1


def pruned_record(text: str, start: int, end: int, depth: int) -> PrunedRecord:
    """The record in ``text[start:end]`` (a valid JSON object ``depth`` levels deep), pruned.

    Properties nested at most ``MAX_DEPTH - 1`` levels (the record adds one) are parsed; the
    deeper ones are left out and named in the reason.
    """
    values: dict[str, t.Any] = {}
    deep: list[str] = []
    for member in object_members(text, start, end):
        if member.depth < MAX_DEPTH:
            values[member.name] = json.loads(text[member.start : member.end])
            if member.name in deep:
                deep.remove(member.name)
        else:
            values.pop(member.name, None)
            if member.name not in deep:
                deep.append(member.name)
    where = f"in {names(deep)}" if deep else "in the record"
    reason = (
        f"it is nested {depth:,} levels deep ({where}), deeper than the {MAX_DEPTH} levels the "
        "target reads"
    )
    return PrunedRecord(values, reason=reason, record_json=text[start:end])


def _after_space(text: str, pos: int, end: int) -> int:
    """Where the first character after ``pos`` that is not JSON whitespace is."""
    return _SPACE.match(text, pos, end).end()  # type: ignore[union-attr] # it matches ""


def names(found: t.Sequence[str]) -> str:
    """Property names for a message: quoted, cut short, at most a few, the rest counted."""
    shown = ", ".join(f"'{_cut(name)}'" for name in found[:_NAMES_SHOWN])
    rest = len(found) - _NAMES_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def _cut(name: str) -> str:
    return name if len(name) <= _NAME_LIMIT else name[: _NAME_LIMIT - 1] + "…"
