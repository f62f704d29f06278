"""Where the API key may go, and which keys can go at all: the rules both settings and client use.

Settings check them before any input is read; the client checks them again when it is built, so
a client made in a test or a tool obeys the same rules. One rule each, so a key or a host that
passes the settings can never fail later in the client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from target_userpilot.errors import ConfigurationError
from target_userpilot.privacy.redact import has_userinfo, redact_url

LOOPBACK_HOSTS = frozenset({"localhost", "::1"})

UNSENDABLE_KEY = (
    "The API key cannot be sent as an HTTP header: it holds whitespace, a control character or "
    "a character outside printable ASCII (often a newline or space copied with it). Copy the "
    "key again from Userpilot (Settings > Environment) into api_key."
)


def check_api_url(api_url: str) -> str:
    """Return ``api_url`` without a trailing slash, or raise :class:`ConfigurationError`.

    The key travels in a header, so it may only go over HTTPS; plain HTTP is allowed for
    loopback hosts, where the local sandbox runs.
    """
    shown = redact_url(api_url)
    if has_userinfo(api_url):
        # requests would send them as Basic credentials beside the key, and every message and
        # the ledger's scope would carry them.
        msg = (
            f"api_url '{shown}' holds a user name or password before the host; Userpilot takes "
            "only the key, in api_key. Set api_url to the host alone, e.g. "
            "https://analytex.userpilot.io."
        )
        raise ConfigurationError(msg)
    try:
        parts = urlsplit(api_url)
        scheme, host = parts.scheme, (parts.hostname or "").lower()
    except ValueError:  # a bracketed host that is no IPv6 address
        scheme, host = "", ""
    if scheme not in {"http", "https"} or not host:
        msg = f"api_url '{shown}' is not an http(s) URL, e.g. https://analytex.userpilot.io."
        raise ConfigurationError(msg)
    if scheme == "http" and not is_loopback(host):
        msg = (
            f"api_url '{shown}' uses plain http:// for a non-loopback host; the API key would "
            "travel unencrypted. Use https://, e.g. https://analytex.userpilot.io."
        )
        raise ConfigurationError(msg)
    return api_url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ``localhost`` and ``::1``."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    octets = host.split(".")
    return len(octets) == 4 and octets[0] == "127" and all(o.isdigit() for o in octets)


def check_api_key(api_key: str) -> str:
    """Return ``api_key``, or raise :class:`ConfigurationError` if it is no sendable key.

    The one rule: printable ASCII without spaces. Userpilot's keys are made of letters, digits
    and dashes; a space, tab, line break or typographic character inside one was copied with it
    by mistake, and http.client would refuse some of them only at the first request, quoting
    the header (the key) in its error. The sentence never quotes the key, nor the offending
    character: part of a secret is still a secret.
    """
    if any(not "\x21" <= char <= "\x7e" for char in api_key):
        raise ConfigurationError(UNSENDABLE_KEY)
    return api_key
