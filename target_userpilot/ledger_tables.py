"""The ledger's SQL for mirror deletes (``version_ids``) and cleared keys (``object_keys``).

One mixin per backend, so the backend modules stay about connections, upgrades and the first
tables: :class:`SQLiteTables` for :class:`~target_userpilot.ledger_sqlite.SQLiteLedger`,
:class:`PostgresTables` for :class:`~target_userpilot.ledger_pg.PostgresLedger`. The tables are
made by migration 3 (``ledger_schema.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_COUNTS = """
    SELECT count(*), count(*) FILTER (WHERE version <> :version) FROM version_ids
    WHERE scope = :scope AND object = :object AND stream = :stream
"""
_NOT_IN_VERSION = """
    SELECT id FROM version_ids
    WHERE scope = :scope AND object = :object AND stream = :stream AND version <> :version
    ORDER BY id
"""
_HAS_VERSION = """
    SELECT 1 FROM version_ids
    WHERE scope = :scope AND object = :object AND stream = :stream AND version = :version
    LIMIT 1
"""
_OBJECT_KEYS = """
    SELECT property, key FROM object_keys WHERE scope = :scope AND stream = :stream
    ORDER BY property, key
"""


def _keys_by_property(rows: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for prop, key in rows:
        found.setdefault(prop, []).append(key)
    return found


class SQLiteTables:
    """Mirror-delete and object-key tables in the SQLite file (``_db`` under ``_lock``)."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def _save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Sequence[str]
    ) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO version_ids VALUES (?, ?, ?, ?, ?, ?)",
                ((scope, object, stream, row_id, version, now) for row_id in ids),
            )

    def _forget_version_ids(self, scope: str, object: str, ids: Sequence[str]) -> None:
        marks = ",".join("?" * len(ids))
        statement = (
            "DELETE FROM version_ids "  # noqa: S608 - only placeholders
            f"WHERE id IN ({marks}) AND scope = ? AND object = ?"
        )
        with self._lock, self._db:
            self._db.execute(statement, (*ids, scope, object))

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id was recorded as loaded from ``stream`` in ``version``."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock:
            return self._db.execute(_HAS_VERSION, params).fetchone() is not None

    def version_counts(self, scope: str, object: str, stream: str, version: int) -> tuple[int, int]:
        """``(known, missing)``: the stream's recorded ids, and those not in ``version``."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock:
            known, missing = self._db.execute(_COUNTS, params).fetchone()
        return int(known), int(missing or 0)

    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's recorded ids last loaded in another version than ``version``, sorted."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock:
            return [row_id for (row_id,) in self._db.execute(_NOT_IN_VERSION, params)]

    def object_keys(self, scope: str, stream: str) -> dict[str, list[str]]:
        """Per object property of ``stream``, the flattened keys ever sent under it."""
        with self._lock:
            rows = self._db.execute(_OBJECT_KEYS, {"scope": scope, "stream": stream}).fetchall()
        return _keys_by_property(rows)

    def _add_object_keys(self, scope: str, stream: str, pairs: Sequence[tuple[str, str]]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO object_keys VALUES (?, ?, ?, ?, ?)",
                ((scope, stream, prop, key, now) for prop, key in pairs),
            )


_PG_SAVE_VERSION_IDS = """
    INSERT INTO version_ids (scope, object, stream, id, version, loaded_at)
    SELECT :scope, :object, :stream, row_id, :version, :now
    FROM unnest(CAST(:ids AS text[])) AS batch(row_id)
    ON CONFLICT (scope, object, stream, id)
    DO UPDATE SET version = EXCLUDED.version, loaded_at = EXCLUDED.loaded_at
"""
_PG_FORGET_VERSION_IDS = """
    DELETE FROM version_ids WHERE id = ANY(:ids) AND scope = :scope AND object = :object
"""
_PG_ADD_OBJECT_KEYS = """
    INSERT INTO object_keys (scope, stream, property, key, first_sent_at)
    SELECT :scope, :stream, prop, key, :now
    FROM unnest(CAST(:props AS text[]), CAST(:keys AS text[])) AS batch(prop, key)
    ON CONFLICT (scope, stream, property, key) DO NOTHING
"""


class PostgresTables:
    """Mirror-delete and object-key tables in PostgreSQL (through ``self._run``'s retries)."""

    _run: Callable[[str, Callable[[Any], Any]], Any]

    def _query(self, what: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        rows = self._run(what, lambda conn: conn.execute(text(sql), params).fetchall())
        return [tuple(row) for row in rows]

    def _save_version_ids(
        self, scope: str, object: str, stream: str, version: int, ids: Sequence[str]
    ) -> None:
        from sqlalchemy import text

        params = {
            "scope": scope,
            "object": object,
            "stream": stream,
            "version": version,
            "now": time.time(),
            "ids": list(ids),
        }
        self._run(
            "recording the ids of a full-table version",
            lambda conn: conn.execute(text(_PG_SAVE_VERSION_IDS), params),
        )

    def _forget_version_ids(self, scope: str, object: str, ids: Sequence[str]) -> None:
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "ids": list(ids)}
        self._run(
            "removing deleted profiles from the full-table versions",
            lambda conn: conn.execute(text(_PG_FORGET_VERSION_IDS), params),
        )

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id was recorded as loaded from ``stream`` in ``version``."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        return bool(self._query("looking up a full-table version", _HAS_VERSION, params))

    def version_counts(self, scope: str, object: str, stream: str, version: int) -> tuple[int, int]:
        """``(known, missing)``: the stream's recorded ids, and those not in ``version``."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        known, missing = self._query("counting a version's missing ids", _COUNTS, params)[0]
        return int(known), int(missing or 0)

    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's recorded ids last loaded in another version than ``version``, sorted."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        rows = self._query("listing a version's missing ids", _NOT_IN_VERSION, params)
        return [row_id for (row_id,) in rows]

    def object_keys(self, scope: str, stream: str) -> dict[str, list[str]]:
        """Per object property of ``stream``, the flattened keys ever sent under it."""
        params = {"scope": scope, "stream": stream}
        return _keys_by_property(self._query("reading object keys", _OBJECT_KEYS, params))

    def _add_object_keys(self, scope: str, stream: str, pairs: Sequence[tuple[str, str]]) -> None:
        from sqlalchemy import text

        params = {
            "scope": scope,
            "stream": stream,
            "now": time.time(),
            "props": [prop for prop, _ in pairs],
            "keys": [key for _, key in pairs],
        }
        self._run(
            "recording object keys", lambda conn: conn.execute(text(_PG_ADD_OBJECT_KEYS), params)
        )
