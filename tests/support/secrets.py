"""Proof that a secret never appears: neither whole nor any 8 characters of it, raw or encoded."""

from __future__ import annotations

import base64
from urllib.parse import quote

KEY = "upk-Zq7XvN2pLw9RtY4mKb8cHd3"
#: A ledger password with a raw @, :, / and % in it, the characters a URL parser trips on.
PG_SECRET = "S3cr@t:w/rd%x9Q"  # noqa: S105


def encodings(secret: str) -> list[str]:
    header = f"Token {secret}"
    return [
        secret,
        header,
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(header.encode()).decode(),
        secret.encode().hex(),
    ]


def assert_no_secret(output: bytes | str, secret: str = KEY) -> None:
    """Neither the key nor any 8 characters of it, raw or encoded, appear in ``output``."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    assert len(text) > 0, "nothing was captured: the check would prove nothing"
    for form in encodings(secret):
        for start in range(len(form) - 7):
            window = form[start : start + 8]
            assert window not in text, f"{window!r} (from {form!r}) appears in the output"
