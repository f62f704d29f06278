"""Secrets out of messages: a URL's password, query secrets and userinfo, in one place.

Every message that shows a URL a user configured (``state_db``, a proxy, ``api_url``, a BATCH
file) or a driver's error text goes through here. URLs are redacted by their structure, never
by searching the text for the password: a password may hold ``@``, ``:``, ``/`` or ``#``
unescaped (users paste them so), and a short password such as ``pg`` must not turn
"No module named 'psycopg'" into "psyco***".

- The userinfo of a URL ends at the **last** ``@`` of the URL: everything between the user
  name's ``:`` and that ``@`` is the password, whatever it holds. When the ``@`` that ends the
  userinfo is ambiguous, more is hidden, never less.
- Query parameters whose names say they hold a secret (``password``, ``sslpassword``,
  ``token``, ``api_key``...) keep their names and lose their values.
- ``password=...`` outside a URL (a libpq connection string in a driver's message) likewise.
- A known secret (the password as written and as decoded) is replaced only where it stands
  alone, never inside a longer word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

#: ``scheme://`` (or ``scheme:`` with no authority, as in ``postgresql:/db``).
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):(?P<slashes>//)?")
#: A URL inside a text: a scheme, ``://``, and everything up to white space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
#: Names of query or connection-string parameters that hold a secret.
_SECRET_NAME = r"[A-Za-z_]*(?:pass|pwd|secret|token|key|auth|credential)[A-Za-z0-9_]*"  # noqa: S105 - a pattern of names
#: ``name=value`` in a query: the value runs to the next ``&name=`` or to the end.
_QUERY_SECRET = re.compile(
    rf"(?P<name>(?:^|[?&;]){_SECRET_NAME}=)(?P<value>.*?)(?=&[A-Za-z_][\w.\-]*=|$)",
    re.IGNORECASE | re.DOTALL,
)
#: ``password=value`` or ``password='value'`` in a connection string (libpq's conninfo).
_CONNINFO_SECRET = re.compile(
    rf"(?P<name>\b{_SECRET_NAME}\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s,;)&'\"]+)",
    re.IGNORECASE,
)
#: Characters that make a secret part of a longer word when they touch it.
_WORD = "A-Za-z0-9"


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``.

    Works on strings no URL parser accepts (a raw ``@``, ``#`` or ``/`` in the password, a port
    that is not a number) and on every scheme, since the point is to show the rest safely.
    """
    match = _SCHEME.match(url)
    if not match:
        return _redact_query(url) if "=" in url else url
    head, rest = url[: match.end()], url[match.end() :]
    if match.group("slashes") and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        # Whatever follows the last @ is the host; the user name stays (it helps, and it is
        # not the secret), but a user name that holds a path or query is no user name.
        if colon:
            rest = f"{user}:{MASK}@{after}"
        elif any(c in userinfo for c in "/?#"):
            rest = f"{MASK}@{after}"
        return head + _redact_query(rest)
    return head + _redact_query(rest)


def without_userinfo(url: str) -> str:
    """``url`` without any ``user:password@``: for a ledger scope or a message about a host.

    The userinfo ends at the last ``@``, as in :func:`redact_url`.
    """
    match = _SCHEME.match(url)
    if not match or not match.group("slashes") or "@" not in url[match.end() :]:
        return url
    return url[: match.end()] + url[match.end() :].rpartition("@")[2]


def password_of(url: str) -> str:
    """The password exactly as written in ``url`` (up to its last ``@``), or ``""``."""
    match = _SCHEME.match(url)
    rest = url[match.end() :] if match and match.group("slashes") else ""
    if "@" not in rest:
        return ""
    return rest.rpartition("@")[0].partition(":")[2]


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries a user name or password before its host."""
    return without_userinfo(url) != url


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL redacted (:func:`redact_url`), and each of ``secrets`` hidden.

    ``secrets`` are hidden only where they stand alone (not touching a letter or digit), so a
    two-letter password does not rewrite the words around it. Give the password both as
    written in the URL and decoded: a driver may quote either.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _CONNINFO_SECRET.sub(lambda m: m.group("name") + MASK, text)
    for secret in _variants(secrets):
        text = re.sub(rf"(?<![{_WORD}]){re.escape(secret)}(?![{_WORD}])", MASK, text)
    return text


def _redact_query(rest: str) -> str:
    """Secret values in the query (and fragment) part of ``rest``, masked."""
    start = rest.find("?")
    if start < 0:
        return rest
    query = rest[start:]
    return rest[:start] + _QUERY_SECRET.sub(lambda m: m.group("name") + MASK, query)


def _variants(secrets: Iterable[str]) -> list[str]:
    """Each secret as given and percent-decoded, longest first, empty ones left out."""
    found = {variant for secret in secrets if secret for variant in (secret, unquote(secret))}
    return sorted((s for s in found if s and s != MASK), key=len, reverse=True)
