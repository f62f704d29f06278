"""The ledger's SQL for mirror deletes (``version_ids``, ``unversioned_ids``) and cleared keys
(``object_keys``).

One mixin per backend, so the backend modules stay about connections, upgrades and the first
tables: :class:`SQLiteTables` for :class:`~target_userpilot.ledger.sqlite.SQLiteLedger`,
:class:`PostgresTables` for :class:`~target_userpilot.ledger.postgres.PostgresLedger`. The
tables are made by migrations 4 and 5 (``schema.py``).

A stream's id is a mirror delete's candidate when the stream's finished version lacks it and no
other stream holds it: no other stream has it in ``version_ids`` (a stream's rows there are ids of
its latest complete version or of a copy in progress: a finished version removes the others) and
none loaded it without versions (``unversioned_ids``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _held_elsewhere(row: str) -> str:
    """SQL: another stream than ``row``'s still holds ``row``'s id (``row``: a version_ids row)."""
    return f"""(
        EXISTS (
            SELECT 1 FROM version_ids other
            WHERE other.id = {row}.id AND other.scope = {row}.scope
                AND other.object = {row}.object AND other.stream <> {row}.stream
        )
        OR EXISTS (
            SELECT 1 FROM unversioned_ids other
            WHERE other.id = {row}.id AND other.scope = {row}.scope
                AND other.object = {row}.object AND other.stream <> {row}.stream
        )
    )"""  # noqa: S608 - a table name of this module, never input


_COUNTS = f"""
    SELECT count(*),
        count(*) FILTER (WHERE v.version <> :version AND NOT {_held_elsewhere("v")}),
        count(*) FILTER (WHERE v.version <> :version AND {_held_elsewhere("v")})
    FROM version_ids v
    WHERE v.scope = :scope AND v.object = :object AND v.stream = :stream
"""  # noqa: S608 - no input in the text
_NOT_IN_VERSION = f"""
    SELECT v.id FROM version_ids v
    WHERE v.scope = :scope AND v.object = :object AND v.stream = :stream
        AND v.version <> :version AND NOT {_held_elsewhere("v")}
    ORDER BY v.id
"""  # noqa: S608 - no input in the text
_DROP_HELD_ELSEWHERE = f"""
    DELETE FROM version_ids
    WHERE scope = :scope AND object = :object AND stream = :stream AND version <> :version
        AND {_held_elsewhere("version_ids")}
"""  # noqa: S608 - no input in the text
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

    def _save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Sequence[str]
    ) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO unversioned_ids VALUES (?, ?, ?, ?, ?)",
                ((scope, object, stream, row_id, now) for row_id in ids),
            )

    def _forget_version_ids(self, scope: str, object: str, ids: Sequence[str]) -> None:
        marks = ",".join("?" * len(ids))
        with self._lock, self._db:
            for table in ("version_ids", "unversioned_ids"):
                statement = (
                    f"DELETE FROM {table} "  # noqa: S608 - a table name and placeholders
                    f"WHERE id IN ({marks}) AND scope = ? AND object = ?"
                )
                self._db.execute(statement, (*ids, scope, object))

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id was recorded as loaded from ``stream`` in ``version``."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock:
            return self._db.execute(_HAS_VERSION, params).fetchone() is not None

    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int, int]:
        """``(known, candidates, held)`` of the stream's ids (see ``ids_not_in_version``)."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock:
            known, candidates, held = self._db.execute(_COUNTS, params).fetchone()
        return int(known), int(candidates or 0), int(held or 0)

    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's ids missing from ``version`` that no other stream holds, sorted."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock:
            return [row_id for (row_id,) in self._db.execute(_NOT_IN_VERSION, params)]

    def drop_ids_held_elsewhere(self, scope: str, object: str, stream: str, version: int) -> int:
        """The stream no longer holds its ids missing from ``version`` that another stream holds."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        with self._lock, self._db:
            return self._db.execute(_DROP_HELD_ELSEWHERE, params).rowcount

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
_PG_SAVE_UNVERSIONED_IDS = """
    INSERT INTO unversioned_ids (scope, object, stream, id, loaded_at)
    SELECT :scope, :object, :stream, row_id, :now
    FROM unnest(CAST(:ids AS text[])) AS batch(row_id)
    ON CONFLICT (id, scope, object, stream) DO NOTHING
"""
_PG_FORGET_VERSION_IDS = """
    DELETE FROM version_ids WHERE id = ANY(:ids) AND scope = :scope AND object = :object
"""
_PG_FORGET_UNVERSIONED_IDS = """
    DELETE FROM unversioned_ids WHERE id = ANY(:ids) AND scope = :scope AND object = :object
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

    def _save_unversioned_ids(
        self, scope: str, object: str, stream: str, ids: Sequence[str]
    ) -> None:
        from sqlalchemy import text

        params = {
            "scope": scope,
            "object": object,
            "stream": stream,
            "now": time.time(),
            "ids": list(ids),
        }
        self._run(
            "recording the ids of a stream without versions",
            lambda conn: conn.execute(text(_PG_SAVE_UNVERSIONED_IDS), params),
        )

    def _forget_version_ids(self, scope: str, object: str, ids: Sequence[str]) -> None:
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "ids": list(ids)}

        def forget(conn: Any) -> None:
            conn.execute(text(_PG_FORGET_VERSION_IDS), params)
            conn.execute(text(_PG_FORGET_UNVERSIONED_IDS), params)

        self._run("removing deleted profiles from the full-table versions", forget)

    def has_version(self, scope: str, object: str, stream: str, version: int) -> bool:
        """Whether some id was recorded as loaded from ``stream`` in ``version``."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        return bool(self._query("looking up a full-table version", _HAS_VERSION, params))

    def version_counts(
        self, scope: str, object: str, stream: str, version: int
    ) -> tuple[int, int, int]:
        """``(known, candidates, held)`` of the stream's ids (see ``ids_not_in_version``)."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        row = self._query("counting a version's missing ids", _COUNTS, params)[0]
        known, candidates, held = row
        return int(known), int(candidates or 0), int(held or 0)

    def ids_not_in_version(self, scope: str, object: str, stream: str, version: int) -> list[str]:
        """The stream's ids missing from ``version`` that no other stream holds, sorted."""
        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        rows = self._query("listing a version's missing ids", _NOT_IN_VERSION, params)
        return [row_id for (row_id,) in rows]

    def drop_ids_held_elsewhere(self, scope: str, object: str, stream: str, version: int) -> int:
        """The stream no longer holds its ids missing from ``version`` that another stream holds."""
        from sqlalchemy import text

        params = {"scope": scope, "object": object, "stream": stream, "version": version}
        result = self._run(
            "releasing the ids another stream holds",
            lambda conn: conn.execute(text(_DROP_HELD_ELSEWHERE), params).rowcount,
        )
        return int(result or 0)

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
