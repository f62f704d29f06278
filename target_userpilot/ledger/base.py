"""The ledger (``state_db``): what Userpilot confirmed, kept between runs.

It holds the hash of the last row Userpilot confirmed per profile (``skip_unchanged``), the
keys of the events Userpilot accepted (so an event is not sent twice), and the Import API files
whose jobs are not settled yet (so a rerun settles them before it sends anything). Entries are
scoped by account (:func:`account_scope`: the API host and a one-way fingerprint of the API key,
never the key) and object, so one database serves several accounts and several runs at once.

Two backends sit behind one interface, :class:`Ledger`:

- a SQLite file (the default, ``.target-userpilot/state.db``), in ``ledger/sqlite.py``;
- a SQLAlchemy URL (``postgresql://…``), in ``ledger/postgres.py``.

Their tables and how an older ledger is upgraded are in ``ledger/schema.py`` (a versioned schema,
migrated on open; opened read-only, as ``userpilot-ledger`` does, nothing is made or migrated). No
SQL lives outside the ``ledger_*`` modules. Lookups go in chunks, so a 10,000-row batch costs a few
round trips. Writes are upserts, so two runs sharing one database never lose each other's entries.
A URL's password is never written anywhere: messages go through ``redact.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from target_userpilot.errors import ConfigurationError, LedgerMissing
from target_userpilot.ledger.history import HistoryTables
from target_userpilot.ledger.imports import ImportTables
from target_userpilot.ledger.schema import DRY_RUN_SCOPE, latest_version
from target_userpilot.privacy.redact import redact_url, without_userinfo
from target_userpilot.retry import RetryPolicy, Stop

logger = logging.getLogger("target_userpilot")

T = TypeVar("T")

DEFAULT_PATH = ".target-userpilot/state.db"
EXTRA_HINT = "pip install 'target-userpilot[postgres]'"
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


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ledger(HistoryTables, ImportTables):
    """Row hashes for ``skip_unchanged``, accepted event keys, the sync history and the import
    files not settled yet (``ledger/imports.py``).

    Scoped by account and object. Safe to call from several threads: confirms come from the job
    watcher while lookups run on the reading thread.
    """

    #: Keys per lookup or delete statement.
    chunk_size = 500
    #: Where the entries live, for messages; never holds a password.
    description = "the ledger"
    #: The schema version found on open (after any upgrade): 0 for a ledger made before versions.
    version = 0
    #: How a lost connection is tried again (``RetryPolicy.reconnect``), and what ends the
    #: pauses between tries at once: the run's stop. The run sets both.
    retry = RetryPolicy()
    stop: Stop | None = None

    def row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]:
        """The confirmed row hash of each of ``ids`` that has one."""
        found: dict[str, bytes] = {}
        for chunk in chunks(list(ids), self.chunk_size):
            found.update(self._row_hashes(scope, object, chunk))
        return found

    def save_row_hashes(self, scope: str, object: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Record ``(id, hash)`` pairs as confirmed, replacing earlier hashes of those ids."""
        # One entry per id (the last wins), in id order: two runs writing overlapping ids then
        # lock them in the same order and cannot deadlock.
        latest = dict(rows)
        if latest:
            self._save_row_hashes(scope, object, sorted(latest.items()))

    def forget_rows(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """Remove the entries of ``ids`` (deleted profiles: a profile made again is sent again)."""
        for chunk in chunks(sorted(set(ids)), self.chunk_size):
            self._forget_rows(scope, object, chunk)

    def accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` Userpilot already accepted as events of ``stream``."""
        found: set[str] = set()
        for chunk in chunks(list(keys), self.chunk_size):
            found.update(self._accepted_events(scope, stream, chunk))
        return found

    def add_accepted_events(
        self, scope: str, stream: str, keys: Iterable[str], name: str | None = None
    ) -> None:
        """Record event keys (of events named ``name``) as accepted; present keys stay."""
        unique = sorted(set(keys))
        if unique:
            self._add_accepted_events(scope, stream, unique, name)

    # Mirror deletes (``mirror.py``): the version each id of a stream was last loaded in.

    def save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Iterable[str]
    ) -> None:
        """Record ``ids`` (their jobs completed) as loaded from ``stream`` in ``version``."""
        for chunk in chunks(sorted(set(ids)), self.chunk_size):
            self._save_version_ids(scope, object, stream, version, chunk)

    def save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Iterable[str]
    ) -> None:
        """Record ``ids`` (their jobs completed) as loaded from ``stream`` without a version."""
        for chunk in chunks(sorted(set(ids)), self.chunk_size):
            self._save_unversioned_ids(scope, object, stream, chunk)

    def forget_version_ids(self, scope: str, object: str, ids: Iterable[str]) -> None:
        """Userpilot accepted deleting ``ids``: no stream holds them, none deletes them again."""
        for chunk in chunks(sorted(set(ids)), self.chunk_size):
            self._forget_version_ids(scope, object, chunk)

    @abstractmethod
    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id was recorded as loaded from ``stream`` in ``version``."""

    @abstractmethod
    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int, int]:
        """``(known, candidates, held)``: the stream's recorded ids; those ``version`` lacks
        that no other stream holds; those it lacks that another stream holds."""

    @abstractmethod
    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's ids missing from ``version`` that no other stream holds, sorted."""

    @abstractmethod
    def drop_ids_held_elsewhere(self, scope: str, object: str, stream: str, version: int) -> int:
        """The stream no longer holds its ids missing from ``version`` that another stream
        holds: its rows for them go (how many did)."""

    # Keys cleared (``object_keys.py``): the flattened keys sent under object properties.

    @abstractmethod
    def object_keys(self, scope: str, stream: str) -> dict[str, list[str]]:
        """Per object property of ``stream``, the flattened keys ever sent under it."""

    def add_object_keys(self, scope: str, stream: str, keys: dict[str, list[str]]) -> None:
        """Record keys as sent under their properties (already present ones stay)."""
        pairs = sorted({(prop, key) for prop, names in keys.items() for key in names})
        for chunk in chunks(pairs, self.chunk_size):
            self._add_object_keys(scope, stream, chunk)

    @abstractmethod
    def close(self) -> None:
        """Release the database connections."""

    @abstractmethod
    def schema_versions(self) -> list[int]:
        """The migrations this ledger has had (``ledger/schema.py``), in order."""

    # Backends implement these; the public methods above chunk and normalise.

    @abstractmethod
    def _row_hashes(self, scope: str, object: str, ids: Sequence[str]) -> dict[str, bytes]: ...

    @abstractmethod
    def _save_row_hashes(self, scope: str, object: str, rows: list[tuple[str, bytes]]) -> None: ...

    @abstractmethod
    def _forget_rows(self, scope: str, object: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _accepted_events(self, scope: str, stream: str, keys: Sequence[str]) -> set[str]: ...

    @abstractmethod
    def _add_accepted_events(
        self, scope: str, stream: str, keys: list[str], name: str | None
    ) -> None: ...

    @abstractmethod
    def _save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Sequence[str]
    ) -> None: ...

    @abstractmethod
    def _save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Sequence[str]
    ) -> None: ...

    @abstractmethod
    def _forget_version_ids(self, scope: str, object: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _add_object_keys(
        self, scope: str, stream: str, pairs: Sequence[tuple[str, str]]
    ) -> None: ...


def open_ledger(state_db: str, *, read_only: bool = False) -> Ledger:
    """Open the ledger ``state_db`` names: a SQLite file path, or a SQLAlchemy URL.

    Raises :class:`ConfigurationError` (before any input is read) for a URL whose driver is not
    installed, a database that cannot be reached or refuses the credentials, and a damaged file.

    ``read_only`` (``userpilot-ledger``): nothing is created, migrated or written; a path or
    database that holds no ledger is refused (:func:`check_readable`) instead of becoming one.
    """
    # The backends import this module: they are imported here, when first needed.
    from target_userpilot.ledger.sqlite import SQLiteLedger

    state_db = state_db.strip() or DEFAULT_PATH
    if not looks_like_url(state_db):
        return SQLiteLedger(state_db, read_only=read_only)
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
        from target_userpilot.ledger.postgres import PostgresLedger

        return PostgresLedger(state_db, read_only=read_only)
    msg = (
        f"state_db '{redact_url(state_db)}' names a '{backend}' database; the ledger can use a "
        "PostgreSQL URL (postgresql://user:password@host:5432/database) or a SQLite file path."
    )
    raise ConfigurationError(msg)


def check_version(current: int, description: str) -> None:
    """Refuse a ledger a newer release upgraded: this one would misread its tables."""
    if current > latest_version():
        msg = (
            f"The ledger (state_db, {description}) has schema version {current}, written by a "
            f"newer target-userpilot; this one knows versions up to {latest_version()}. Upgrade "
            "target-userpilot, or point state_db at another ledger."
        )
        raise ConfigurationError(msg)


def check_readable(version: int | None, description: str, *, legacy: bool) -> int:
    """For a reader: the ledger's schema version, or refuse a database that holds no ledger.

    ``version`` is None where the database has no ``ledger_schema`` table; ``legacy``: it has
    the tables of a ledger made before versions existed (version 0). A newer release's ledger is
    refused as the target refuses it.
    """
    if version is None and not legacy:
        msg = (
            f"state_db ({description}) holds no target-userpilot ledger: none of its tables are "
            "there. Nothing was created or changed."
        )
        raise LedgerMissing(msg)
    check_version(version or 0, description)
    return version or 0


#: The key of the account fingerprint: a fixed, public value. It only makes the fingerprint
#: this target's own; the API key's own entropy is what makes it one-way.
_FINGERPRINT_KEY = b"target-userpilot ledger account"


def account_scope(api_url: str, api_key: str | None, *, dry_run: bool = False) -> str:
    """The scope of one account's entries: its API host and a fingerprint of its key.

    ``https://analytex.userpilot.io account:3f2a…``: two accounts on one host (staging and
    production) never share entries, and the key cannot be read back from the text. Userinfo in
    ``api_url`` (``https://user:pw@host``) is left out. A dry run sends nothing to any account:
    its entries have a scope of their own.
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
