"""events_api import: events reach Userpilot's Import API with the time they happened, once each.

Every test runs the real target against the sandbox over loopback HTTP and checks what the
sandbox's completed import jobs brought in: which events, how many times, with which
``inserted_at``, and in what order relative to the users' bulk jobs.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from target_userpilot.errors import ConfigurationError, InvalidRecord
from target_userpilot.records.events import to_event
from target_userpilot.records.imports import event_time, to_import_record
from target_userpilot.records.routing import route_for
from target_userpilot.sandbox import Sandbox
from target_userpilot.settings import Settings
from target_userpilot.userpilot.client import UserpilotClient

from support.events import (
    IMPORT_EVENT_SCHEMA,
    IMPORT_MAPPING,
    import_config,
    import_event,
    import_events_schema,
    imported_ids,
)
from support.messages import API_KEY, COMPANY_SCHEMA, USER_SCHEMA, record, schema, state, user
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget
from support.waiting import eventually


def utc(i: int) -> str:
    day = i % 28 + 1
    return f"2023-03-{day:02d}T08:{i % 60:02d}:00Z"


def test_events_land_with_their_source_time_once_after_users_and_companies(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = no_track_sandbox
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        schema("companies", COMPANY_SCHEMA, ["company_id"]),
        import_events_schema(),
    ]
    for part in range(2):
        users = range(part * 60, part * 60 + 60)
        messages += [record("companies", {"company_id": f"c-{i}", "name": f"C{i}"}) for i in users]
        messages += [record("users", user(i)) for i in users]
        messages += [record("events", import_event(i, i)) for i in users]
        messages.append(state({"part": part}))

    run = run_target(
        import_config(sandbox, tmp_path, batch_size_rows=50), messages, tmp_path=tmp_path
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(120)})
    imported = sandbox.imported_events()
    first = next(e for e in imported if e["metadata"]["event_id"] == "e-7")
    assert first == {
        "event_type": "track",
        "user_id": "7",
        "event_name": "invoice_paid",
        "source": "backend-http",
        "inserted_at": utc(7),
        "metadata": {"event_id": "e-7", "amount": 7.5},
        "imported_at": first["imported_at"],
        "job_id": first["job_id"],
    }
    assert all(e["inserted_at"] == utc(int(e["user_id"])) for e in imported)
    assert len(sandbox.profiles("companies")) == 120
    # No import job started before the users job holding its events' users had completed.
    jobs = sorted(sandbox.jobs(), key=lambda j: j["start_time"])
    users_done = 0
    for job in jobs:
        if job["type"] == "users_bulk_identify":
            users_done += job["total_rows"]
        elif job["type"] == "events_import":
            assert job["status"] == "completed"
            ids = [int(e["user_id"]) for e in imported if e["job_id"] == job["job_id"]]
            assert max(ids) < users_done, "an events file went before its users"
    assert sandbox.stats()["conflicts_own"] == 0
    assert sandbox.stats()["track_requests"] == 0
    total = run.summary["total"]
    assert (total["events_sent"], total["events_skipped"], total["rejected"]) == (120, 0, 0)
    assert run.states[-1] == {"part": 1}


def test_a_full_events_file_waits_for_the_open_users_batch_before_it(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = no_track_sandbox
    # Ten users (an open batch, far from full and not yet due), then fifty of their events:
    # the events file is full first, yet their users must be in Userpilot before it goes.
    messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
    messages += [record("users", user(i)) for i in range(10)]
    messages += [record("events", import_event(i, i % 10)) for i in range(50)]
    config = import_config(sandbox, tmp_path, batch_size_rows=50, batch_wait_seconds=30)

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    kinds = [j["type"] for j in sorted(sandbox.jobs(), key=lambda j: j["start_time"])]
    assert kinds == ["users_bulk_identify", "events_import"]
    assert len(sandbox.imported_events()) == 50


def test_an_events_stream_before_the_users_stream_is_imported_after_the_users_job(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    """tap-csv sends files in the order configured: the events file may come first. Its
    users' job must complete before the import goes up."""
    sandbox = no_track_sandbox
    messages = [import_events_schema(), schema("users", USER_SCHEMA, ["id"])]
    messages += [record("events", import_event(i, i % 5)) for i in range(20)]
    messages += [record("users", user(i)) for i in range(5)]
    messages.append(state({"done": True}))
    config = import_config(sandbox, tmp_path, batch_wait_seconds=30)  # both go at the end of input

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    uploads = [r for r in sandbox.request_log() if r["endpoint"] in ("bulk", "imports")]
    assert [r["endpoint"] for r in uploads] == ["bulk", "imports"]
    (users_job,) = [j for j in sandbox.stats()["job_timings"] if j["rows"] == 5]
    assert uploads[1]["at"] >= users_job["completed_at"]
    assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(20)})
    assert run.states == [{"done": True}]


def test_a_rerun_skips_events_already_imported(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = no_track_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
    messages += [record("users", user(i)) for i in range(20)]
    messages += [record("events", import_event(i, i)) for i in range(20)]
    messages.append(record("events", import_event(3, 3)))  # the same event again, in the same run

    first = run_target(import_config(sandbox, tmp_path), messages, tmp_path=tmp_path)
    second = run_target(import_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert first.returncode == second.returncode == 0, second.stderr[-3000:]
    assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(20)})
    assert first.summary["total"]["events_sent"] == 20
    assert first.summary["total"]["events_skipped"] == 1
    assert second.summary["total"]["events_sent"] == 0
    assert second.summary["total"]["events_skipped"] == 21


def test_a_missing_or_unparsable_time_rejects_the_event_never_the_run_time(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = no_track_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
    messages += [record("users", user(i)) for i in range(4)]
    messages += [
        record("events", import_event(0, 0)),
        record("events", import_event(1, 1, paid_at=None)),
        record("events", import_event(2, 2, paid_at="last tuesday")),
        record("events", import_event(3, 3, paid_at="2023-03-04 05:06:07")),  # no offset: UTC
    ]
    rejects = tmp_path / "rejects.ndjson"

    run = run_target(
        import_config(sandbox, tmp_path, rejects_path=str(rejects), validate_records=False),
        messages,
        tmp_path=tmp_path,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    times = {e["metadata"]["event_id"]: e["inserted_at"] for e in sandbox.imported_events()}
    assert times == {"e-0": utc(0), "e-3": "2023-03-04T05:06:07Z"}
    reasons = [json.loads(line)["reason"] for line in rejects.read_text().splitlines()]
    assert len(reasons) == 2
    assert "'paid_at' is missing" in reasons[0]
    assert "not an ISO 8601 date-time" in reasons[1]


def test_a_time_before_the_year_1000_is_imported_as_an_iso_date_with_four_year_digits(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    # "0001-01-01" is a warehouse's usual stand-in for "no date": it must still be ISO 8601.
    sandbox = no_track_sandbox
    messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
    messages += [record("users", user(i)) for i in range(2)]
    messages += [
        record("events", import_event(0, 0, paid_at="0001-01-01T00:00:00Z")),
        record("events", import_event(1, 1, paid_at="0999-12-31")),
    ]

    run = run_target(import_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    times = {e["metadata"]["event_id"]: e["inserted_at"] for e in sandbox.imported_events()}
    assert times == {"e-0": "0001-01-01T00:00:00Z", "e-1": "0999-12-31T00:00:00Z"}


def test_page_views_carry_hostname_and_pathname(
    no_track_sandbox: Sandbox, tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox = no_track_sandbox
    props = {
        "view_id": {"type": "integer"},
        "user_id": {"type": "string"},
        "host": {"type": "string"},
        "path": {"type": "string"},
        "viewed_at": {"type": "string"},
        "browser": {"type": "string"},
        "referrer": {"type": "string"},
    }
    mapping = {
        "views": {
            "object": "events",
            "event_type": "page_view",
            "hostname_property": "host",
            "pathname_property": "path",
            "event_time_property": "viewed_at",
            "source": "web-client",
        }
    }
    view = {
        "view_id": 1,
        "user_id": "u-1",
        "host": "app.example.com",
        "path": "/billing",
        "viewed_at": "2022-12-31T23:00:00-01:00",
        "browser": "Firefox",
        "referrer": "https://example.com/",
    }
    messages = [
        schema("users", USER_SCHEMA, ["id"]),
        record("users", user(1, id="u-1")),
        schema("views", props, ["view_id"]),
        record("views", view),
    ]

    run = run_target(
        import_config(sandbox, tmp_path, object_mapping=mapping), messages, tmp_path=tmp_path
    )

    assert run.returncode == 0, run.stderr[-3000:]
    (imported,) = sandbox.imported_events()
    assert {k: v for k, v in imported.items() if k not in ("imported_at", "job_id")} == {
        "event_type": "page_view",
        "user_id": "u-1",
        "hostname": "app.example.com",
        "pathname": "/billing",
        "source": "web-client",
        "inserted_at": "2023-01-01T00:00:00Z",
        "browser": "Firefox",
    }
    assert "'referrer'" in run.stderr and "'view_id'" in run.stderr  # not carried: named


def test_page_views_in_track_mode_are_a_configuration_error(
    tmp_path: Path, run_target: RunTarget
) -> None:
    config = {
        "dry_run": True,
        "output_dir": str(tmp_path / "out"),
        "object_mapping": {"views": {"object": "events", "event_type": "page_view"}},
    }

    run = run_target(config, [schema("views", {"user_id": {"type": "string"}})], tmp_path=tmp_path)

    assert run.returncode == 2
    assert "only the Import API can send" in run.stderr
    assert "events_api" in run.stderr


def test_dry_run_writes_the_import_files(tmp_path: Path, run_target: RunTarget) -> None:
    out = tmp_path / "out"
    messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
    messages += [record("users", user(i)) for i in range(3)]
    messages += [record("events", import_event(i, i)) for i in range(3)]
    config = {
        "dry_run": True,
        "output_dir": str(out),
        "events_api": "import",
        "object_mapping": IMPORT_MAPPING,
        "state_db": str(tmp_path / "l.db"),
    }

    run = run_target(config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["events-import-1.ndjson", "users-1.ndjson"]
    lines = (out / "events-import-1.ndjson").read_text().splitlines()
    assert json.loads(lines[0]) == {
        "event_type": "track",
        "user_id": "0",
        "event_name": "invoice_paid",
        "source": "backend-http",
        "inserted_at": utc(0),
        "metadata": {"event_id": "e-0", "amount": 0.5},
    }
    assert run.summary["total"]["events_sent"] == 3


def test_a_running_bulk_job_is_waited_out_before_an_import(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        # Another client's bulk job holds the account when our first upload, the import, comes.
        sandbox.hold_foreign_job(1.5, at_upload=2)
        messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
        messages += [record("users", user(i)) for i in range(5)]
        messages += [record("events", import_event(i, i)) for i in range(5)]

        run = run_target(import_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(5)})
        assert sandbox.stats()["conflicts_foreign"] >= 1
        assert "HTTP 409" in run.stderr


def test_413_splits_an_import_file(tmp_path: Path, run_target: RunTarget) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.set_faults(max_rows=4)
        messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
        messages += [record("users", user(i)) for i in range(3)]
        messages += [record("events", import_event(i, i % 3)) for i in range(10)]

        run = run_target(import_config(sandbox, tmp_path), messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(10)})
        imports = [j for j in sandbox.jobs() if j["type"] == "events_import"]
        assert len(imports) >= 3
        assert sandbox.stats()["rejected"].get("413", 0) >= 1


def test_a_failed_import_job_is_exit_4_and_its_events_go_again_on_rerun(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
        messages += [record("users", user(i)) for i in range(5)]
        messages.append(state({"users": 5}))
        messages += [record("events", import_event(i, i)) for i in range(5)]
        messages.append(state({"events": 5}))
        config = import_config(sandbox, tmp_path)
        # The users job completes; the import job (the second job) fails.
        first_users = run_target(config, messages[:7], tmp_path=tmp_path)
        assert first_users.returncode == 0
        sandbox.set_faults(fail_jobs=1)

        failed = run_target(config, messages, tmp_path=tmp_path)

        assert failed.returncode == 4, failed.stderr[-3000:]
        assert "failed" in failed.stderr
        assert sandbox.imported_events() == []
        assert {"events": 5} not in failed.states

        rerun = run_target(config, messages, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(5)})
        assert rerun.states[-1] == {"events": 5}


@pytest.mark.parametrize("status_at", ["imports", "nowhere"])
def test_an_import_job_is_followed_wherever_userpilot_shows_it(
    tmp_path: Path, status_at: str, run_target: RunTarget
) -> None:
    with Sandbox(
        port=0, api_key=API_KEY, rows_per_minute=60_000, import_status_at=status_at
    ) as sandbox:
        messages = [schema("users", USER_SCHEMA, ["id"]), import_events_schema()]
        messages += [record("users", user(i)) for i in range(30)]
        messages += [record("events", import_event(i, i)) for i in range(30)]

        run = run_target(
            import_config(sandbox, tmp_path, batch_size_rows=10), messages, tmp_path=tmp_path
        )

        assert run.returncode == 0, run.stderr[-3000:]
        eventually(lambda: len(sandbox.imported_events()) == 30, what="30 imported events")
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(30)})
        followed = "cannot be followed" not in run.stderr
        assert followed == (status_at == "imports")


# --- Track mode: unchanged, and it says when the time is lost --------------------------------


def test_track_mode_says_once_per_stream_that_old_events_lose_their_time(
    tmp_path: Path, run_target: RunTarget
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        old = {**IMPORT_EVENT_SCHEMA, "timestamp": {"type": "string"}}
        mapping = {"timed": {"object": "events", "event_time_property": "paid_at"}}
        messages = [schema("users", USER_SCHEMA, ["id"]), schema("events", old, ["event_id"])]
        messages += [record("users", user(i)) for i in range(3)]
        messages += [
            record("events", import_event(i, i, timestamp="2020-05-01T00:00:00Z")) for i in range(3)
        ]
        messages += [
            schema("timed", IMPORT_EVENT_SCHEMA, ["event_id"]),
            record("timed", import_event(9, 1)),
        ]
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "object_mapping": mapping,
            "events_per_minute": 6000,
            "state_db": str(tmp_path / "ledger.db"),
        }

        run = run_target(config, messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert len(sandbox.events()) == 4  # sent through /v1/track, as ever
        assert sandbox.imported_events() == []
        sent = next(e for e in sandbox.events() if e["metadata"]["event_id"] == "e-0")
        assert sent["metadata"]["timestamp"] == "2020-05-01T00:00:00Z"  # still metadata
        assert run.stderr.count("happened over an hour ago") == 2  # once per stream
        assert run.stderr.count("sets event_time_property 'paid_at'") == 1
        assert "events_api to 'import'" in run.stderr


def test_track_mode_sends_an_event_dated_before_the_year_1000(
    tmp_path: Path, run_target: RunTarget
) -> None:
    # The warning about old events reads the event's time: year 1 once ended the run there.
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, events_per_minute=0) as sandbox:
        old = {**IMPORT_EVENT_SCHEMA, "timestamp": {"type": "string"}}
        messages = [schema("users", USER_SCHEMA, ["id"]), schema("events", old, ["event_id"])]
        messages += [record("users", user(i)) for i in range(2)]
        messages += [
            record("events", import_event(i, i, timestamp="0001-01-01T00:00:00Z")) for i in range(2)
        ]
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "events_per_minute": 6000,
            "state_db": str(tmp_path / "ledger.db"),
        }

        run = run_target(config, messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        sent = sorted(e["metadata"]["event_id"] for e in sandbox.events())
        assert sent == ["e-0", "e-1"]
        assert run.stderr.count("happened over an hour ago") == 1


# --- Settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"object": "events", "event_type": "click"}, "use 'track' (the default) or 'page_view'"),
        ({"object": "events", "source": "web-client"}, "sets source, which only the Import API"),
        ({"object": "events", "hostname_property": "h"}, "only the Import API can send"),
    ],
)
def test_import_keys_in_track_mode_are_refused_naming_the_stream(
    entry: dict[str, Any], said: str
) -> None:
    with pytest.raises(ConfigurationError, match="object_mapping\\['views'\\]") as caught:
        Settings.from_config({"dry_run": True, "object_mapping": {"views": entry}})
    assert said in str(caught.value)


def test_events_api_import_takes_the_import_keys_and_refuses_other_values() -> None:
    mapping = {
        "views": {
            "object": "events",
            "event_type": "page_view",
            "hostname_property": "host",
            "event_time_property": "at",
            "company_id_property": "account",
            "source": "web-client",
        }
    }
    settings = Settings.from_config(
        {"dry_run": True, "events_api": "import", "object_mapping": mapping}
    )
    assert settings.events_api == "import"
    assert Settings.from_config({"dry_run": True}).events_api == "track"
    with pytest.raises(ConfigurationError, match="events_api must be 'track' or 'import'"):
        Settings.from_config({"dry_run": True, "events_api": "bulk"})
    named = {"views": {"object": "events", "event_type": "page_view", "event_name": "x"}}
    with pytest.raises(ConfigurationError, match="page views, which have no event name"):
        Settings.from_config({"dry_run": True, "events_api": "import", "object_mapping": named})


def test_events_api_from_an_environment_variable(tmp_path: Path, run_target: RunTarget) -> None:
    out = tmp_path / "out"
    messages = [import_events_schema(), record("events", import_event(1, 1))]
    env = {
        "TARGET_USERPILOT_DRY_RUN": "true",
        "TARGET_USERPILOT_OUTPUT_DIR": str(out),
        "TARGET_USERPILOT_OBJECT_MAPPING": json.dumps(IMPORT_MAPPING),
        "TARGET_USERPILOT_EVENTS_API": "import",
    }

    run = run_target({}, messages, tmp_path=tmp_path, env=env, args=["--config", "ENV"])

    assert run.returncode == 0, run.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["events-import-1.ndjson"]


# --- Record to import record (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.250+02:00", "2024-01-02T01:04:05.250000Z"),
        ("2024-01-02 03:04:05", "2024-01-02T03:04:05Z"),
        ("2024-01-02", "2024-01-02T00:00:00Z"),
        ("2024-01-02t03:04:05z", "2024-01-02T03:04:05Z"),
        (datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.timezone.utc), "2024-01-02T03:04:00Z"),
    ],
)
def test_event_time_is_utc_iso_8601(value: str | datetime.datetime, expected: str) -> None:
    assert event_time(value, "at") == expected


@pytest.mark.parametrize("value", [None, "", " ", "yesterday", 1700000000, 1.5, True, [], {}])
def test_an_event_time_that_is_no_date_time_is_invalid(value: object) -> None:
    with pytest.raises(InvalidRecord, match="'at'"):
        event_time(value, "at")


def test_an_import_record_leaves_its_fields_out_of_the_metadata() -> None:
    route = route_for(
        "events",
        ["user_id", "event_name", "occurred", "account", "x"],
        ["x"],
        {"event_time_property": "occurred", "company_id_property": "account"},
        import_events=True,
    )
    rec = {
        "user_id": 4,
        "event_name": "n",
        "occurred": "2020-01-01T00:00:00Z",
        "account": 7,
        "x": 1,
    }

    assert to_import_record(rec, route) == {
        "event_type": "track",
        "user_id": "4",
        "event_name": "n",
        "source": "backend-http",
        "inserted_at": "2020-01-01T00:00:00Z",
        "metadata": {"x": 1},
        "company_id": "7",
    }
    # Track mode keeps today's row: the time and the company stay metadata.
    track = route_for("events", list(rec), ["x"], {"event_time_property": "occurred"})
    assert to_event(rec, track)["metadata"] == {
        "occurred": "2020-01-01T00:00:00Z",
        "account": 7,
        "x": 1,
    }


# --- The sandbox's Import API ---------------------------------------------------------------


def _post_import(sandbox: Sandbox, lines: list[str]) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/v1/imports",
        files={"file": ("e.ndjson", "".join(line + "\n" for line in lines))},
        headers={"Authorization": f"Token {API_KEY}", "Accept": "application/json"},
        timeout=10,
    )


TRACK_LINE = json.dumps(
    {
        "event_type": "track",
        "user_id": "u1",
        "event_name": "n",
        "source": "backend-http",
        "inserted_at": "2021-02-03T04:05:06Z",
        "metadata": {},
    }
)


def test_sandbox_imports_are_jobs_413_over_the_limits_and_a_bad_line_fails_the_job() -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.set_faults(max_rows=2)
        assert _post_import(sandbox, [TRACK_LINE] * 3).status_code == 413
        bad = _post_import(sandbox, [TRACK_LINE, '{"event_type": "track"}'])
        assert bad.status_code == 202
        good = _post_import(sandbox, [TRACK_LINE])
        assert good.status_code == 202
        jobs = {j["job_id"]: j for j in sandbox.jobs()}
        assert jobs[bad.json()["job_id"]]["status"] == "failed"
        assert "line 2: user_id is missing" in jobs[bad.json()["job_id"]]["error"]
        assert jobs[good.json()["job_id"]]["status"] == "completed"
        (imported,) = sandbox.imported_events()
        assert imported["inserted_at"] == "2021-02-03T04:05:06Z"


def test_sandbox_import_and_bulk_jobs_share_the_lane_unless_told_otherwise() -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.hold_foreign_job(30)
        assert _post_import(sandbox, [TRACK_LINE]).status_code == 409
        sandbox.set_import_rules(share_lane=False)
        assert _post_import(sandbox, [TRACK_LINE]).status_code == 202


@pytest.mark.parametrize(
    ("status_at", "in_background_jobs", "at_imports"),
    [("background_jobs", True, 405), ("imports", False, 200), ("nowhere", False, 405)],
)
def test_sandbox_lists_import_jobs_where_their_status_is_served(
    status_at: str, in_background_jobs: bool, at_imports: int
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at=status_at) as sandbox:
        job_id = _post_import(sandbox, [TRACK_LINE]).json()["job_id"]
        auth = {"Authorization": f"Token {API_KEY}"}
        listed = requests.get(f"{sandbox.url}/v1/background_jobs", headers=auth, timeout=10)
        imports = requests.get(f"{sandbox.url}/v1/imports", headers=auth, timeout=10)

        assert (job_id in [j["job_id"] for j in listed.json()]) == in_background_jobs
        assert imports.status_code == at_imports
        if at_imports == 200:
            assert [(j["job_id"], j["filename"]) for j in imports.json()] == [(job_id, "e.ndjson")]


def test_the_client_follows_an_import_job_at_v1_imports_when_background_jobs_says_404(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text(TRACK_LINE + "\n")
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at="imports") as sb:
        client = UserpilotClient(sb.url, API_KEY)
        try:
            job = client.upload("events", str(path), "events-1.ndjson")
            assert client.job_status(job["job_id"])["status"] == "completed"
            polled = [r["path"] for r in sb.request_log() if r["method"] == "GET"]
            assert polled[0].startswith("/v1/background_jobs/")
            assert polled[1].startswith("/v1/imports/")
            # Learned: the next import job is polled where the last one was found.
            second = client.upload("events", str(path), "events-2.ndjson")
            client.job_status(second["job_id"])
            last = [r["path"] for r in sb.request_log() if r["method"] == "GET"][-1]
            assert last.startswith("/v1/imports/")
        finally:
            client.close()


# --- Through crashes and lost answers: every event in Userpilot once ------------------------


def _events_only(n: int) -> list[dict[str, Any]]:
    """``n`` events of users loaded before (the Import API needs no user in this run)."""
    return [
        import_events_schema(),
        *(record("events", import_event(i, i)) for i in range(n)),
        state({"events": n}),
    ]


@BOTH_LEDGERS
@pytest.mark.parametrize("status_at", ["background_jobs", "imports", "nowhere"])
def test_an_import_whose_answer_was_lost_is_adopted_or_unconfirmed_never_sent_twice(
    tmp_path: Path, state_db: str, status_at: str, run_target: RunTarget
) -> None:
    messages = _events_only(30)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at=status_at) as sandbox:
        # Every upload takes effect, and its answer comes after the target stopped waiting.
        sandbox.set_faults(slow_rate=1.0, slow_seconds=1.0, only="upload")
        config = import_config(
            sandbox, tmp_path, state_db=state_db, batch_size_rows=10, request_timeout_seconds=0.5
        )

        run = run_target(config, messages, tmp_path=tmp_path)

        assert run.returncode == 0, run.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(30)})
        assert sandbox.stats()["upload_attempts"] == 3
        assert run.states[-1] == {"events": 30}
        total = run.summary["total"]
        if status_at == "nowhere":
            assert (total["events_sent"], total["events_unconfirmed"]) == (0, 30)
            assert run.stderr.count("are not sent again, by this run or a rerun") == 3
        else:
            assert (total["events_sent"], total["events_unconfirmed"]) == (30, 0)
            assert run.stderr.count("Found import job") == 3

        sandbox.set_faults()
        rerun = run_target(config, messages, tmp_path=tmp_path)

        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(30)})
        assert rerun.summary["total"]["events_skipped"] == 30
        assert sandbox.stats()["upload_attempts"] == 3


def test_an_import_userpilot_refused_is_sent_by_the_rerun(
    tmp_path: Path, run_target: RunTarget
) -> None:
    messages = _events_only(10)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.set_faults(refuse_uploads=422)
        config = import_config(sandbox, tmp_path)

        refused = run_target(config, messages, tmp_path=tmp_path)
        sandbox.set_faults()
        rerun = run_target(config, messages, tmp_path=tmp_path)

        assert refused.returncode == 8, refused.stderr[-3000:]
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert imported_ids(sandbox) == Counter({f"e-{i}": 1 for i in range(10)})
        assert rerun.summary["total"]["events_sent"] == 10
        assert "The events file" not in rerun.stderr  # nothing was left to settle
