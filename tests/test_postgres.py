"""The ledger on a real PostgreSQL, through the real target, and a real tap reading from it.

The server is the one ``tests/pg.py`` starts from the machine's binaries; each test gets its
own schema (``search_path`` in the URL), and tests that stop the server get their own server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pg
import pytest
from conftest import (
    API_KEY,
    USER_SCHEMA,
    TargetRun,
    encode_messages,
    eventually,
    record,
    run_target,
    schema,
    state,
    user,
)
from pg import PASSWORD, PostgresServer, own_postgres_fixture, postgres_fixture  # noqa: F401
from test_secrets import assert_no_secret
from test_unchanged import check_later_rows_win_over_rows_in_flight, ledger_hashes

from target_userpilot.clock import SimulatedClock
from target_userpilot.errors import LedgerUnavailable
from target_userpilot.ledger.factory import open_ledger
from target_userpilot.ledger.scope import account_scope
from target_userpilot.retry import RetryPolicy
from target_userpilot.sandbox import Sandbox

DEBUG = {"LOGLEVEL": "DEBUG", "TARGET_USERPILOT_LOGLEVEL": "DEBUG"}


def _users(n: int, changed: frozenset[int] = frozenset(), state_every: int = 0) -> list[dict]:
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in range(n):
        messages.append(record("users", user(i, plan="changed" if i in changed else "pro")))
        if state_every and (i + 1) % state_every == 0:
            messages.append(state({"upto": i}))
    messages.append(state({"done": n}))
    return messages


@pytest.fixture
def state_db(postgres, request) -> Iterator[str]:
    """A ``state_db`` URL whose tables live in a schema of this test's own."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-50:].lower()
    postgres.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    yield f"{postgres.url}?options=-csearch_path%3D{name}"
    postgres.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _start_target(
    config: dict, messages: list[dict], tmp_path: Path, name: str
) -> subprocess.Popen:
    """The real target in the background, its input written at once."""
    config_path = tmp_path / f"config-{name}.json"
    config_path.write_text(json.dumps(config))
    input_path = tmp_path / f"input-{name}.jsonl"
    input_path.write_bytes(encode_messages(messages))
    with input_path.open("rb") as stdin:
        return subprocess.Popen(
            [sys.executable, "-m", "target_userpilot", "--config", str(config_path)],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )


def _finish(proc: subprocess.Popen) -> TargetRun:
    stdout, stderr = proc.communicate(timeout=120)
    return TargetRun(proc.returncode, stdout.decode(), stderr.decode())


# skip_unchanged with the ledger on PostgreSQL


def test_a_rerun_sends_nothing_and_changes_send_only_themselves(
    sandbox, config, tmp_path, state_db
):
    config.update(skip_unchanged=True, state_db=state_db)
    first = run_target(config, _users(3000), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sandbox.stats()["rows_received"] == 3000

    rerun = run_target(config, _users(3000), tmp_path=tmp_path)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.summary["total"]["rows_sent"] == 0
    assert rerun.summary["total"]["unchanged"] == 3000
    assert sandbox.stats()["rows_received"] == 3000
    assert rerun.states == [{"done": 3000}]

    changed = frozenset(range(0, 3000, 30))
    third = run_target(config, _users(3000, changed), tmp_path=tmp_path)

    assert third.returncode == 0, third.stderr[-2000:]
    assert third.summary["total"]["rows_sent"] == len(changed) == 100
    assert sandbox.stats()["rows_received"] == 3100
    profiles = sandbox.profiles("users")
    assert {profiles[str(i)]["metadata"]["plan"] for i in changed} == {"changed"}


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_row_is_compared_with_rows_in_flight_on_postgresql(
    sandbox, config, tmp_path, state_db, batch_size
):
    check_later_rows_win_over_rows_in_flight(sandbox, config, tmp_path, batch_size, state_db)


def test_two_concurrent_runs_sharing_the_database_agree(config, tmp_path, state_db):
    """Two accounts (two hosts) and two runs into one account, all at once, on one ledger."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as other_account:
        config.update(skip_unchanged=True, state_db=state_db, batch_size_rows=500)
        other = {**config, "api_url": other_account.url}
        runs = [
            _start_target(config, _users(2000), tmp_path, "a1"),
            _start_target(config, _users(2000), tmp_path, "a2"),
            _start_target(other, _users(2000), tmp_path, "b"),
        ]
        finished = [_finish(proc) for proc in runs]
        for run in finished:
            assert run.returncode == 0, run.stderr[-2000:]
        assert len(other_account.profiles("users")) == 2000

        # The ledger agrees with both accounts: nothing is sent again to either.
        for settings in (config, other):
            rerun = run_target(settings, _users(2000), tmp_path=tmp_path)
            assert rerun.returncode == 0, rerun.stderr[-2000:]
            assert rerun.summary["total"]["rows_sent"] == 0


# The server going away mid-run


def _slow_run_config(sandbox: Sandbox, config: dict, state_db: str) -> dict:
    """Jobs of 100 rows taking about 0.3 s each: a run long enough to act during it."""
    rate = 100 / 0.3 * 60
    sandbox.set_rows_per_minute(rate)
    return {
        **config,
        "skip_unchanged": True,
        "state_db": state_db,
        "batch_size_rows": 100,
        "rows_per_minute": rate,
    }


def test_a_server_restarted_mid_run_is_waited_for(sandbox, config, tmp_path, own_postgres):
    settings = _slow_run_config(sandbox, config, own_postgres.url)
    proc = _start_target(settings, _users(2000, state_every=100), tmp_path, "restart")
    eventually(lambda: sandbox.stats()["jobs"] >= 3, timeout=30, what="three jobs")

    own_postgres.restart()
    run = _finish(proc)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.states[-1] == {"done": 2000}
    scope = account_scope(sandbox.url, API_KEY)
    assert len(ledger_hashes(own_postgres.url, scope, range(2000))) == 2000
    rerun = run_target(settings, _users(2000), tmp_path=tmp_path)
    assert rerun.returncode == 0 and rerun.summary["total"]["rows_sent"] == 0


def test_a_server_stopped_mid_run_is_a_clear_error_and_loses_nothing_confirmed(
    sandbox, config, tmp_path, own_postgres
):
    settings = _slow_run_config(sandbox, config, own_postgres.url)
    proc = _start_target(settings, _users(2000, state_every=100), tmp_path, "stop")
    eventually(lambda: sandbox.stats()["jobs"] >= 3, timeout=30, what="three jobs")

    own_postgres.stop()
    run = _finish(proc)

    assert run.returncode == 9, run.stderr[-3000:]
    assert "The ledger (state_db, PostgreSQL database 'ledger' at 127.0.0.1:" in run.stderr
    assert "rerun from the last STATE" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)
    own_postgres.start()
    # Every record before the last STATE is in the ledger: nothing Userpilot confirmed and
    # STATE covered was lost.
    last = max(s["upto"] for s in run.states if "upto" in s)
    scope = account_scope(sandbox.url, API_KEY)
    recorded = ledger_hashes(own_postgres.url, scope, range(2000))
    assert {str(i) for i in range(last + 1)} <= recorded.keys()

    rerun = run_target(settings, _users(2000), tmp_path=tmp_path)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.summary["total"]["unchanged"] >= last + 1
    assert len(sandbox.profiles("users")) == 2000
    assert len(ledger_hashes(own_postgres.url, scope, range(2000))) == 2000


def test_a_stop_ends_the_wait_for_a_lost_server_at_once(own_postgres, caplog):
    """The ledger's reconnect is the retry policy's: its pauses are waited on the run's stop,
    so a stop ends the wait for a server that is gone at once, long before the policy would
    give up, with the ledger's own sentence and no password."""
    clock = SimulatedClock()  # pauses in simulated time: none passes while this thread works
    stop = threading.Event()
    ledger = open_ledger(own_postgres.url)
    ledger.retry = RetryPolicy(clock=clock)
    ledger.stop = stop
    try:
        ledger.accepted_events("scope", "events", ["k-1"])
        own_postgres.stop()
        outcome: list[BaseException] = []

        def look_up() -> None:
            try:
                ledger.accepted_events("scope", "events", ["k-2"])
            except LedgerUnavailable as exc:
                outcome.append(exc)

        thread = threading.Thread(target=look_up, daemon=True)
        thread.start()
        eventually(lambda: "retrying in" in caplog.text, timeout=10, what="a reconnect pause")
        stop.set()
        thread.join(10)
    finally:
        stop.set()
        ledger.close()

    assert len(outcome) == 1
    assert "the run stopped before it was tried again" in str(outcome[0])
    assert "rerun from the last STATE" in str(outcome[0])
    assert clock.now() < RetryPolicy().reconnect_max_time  # the stop ended it, not the time
    assert_no_secret(str(outcome[0]) + caplog.text, PASSWORD)


# Configuration errors, before any input is read


def test_a_wrong_password_is_a_configuration_error_that_never_shows_it(
    sandbox,
    config,
    tmp_path,
    postgres,
):
    wrong = "Wr0ng-pg-Secret-77aa"
    config.update(skip_unchanged=True, state_db=postgres.url_with(password=wrong))

    run = run_target(config, _users(10), tmp_path=tmp_path, env=DEBUG)

    assert run.returncode == 2, run.stderr[-2000:]
    assert f"PostgreSQL at 127.0.0.1:{postgres.port} refused the credentials" in run.stderr
    assert " DEBUG " in run.stderr or "DEBUG" in run.stderr  # the run did log at DEBUG
    assert_no_secret(run.stdout + run.stderr, wrong)
    assert sandbox.stats()["requests"] == 0


def test_a_run_at_debug_never_shows_the_password(sandbox, config, tmp_path, state_db):
    config.update(skip_unchanged=True, state_db=state_db)

    run = run_target(config, _users(300), tmp_path=tmp_path, env=DEBUG)

    assert run.returncode == 0, run.stderr[-2000:]
    assert "DEBUG" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)


def test_state_db_from_the_environment_as_meltano_sets_it(sandbox, config, tmp_path, state_db):
    env = {
        **DEBUG,
        "TARGET_USERPILOT_STATE_DB": state_db,
        "TARGET_USERPILOT_SKIP_UNCHANGED": "true",
    }
    first = run_target(config, _users(200), tmp_path=tmp_path, env=env, args=["--config", "ENV"])
    assert first.returncode == 0, first.stderr[-2000:]

    rerun = run_target(config, _users(200), tmp_path=tmp_path, env=env, args=["--config", "ENV"])

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.summary["total"]["unchanged"] == 200
    assert sandbox.stats()["rows_received"] == 200
    assert not list(tmp_path.glob(".target-userpilot"))  # no SQLite file beside it
    assert_no_secret(first.stdout + first.stderr + rerun.stdout + rerun.stderr, PASSWORD)


def test_a_missing_driver_names_the_extra_and_creates_no_folder(
    sandbox, config, tmp_path, postgres
):
    # psycopg2 is not installed: a real missing driver, for a URL that asks for it.
    config.update(skip_unchanged=True, state_db=postgres.url_with(scheme="postgresql+psycopg2"))

    run = run_target(config, _users(10), tmp_path=tmp_path)

    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'target-userpilot[postgres]'" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)
    assert not list(tmp_path.glob("postgresql*"))  # never taken as a file path
    assert sandbox.stats()["requests"] == 0


def test_psycopg_not_installed_names_the_extra(sandbox, config, tmp_path, postgres):
    # The extra not installed: a psycopg that cannot be imported shadows the real one.
    fake = tmp_path / "no-psycopg" / "psycopg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\")\n")
    config.update(skip_unchanged=True, state_db=postgres.url)
    path = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))

    run = run_target(config, _users(10), tmp_path=tmp_path, env={"PYTHONPATH": path})

    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'target-userpilot[postgres]'" in run.stderr
    assert_no_secret(run.stdout + run.stderr, PASSWORD)
    assert sandbox.stats()["requests"] == 0


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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
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


def _run_on(config: dict, singer: bytes, tmp_path: Path) -> TargetRun:
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


def test_tap_postgres_output_lands_value_by_value(tap_postgres, postgres, tmp_path, state_db):
    postgres.psql(f"DROP SCHEMA IF EXISTS {TAP_SCHEMA} CASCADE;" + TAP_TABLES)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, keep_uploads=True) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "object_mapping": {f"{TAP_SCHEMA}-crm_companies": {"object": "companies"}},
            "skip_unchanged": True,
            "state_db": state_db,
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
    tap_postgres, postgres, tmp_path, state_db
):
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
            "state_db": state_db,
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
