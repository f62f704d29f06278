"""``open_ledger``: the ledger a ``state_db`` names, a SQLite file or a PostgreSQL database.

It sits above the two backends and picks one: a file path (the default,
``.target-userpilot/state.db``) or ``sqlite:///path`` opens :class:`SQLiteLedger`, a
``postgresql://`` (or ``postgres://``) URL :class:`PostgresLedger`; anything else shaped like a
URL is refused before any input is read, never taken for a file path. Opened read-only
(``userpilot-ledger``), nothing is created, migrated or written. A URL's password never appears
in a message: they go through ``privacy/redact.py``.
"""

from __future__ import annotations

import re

from target_userpilot.errors import ConfigurationError
from target_userpilot.ledger.sqlite import SQLiteLedger
from target_userpilot.ledger.store import Ledger
from target_userpilot.privacy.redact import redact_url

DEFAULT_PATH = ".target-userpilot/state.db"
_ENCODING_HINT = (
    " Percent-encode the special characters of the user name and password: @ as %40, : as %3A,"
    " / as %2F, # as %23, ? as %3F, % as %25."
)

#: ``scheme://`` at the start, or a database's name and a colon (``postgresql:/db``, a slash
#: short): such a string is a URL, never a file path (``postgresql:`` as a folder name is not
#: what anyone means). One letter and a colon is a Windows drive.
_URL = re.compile(
    r"^([A-Za-z][A-Za-z0-9+.\-]+://|(postgres|postgresql|sqlite|mysql|mariadb|mssql|oracle)"
    r"(\+[A-Za-z0-9_]+)?:)",
    re.IGNORECASE,
)


def looks_like_url(state_db: str) -> bool:
    """Whether ``state_db`` is a URL (``scheme://…``) rather than a file path."""
    return bool(_URL.match(state_db.strip()))


def open_ledger(state_db: str, *, read_only: bool = False) -> Ledger:
    """Open the ledger ``state_db`` names: a SQLite file path, or a SQLAlchemy URL.

    Raises :class:`ConfigurationError` (before any input is read) for a URL whose driver is not
    installed, a database that cannot be reached or refuses the credentials, and a damaged file.

    ``read_only`` (``userpilot-ledger``): nothing is created, migrated or written; a path or
    database that holds no ledger is refused (``schema.check_readable``) instead of becoming one.
    """
    state_db = state_db.strip() or DEFAULT_PATH
    if not looks_like_url(state_db):
        return SQLiteLedger(state_db, read_only=read_only)
    # Imported only for a URL: SQLAlchemy takes about 0.14 s to import, which a run on the
    # default SQLite file never pays. Not to dodge a cycle: postgres.py imports only the
    # ledger's interface (store.py) and its schema.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(state_db)
    except (ArgumentError, ValueError):
        msg = (
            f"state_db '{redact_url(state_db)}' looks like a URL but cannot be read as one. Use a "
            "SQLAlchemy URL such as postgresql://user:password@host:5432/database, or a file path."
            f"{_ENCODING_HINT if state_db.count('@') > 1 else ''}"
        )
        raise ConfigurationError(msg) from None
    if "@" in (url.host or ""):
        # SQLAlchemy ends the password at its first @: the rest of it would become the host
        # name, shown in every message and tried as an address.
        msg = (
            f"state_db '{redact_url(state_db)}' cannot be read as one URL: its password or user "
            f"name holds an @.{_ENCODING_HINT}"
        )
        raise ConfigurationError(msg)
    backend = url.get_backend_name()
    if backend == "postgres":
        # The spelling Heroku and others give DATABASE_URL; SQLAlchemy knows only "postgresql".
        backend = "postgresql"
        state_db = "postgresql" + state_db[len("postgres") :]
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            msg = (
                "state_db 'sqlite://' needs a file (sqlite:///path/to/state.db) to outlive the run."
            )
            raise ConfigurationError(msg)
        return SQLiteLedger(url.database, read_only=read_only)
    if backend == "postgresql":
        from target_userpilot.ledger.postgres import PostgresLedger  # SQLAlchemy: see above

        return PostgresLedger(state_db, read_only=read_only)
    msg = (
        f"state_db '{redact_url(state_db)}' names a '{backend}' database; the ledger can use a "
        "PostgreSQL URL (postgresql://user:password@host:5432/database) or a SQLite file path."
    )
    raise ConfigurationError(msg)
