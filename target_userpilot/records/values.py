"""A record's values as Userpilot metadata primitives: pure functions, no I/O.

``rows.py`` places values in a row; this module says what one value becomes (a string, a number,
a boolean or null), and holds the one compact JSON encoder rows and arrays are written with.

Rows are written by ``msgspec`` (a third of the time the standard library takes), byte for byte
as the standard library wrote them before: ``skip_unchanged`` and the sync history compare
hashes of the encoded rows across runs, so a row must encode the same in every version. The one
difference between the two encoders is how a float with an exponent is written (``1e+16``
against ``1e16``): such floats are held as :class:`ExponentFloat`, which is written as Python
writes it. Whatever ``msgspec`` cannot write goes to the standard library's encoder.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Mapping

# The C encoder is json.encoder's own, undeclared in its stubs.
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import msgspec

#: Value types that are already Userpilot metadata primitives and pass through unchanged.
AS_IS = frozenset({str, int, bool, type(None)})
_isfinite = math.isfinite
#: Compact UTF-8 JSON; made once, because ``json.dumps`` with options builds an encoder per call.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
if c_make_encoder is not None:
    # ``JSONEncoder.encode`` still builds its C encoder on every call; this one is made once.
    # Rows are trees made from JSON, never circular, so the circular check is left out too.
    _c_encoder = c_make_encoder(
        None, _encoder.default, encode_basestring, None, ":", ",", False, False, True
    )

    def encode_json(value: Any) -> str:
        """Compact UTF-8 JSON for one value (the standard library's encoder)."""
        return "".join(_c_encoder(value, 0))

else:  # pragma: no cover (CPython always has the C encoder)

    def encode_json(value: Any) -> str:
        return _encoder.encode(value)


class ExponentFloat(float):
    """A float Python writes with an exponent (``1e+16``, ``1e-05``), and so written here too."""

    __slots__ = ()


def number(value: float) -> float | None:
    """A float as metadata: None for NaN and the infinities (JSON has no such numbers)."""
    if 1e-4 <= value < 1e16 or -1e16 < value <= -1e-4 or value == 0:
        return value  # the common case, as it is
    if not _isfinite(value):
        return None
    return ExponentFloat(value)


def _as_python_writes(value: Any) -> Any:
    if type(value) is ExponentFloat:
        return msgspec.Raw(float.__repr__(value).encode())
    raise NotImplementedError  # msgspec: a TypeError, and the standard library takes over


_msgspec_encode = msgspec.json.Encoder(enc_hook=_as_python_writes, decimal_format="number").encode


def encode_line(value: Any) -> bytes:
    """One NDJSON line: compact JSON, UTF-8, ending in ``\\n``.

    Raises ``UnicodeEncodeError`` for a lone surrogate, which UTF-8 cannot carry.
    """
    try:
        return _msgspec_encode(value) + b"\n"
    except TypeError:  # a type msgspec does not write, or a key that is not a string
        return (encode_json(value) + "\n").encode()


def decode_line(line: bytes | str) -> Any:
    """A line :func:`encode_line` wrote, read back so that it encodes to the same bytes."""
    return json.loads(line, parse_float=_parse_float)


def _parse_float(text: str) -> float | None:
    return number(float(text))


def primitive(value: Any) -> Any:
    """Convert one value to a Userpilot metadata primitive (string, number, boolean or null)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return number(value)
    if isinstance(value, decimal.Decimal):
        return _decimal_number(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return encode_array(value)
    return str(value)


def encode_array(value: list[Any] | tuple[Any, ...]) -> str:
    """An array as a JSON string; one of primitives only (the usual tags) needs no copy."""
    for item in value:
        if type(item) not in AS_IS:
            return encode_json(_json_safe(value))
    try:
        return _msgspec_encode(value).decode()
    except UnicodeEncodeError:
        # A lone surrogate: kept in the text, so that the row is refused for it, as ever.
        return encode_json(value)


def _decimal_number(value: decimal.Decimal) -> int | float | None:
    """A JSON number for a decimal; NaN and infinities have none, so they become null."""
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent  # a letter only for NaN and infinities
    if value == value.to_integral_value() and isinstance(exponent, int) and exponent >= 0:
        return int(value)
    return number(float(value))


def _json_safe(value: Any) -> Any:
    """A copy of an array's content that serialises as strict JSON (no NaN, no Decimal)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in AS_IS else _json_safe(v) for v in value]
    return primitive(value)
