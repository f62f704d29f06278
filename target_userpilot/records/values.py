"""A record's values as Userpilot metadata primitives: pure functions, no I/O.

``rows.py`` places values in a row; this module says what one value becomes (a string, a number,
a boolean or null), and holds the one compact JSON encoder rows and arrays are written with.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

#: Value types that are already Userpilot metadata primitives and pass through unchanged.
AS_IS = frozenset({str, int, bool, type(None)})
#: Compact UTF-8 JSON; made once, because ``json.dumps`` with options builds an encoder per call.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
if c_make_encoder is not None:
    # ``JSONEncoder.encode`` still builds its C encoder on every call; this one is made once.
    # Rows are trees made from JSON, never circular, so the circular check is left out too.
    _c_encoder = c_make_encoder(
        None, _encoder.default, encode_basestring, None, ":", ",", False, False, True
    )

    def encode_json(value: Any) -> str:
        """Compact UTF-8 JSON for one value."""
        return "".join(_c_encoder(value, 0))

else:  # pragma: no cover (CPython always has the C encoder)

    def encode_json(value: Any) -> str:
        return _encoder.encode(value)


def encode_line(value: Any) -> bytes:
    """One NDJSON line: compact JSON, UTF-8, ending in ``\\n``.

    Raises ``UnicodeEncodeError`` for a lone surrogate, which UTF-8 cannot carry.
    """
    return (encode_json(value) + "\n").encode()


def primitive(value: Any) -> Any:
    """Convert one value to a Userpilot metadata primitive (string, number, boolean or null)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
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
    return encode_json(value)


def _decimal_number(value: decimal.Decimal) -> int | float | None:
    """A JSON number for a decimal; NaN and infinities have none, so they become null."""
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent  # a letter only for NaN and infinities
    if value == value.to_integral_value() and isinstance(exponent, int) and exponent >= 0:
        return int(value)
    return float(value)


def _json_safe(value: Any) -> Any:
    """A copy of an array's content that serialises as strict JSON (no NaN, no Decimal)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in AS_IS else _json_safe(v) for v in value]
    return primitive(value)
