"""A published tap, end to end: MeltanoLabs tap-postgres (``.venv/tap-postgres``) reads tables
with the types warehouses have, and its output is piped into the target, with the ledger on the
same PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.sandbox import Sandbox

from support import pg
from support.messages import API_KEY
from support.pg import PASSWORD, PostgresServer
from support.runner import TargetRun

# A published tap, end to end (issue 14 item 4): MeltanoLabs tap-postgres reads a table with
# the types warehouses have, and its output is piped into the target.

TAP_SCHEMA = "tap_e2e"
TAP_TABLES = """
CREATE SCHEMA tap_e2e;
CREATE TABLE tap_e2e.crm_users (
    id bigint PRIMARY KEY, email text, plan text, mrr numeric(12, 2), score numeric,
    active boolean, signed_up_at timestamptz, trial_ends date, tags text[], settings jsonb,
    note text, company_id text
);
CREATE TABLE tap_e2e.crm_companies (
    company_id text PRIMARY KEY, name text, employees integer, founded date
);
INSERT INTO tap_e2e.crm_users VALUES
    (9007199254740993, 'a@example.com', 'pro', 1234.50, 12345678901234567890.123, true,
     '2024-03-01 12:34:56.789+02', '2024-04-01', ARRAY['a', 'b'],
     '{"theme": "dark", "limits": {"seats": 5}}', NULL, 'acme'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 'c@example.com', 'free', 0, -0.5, false, '1999-12-31 23:59:59+00', '2000-02-29',
     '{}', '[]', 'ünïcode "quoted"', 'globex');
INSERT INTO tap_e2e.crm_companies VALUES
    ('acme', 'Acme Inc', 120, '1990-01-01'), ('globex', 'Globex', NULL, NULL);
"""


@pytest.fixture(scope="module")
def tap_postgres() -> Path:
    """The pinned tap-postgres command, installed into its own virtualenv on first use."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import tap_postgres_venv

    return tap_postgres_venv.ensure()


def _tap_output(
    tap: Path, server: PostgresServer, tmp_path: Path, schema: str = TAP_SCHEMA, **settings: object
) -> bytes:
    """Discover, select every stream of ``schema``, sync: the tap's Singer output."""
    config = tmp_path / "tap-config.json"
    config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": server.port,
                "user": pg.USER,
                "password": PASSWORD,
                "database": pg.DATABASE,
                "filter_schemas": [schema],
                **settings,
            }
        )
    )
    found = subprocess.run(
        [str(tap), "--config", str(config), "--discover"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    catalog = json.loads(found.stdout)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = True
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    synced = subprocess.run(
        [str(tap), "--config", str(config), "--catalog", str(catalog_path)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return synced.stdout


def _run_on(config: dict[str, Any], singer: bytes, tmp_path: Path) -> TargetRun:
    config_path = tmp_path / "target-config.json"
    config_path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
        input=singer,
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    return TargetRun(done.returncode, done.stdout.decode(), done.stderr.decode())


def test_tap_postgres_output_lands_value_by_value(
    tap_postgres: Path, postgres: PostgresServer, tmp_path: Path, postgres_state_db: str
) -> None:
    postgres.psql(f"DROP SCHEMA IF EXISTS {TAP_SCHEMA} CASCADE;" + TAP_TABLES)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, keep_uploads=True) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "object_mapping": {f"{TAP_SCHEMA}-crm_companies": {"object": "companies"}},
            "skip_unchanged": True,
            "state_db": postgres_state_db,
        }

        run = _run_on(config, _tap_output(tap_postgres, postgres, tmp_path), tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert run.states[-1] == {
            "bookmarks": {f"{TAP_SCHEMA}-crm_companies": {}, f"{TAP_SCHEMA}-crm_users": {}}
        }
        users, companies = sandbox.profiles("users"), sandbox.profiles("companies")
        # A bigint id beyond 2**53 stays exact; a text id stays as it is.
        assert users.keys() == {"9007199254740993", "2", "3"}
        assert users["9007199254740993"] == {
            "user_id": "9007199254740993",
            "company_id": "acme",
            "metadata": {
                "email": "a@example.com",
                "plan": "pro",
                "mrr": 1234.5,
                "score": 12345678901234567890.123,
                "active": True,
                "signed_up_at": "2024-03-01T10:34:56.789000+00:00",  # timestamptz, in UTC
                "trial_ends": "2024-04-01",
                "tags": '["a","b"]',
                "settings__theme": "dark",  # jsonb objects are flattened
                "settings__limits__seats": 5,
            },
        }
        # All nulls: a profile with no properties (Userpilot removes null properties).
        assert users["2"] == {"user_id": "2", "company_id": None, "metadata": {}}
        assert users["3"]["metadata"] == {
            "email": "c@example.com",
            "plan": "free",
            "mrr": 0,
            "score": -0.5,
            "active": False,
            "signed_up_at": "1999-12-31T23:59:59.000000+00:00",
            "trial_ends": "2000-02-29",
            "tags": "[]",
            "settings": "[]",
            "note": 'ünïcode "quoted"',
        }
        assert companies == {
            "acme": {
                "company_id": "acme",
                "metadata": {"name": "Acme Inc", "employees": 120, "founded": "1990-01-01"},
            },
            "globex": {"company_id": "globex", "metadata": {"name": "Globex"}},
        }
        # numeric(12,2) and an unbounded numeric arrive as JSON numbers: Userpilot keeps numbers
        # as doubles, so 12345678901234567890.123 is the nearest double (see target.py).
        uploaded = [json.loads(line) for line in b"".join(sandbox.uploads()).splitlines()]
        first = next(row for row in uploaded if row.get("user_id") == "9007199254740993")
        assert first["metadata"]["score"] == float("12345678901234567890.123")
        assert isinstance(first["metadata"]["mrr"], float)

        # The next sync, after one change that nulls a value: one row sent, the value cleared.
        postgres.psql(f"UPDATE {TAP_SCHEMA}.crm_users SET plan = NULL WHERE id = 3")  # noqa: S608
        again = _run_on(config, _tap_output(tap_postgres, postgres, tmp_path), tmp_path)

        assert again.returncode == 0, again.stderr[-3000:]
        assert again.summary["total"]["rows_sent"] == 1
        assert again.summary["total"]["unchanged"] == 4
        assert "plan" not in sandbox.profiles("users")["3"]["metadata"]
    postgres.psql(f"DROP SCHEMA {TAP_SCHEMA} CASCADE")


# Mirror deletes and cleared keys with the real tap (issue 19 items 4 and 5): tap-postgres
# copies the table FULL_TABLE, stamping a version; it sends ACTIVATE_VERSION only before the copy
# (the Meltano SDK's emit_activate_version_messages), so the end of input closes the version.

MIRROR_SCHEMA = "tap_mirror"
MIRROR_TABLE = """
CREATE SCHEMA tap_mirror;
CREATE TABLE tap_mirror.members (id bigint PRIMARY KEY, email text, prefs jsonb);
INSERT INTO tap_mirror.members
    SELECT g, 'm' || g || '@example.com', '{"lang": "en", "theme": "dark"}'
    FROM generate_series(1, 40) g;
"""


def test_tap_postgres_full_table_deletes_rows_deleted_in_sql_and_clears_json_keys(
    tap_postgres: Path, postgres: PostgresServer, tmp_path: Path, postgres_state_db: str
) -> None:
    postgres.psql(f"DROP SCHEMA IF EXISTS {MIRROR_SCHEMA} CASCADE;" + MIRROR_TABLE)
    stream = f"{MIRROR_SCHEMA}-members"

    def sync() -> bytes:
        return _tap_output(
            tap_postgres, postgres, tmp_path, MIRROR_SCHEMA, emit_activate_version_messages=True
        )

    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "hard_delete": True,
            "state_db": postgres_state_db,
            "mirror_delete_on_end_of_input": True,
        }
        first = _run_on(config, sync(), tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        assert len(sandbox.profiles("users")) == 40
        assert sandbox.deletions("users") == []

        postgres.psql(
            f"DELETE FROM {MIRROR_SCHEMA}.members WHERE id IN (7, 8);"  # noqa: S608
            f"UPDATE {MIRROR_SCHEMA}.members SET prefs = NULL WHERE id = 1;"
            f"""UPDATE {MIRROR_SCHEMA}.members SET prefs = '{{"lang": "fr"}}' WHERE id = 2;"""
        )
        second = _run_on(config, sync(), tmp_path)

        assert second.returncode == 0, second.stderr[-3000:]
        assert sorted(sandbox.deletions("users")) == ["7", "8"]
        assert second.summary["streams"][stream]["deleted"] == 2
        profiles = sandbox.profiles("users")
        assert profiles["1"]["metadata"] == {"email": "m1@example.com"}
        assert profiles["2"]["metadata"] == {"email": "m2@example.com", "prefs__lang": "fr"}
        assert profiles["3"]["metadata"]["prefs__theme"] == "dark"

        # Without the setting the version is never closed: nothing more is deleted.
        postgres.psql(f"DELETE FROM {MIRROR_SCHEMA}.members WHERE id = 9")  # noqa: S608
        cautious = {**config, "mirror_delete_on_end_of_input": False}
        third = _run_on(cautious, sync(), tmp_path)
        assert third.returncode == 0, third.stderr[-3000:]
        assert sorted(sandbox.deletions("users")) == ["7", "8"]
        assert "see mirror_delete_on_end_of_input" in third.stderr
    postgres.psql(f"DROP SCHEMA {MIRROR_SCHEMA} CASCADE")
