"""Whose entries they are: every entry of the ledger is scoped by the account that wrote it.

One database serves several accounts (staging and production on one host, several hosts) and
several runs at once, so each entry carries its account's scope: the API host and a one-way
fingerprint of the API key, never the key itself, nor credentials written into ``api_url``. A dry
run sends nothing to any account: its entries have a scope of their own.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from target_userpilot.ledger.schema import DRY_RUN_SCOPE
from target_userpilot.privacy.redact import without_userinfo

#: The key of the account fingerprint: a fixed, public value. It only makes the fingerprint
#: this target's own; the API key's own entropy is what makes it one-way.
_FINGERPRINT_KEY = b"target-userpilot ledger account"


def account_scope(api_url: str, api_key: str | None, *, dry_run: bool = False) -> str:
    """The scope of one account's entries: its API host and a fingerprint of its key.

    ``https://analytex.userpilot.io account:3f2a…``: two accounts on one host (staging and
    production) never share entries, and the key cannot be read back from the text. Userinfo in
    ``api_url`` (``https://user:pw@host``) is left out.
    """
    if dry_run:
        return DRY_RUN_SCOPE
    return f"{api_host(api_url)} account:{key_fingerprint(api_url, api_key or '')}"


def api_host(api_url: str) -> str:
    """``scheme://host[:port][/path]`` of ``api_url``, lower case, never its userinfo."""
    parts = urlsplit(without_userinfo(api_url.strip()))
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def key_fingerprint(api_url: str, api_key: str) -> str:
    """16 hex digits of HMAC-SHA256 over the host and the key: one way, one account."""
    message = f"{api_host(api_url)}\n{api_key.strip()}".encode()
    return hmac.new(_FINGERPRINT_KEY, message, hashlib.sha256).hexdigest()[:16]
