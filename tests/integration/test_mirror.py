"""Mirror deletes: a full-table version deletes the profiles its earlier versions had and it lacks.

The real target against the sandbox, on a SQLite ledger and on the real PostgreSQL one
(``tests/support/pg.py``). A version is Stitch's convention unless a test says otherwise:
ACTIVATE_VERSION before the copy, RECORDs stamped with the version, ACTIVATE_VERSION again after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.memory.mirror import filtered_aliases
from target_userpilot.sandbox import Sandbox

from support.messages import (
    MIRRORED_STREAM,
    USER_SCHEMA,
    activate_version,
    full_table_copy,
    record,
    schema,
    state,
    user,
)
from support.pg import BOTH_LEDGERS
from support.runner import RunTarget


def _deleted(sandbox: Sandbox) -> list[str]:
    return sandbox.deletions("users")


@BOTH_LEDGERS
def test_a_new_version_deletes_exactly_the_ids_it_lacks(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    first = run_target(mirror_config, full_table_copy(1, range(100)), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 100
    assert _deleted(sandbox) == []

    gone = {7, 23, 50, 51, 99}
    second = run_target(
        mirror_config,
        full_table_copy(2, [i for i in range(100) if i not in gone]),
        tmp_path=tmp_path,
    )

    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == sorted(str(i) for i in gone)
    assert second.summary["streams"][MIRRORED_STREAM]["deleted"] == 5
    assert second.states[-1] == {"bookmarks": {MIRRORED_STREAM: {"version": 2}}}
    assert "ended without 5 of the 100 users" in second.stderr

    # The same copy again deletes nothing more: the deleted ids left the ledger on 202.
    third = run_target(
        mirror_config,
        full_table_copy(3, [i for i in range(100) if i not in gone]),
        tmp_path=tmp_path,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(_deleted(sandbox)) == 5


@BOTH_LEDGERS
def test_a_version_that_would_delete_most_profiles_stops_before_deleting_any(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(100)), tmp_path=tmp_path).returncode == 0
    )

    refused = run_target(mirror_config, full_table_copy(2, range(10)), tmp_path=tmp_path)

    assert refused.returncode == 14, refused.stderr[-3000:]
    assert _deleted(sandbox) == []
    assert "ended without 90 of the 100 users" in refused.stderr
    assert "rerun once with mirror_delete_max_percent set to 90" in refused.stderr
    assert {"bookmarks": {MIRRORED_STREAM: {"version": 2}}} not in refused.states

    # Raised for one run, as the message says: the 90 go.
    allowed = {**mirror_config, "mirror_delete_max_percent": 90}
    rerun = run_target(allowed, full_table_copy(2, range(10)), tmp_path=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(_deleted(sandbox), key=int) == [str(i) for i in range(10, 100)]


def test_the_floor_lets_a_small_table_lose_a_few_rows(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(8)), tmp_path=tmp_path).returncode == 0
    )

    run = run_target(
        mirror_config, full_table_copy(2, range(4)), tmp_path=tmp_path
    )  # half, 4 <= floor 5

    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == ["4", "5", "6", "7"]


def test_a_version_cut_short_deletes_nothing_and_a_resumed_one_deletes_only_the_missing(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(100)), tmp_path=tmp_path).returncode == 0
    )

    # The tap stopped mid-copy: no closing ACTIVATE_VERSION, the input simply ended.
    cut = run_target(mirror_config, full_table_copy(2, range(50), closing=False), tmp_path=tmp_path)

    assert cut.returncode == 0, cut.stderr[-3000:]
    assert _deleted(sandbox) == []
    assert "version 2 was not closed before the end of input" in cut.stderr

    # A Stitch tap resumes the same version where it stopped, then closes it.
    resumed = run_target(
        mirror_config, full_table_copy(2, range(50, 95), opening=False), tmp_path=tmp_path
    )

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_deleted(sandbox), key=int) == ["95", "96", "97", "98", "99"]


def test_a_rejected_record_of_the_version_does_not_delete_its_profile(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(10)), tmp_path=tmp_path).returncode == 0
    )
    messages = full_table_copy(2, range(10))
    messages[5]["record"]["email"] = 5  # off the schema: rejected, but the row is in the source

    run = run_target(mirror_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary["total"]["rejected"] == 1
    assert _deleted(sandbox) == []


def test_a_record_with_a_doubtful_deletion_mark_does_not_delete_its_profile(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """A mark that is not a date-time is neither a deletion nor an upsert: the record is
    rejected, and its profile, which the source may well still have, stays in the version."""
    assert (
        run_target(mirror_config, full_table_copy(1, range(10)), tmp_path=tmp_path).returncode == 0
    )
    messages = full_table_copy(2, range(10))
    messages[5]["record"]["_sdc_deleted_at"] = "0"  # a flag column mapped onto the mark

    run = run_target(mirror_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary["total"]["rejected"] == 1
    assert _deleted(sandbox) == []


@BOTH_LEDGERS
def test_a_record_too_deep_to_read_keeps_its_profile_in_the_version(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    """Rejected for its nesting, but the source still has the row: it must not be erased. Its
    profile is found as its row's would be, through the stream maps (here they make the id)."""
    mirror_config["stream_maps"] = {MIRRORED_STREAM: {"user_id": "'u' + str(id)"}}
    first = run_target(mirror_config, full_table_copy(1, range(10)), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert set(sandbox.profiles("users")) == {f"u{i}" for i in range(10)}
    messages: list[dict[str, Any] | str] = list(full_table_copy(2, range(10)))
    fourth = messages[6]
    assert isinstance(fourth, dict) and fourth["record"]["id"] == 4
    deep = "[" * 3000 + "1" + "]" * 3000
    messages[6] = json.dumps({**fourth, "record": {**fourth["record"], "deep": "D"}}).replace(
        '"D"', deep
    )

    run = run_target(mirror_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.summary["total"]["rejected"] == 1
    assert "it is nested 3,001 levels deep (in 'deep')" in run.stderr
    assert _deleted(sandbox) == []


def test_streams_without_versions_delete_nothing(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    plain = [schema(MIRRORED_STREAM, USER_SCHEMA, ["id"])]
    first = run_target(
        mirror_config,
        [*plain, *(record(MIRRORED_STREAM, user(i)) for i in range(20))],
        tmp_path=tmp_path,
    )
    second = run_target(
        mirror_config, [*plain, record(MIRRORED_STREAM, user(1))], tmp_path=tmp_path
    )

    assert first.returncode == second.returncode == 0
    assert _deleted(sandbox) == []
    assert "full-table version" not in second.stderr


def test_without_hard_delete_a_version_changes_nothing(
    sandbox: Sandbox, config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert run_target(config, full_table_copy(1, range(20)), tmp_path=tmp_path).returncode == 0

    run = run_target(config, full_table_copy(2, range(10)), tmp_path=tmp_path)

    assert run.returncode == 0
    assert _deleted(sandbox) == []
    assert len(sandbox.profiles("users")) == 20
    assert len([line for line in run.stderr.splitlines() if "sent ACTIVATE_VERSION" in line]) == 1


@BOTH_LEDGERS
def test_a_dry_run_lists_the_deletions_without_sending(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    out = tmp_path / "out"
    dry = {
        "dry_run": True,
        "output_dir": str(out),
        "hard_delete": True,
        "state_db": mirror_config["state_db"],
    }
    assert run_target(dry, full_table_copy(1, range(100)), tmp_path=tmp_path).returncode == 0

    # 90 of 100 is past the guard: a dry run still lists them all, and says a run would stop.
    run = run_target(dry, full_table_copy(2, range(90, 100)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    listed = [json.loads(path.read_text())["users"] for path in sorted(out.glob("users-delete-*"))]
    assert sorted((i for ids in listed for i in ids), key=int) == [str(i) for i in range(90)]
    assert "a real run would stop here, before deleting 90 of 100 users" in run.stderr
    assert sandbox.stats()["requests"] == 0


# Taps built on the Meltano SDK send ACTIVATE_VERSION only before the copy.


def _sdk_copy(
    version: int, ids: Iterable[int], *, final_state: bool = True
) -> list[dict[str, Any]]:
    return full_table_copy(version, ids, closing=False, final_state=final_state)


def test_sdk_taps_delete_only_with_the_end_of_input_setting(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert run_target(mirror_config, _sdk_copy(1, range(20)), tmp_path=tmp_path).returncode == 0
    without = run_target(mirror_config, _sdk_copy(2, range(19)), tmp_path=tmp_path)
    assert without.returncode == 0
    assert _deleted(sandbox) == []
    assert "see mirror_delete_on_end_of_input" in without.stderr

    at_end = {**mirror_config, "mirror_delete_on_end_of_input": True}
    # A copy with no STATE after its last record may have failed mid-copy: nothing goes.
    cut = run_target(at_end, _sdk_copy(3, range(18), final_state=False), tmp_path=tmp_path)
    assert cut.returncode == 0
    assert _deleted(sandbox) == []

    done = run_target(at_end, _sdk_copy(4, range(18)), tmp_path=tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == ["18", "19"]
    # The INFO lines say what ends a version in each run: no closing message in these.
    assert "once the version ends (its closing ACTIVATE_VERSION)." in without.stderr
    assert (
        "once the version ends (its closing ACTIVATE_VERSION, or a clean end of input with a "
        "STATE after its last record (mirror_delete_on_end_of_input))." in done.stderr
    )
    assert "full-table version 4 ended at the end of input without 2 of the" in done.stderr


def test_only_ids_loaded_from_the_stream_are_candidates(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    other = "public-signups"
    first = [
        *full_table_copy(1, range(10)),
        schema(other, USER_SCHEMA, ["id"]),
        *(record(other, user(i)) for i in range(100, 105)),
    ]
    assert run_target(mirror_config, first, tmp_path=tmp_path).returncode == 0

    run = run_target(mirror_config, full_table_copy(2, range(9)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _deleted(sandbox) == ["9"]  # never the ids of the other stream


# The taps' real patterns (issue 23): a resumed copy, the opening sent twice, an empty table.


@BOTH_LEDGERS
def test_a_resumed_copy_keeps_the_rows_it_had_not_sent_again(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1000, range(100)), tmp_path=tmp_path).returncode
        == 0
    )
    # tap-mysql's first copy of version 2000 dies after u94: no closing message.
    cut = full_table_copy(2000, range(95), closing=False, final_state=False)
    cut.insert(
        50, state({"bookmarks": {MIRRORED_STREAM: {"version": 2000, "last_pk_fetched": 47}}})
    )
    assert run_target(mirror_config, cut, tmp_path=tmp_path).returncode == 0

    # It resumes the copy: the opening message again, with the same version, then the rest (u99
    # is gone from the source meanwhile), then the closing message.
    resumed = run_target(mirror_config, full_table_copy(2000, range(95, 99)), tmp_path=tmp_path)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _deleted(sandbox) == ["99"]
    assert "resumes full-table version 2000, begun in an earlier run" in resumed.stderr
    assert all(str(i) in sandbox.profiles("users") for i in range(95, 99))


def test_an_opening_sent_again_before_any_record_does_not_end_the_version(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(10)), tmp_path=tmp_path).returncode == 0
    )
    messages = full_table_copy(2, range(9))
    messages.insert(
        1, activate_version(2)
    )  # the opening twice, then the copy and its closing message

    run = run_target(mirror_config, messages, tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _deleted(sandbox) == ["9"]


def test_an_empty_copy_ends_its_version_once_the_input_ends_after_a_state(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(4)), tmp_path=tmp_path).returncode == 0
    )
    # Opening and closing, no record: an empty table, or the opening sent twice by a tap that
    # then died. Without a STATE after it, nothing tells them apart: nothing goes.
    unsure = run_target(mirror_config, full_table_copy(2, [], final_state=False), tmp_path=tmp_path)
    assert unsure.returncode == 0, unsure.stderr[-3000:]
    assert _deleted(sandbox) == []
    assert "came twice with no record between, and no STATE after it" in unsure.stderr

    empty = run_target(mirror_config, full_table_copy(3, []), tmp_path=tmp_path)

    # The table is empty: every profile goes, within the guard (4 are under its floor of 5).
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == ["0", "1", "2", "3"]


def test_an_empty_copy_past_the_guard_stops_the_run(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(10)), tmp_path=tmp_path).returncode == 0
    )

    run = run_target(mirror_config, full_table_copy(2, []), tmp_path=tmp_path)

    assert run.returncode == 14, run.stderr[-3000:]
    assert "ended without 10 of the 10 users" in run.stderr
    assert _deleted(sandbox) == []


def test_a_child_streams_opening_per_parent_does_not_end_its_version(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    # A Meltano SDK child stream: SCHEMA and the opening (same version) before each parent's part.
    def child_copy(version: int, parts: list[range]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for part in parts:
            messages += full_table_copy(version, part, closing=False, final_state=False)
            messages.append(
                state({"bookmarks": {MIRRORED_STREAM: {"partitions": [len(messages)]}}})
            )
        return messages

    at_end = {**mirror_config, "mirror_delete_on_end_of_input": True}
    first = run_target(at_end, child_copy(1, [range(10), range(10, 20)]), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    run = run_target(at_end, child_copy(2, [range(10), range(10, 19)]), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _deleted(sandbox) == ["19"]


# Two streams loading the same profiles


CRM, APP = "public-crm_users", "public-app_users"


@BOTH_LEDGERS
def test_a_profile_another_stream_still_holds_is_not_deleted(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    both = [*full_table_copy(1, range(20), stream=CRM), *full_table_copy(1, range(20), stream=APP)]
    assert run_target(mirror_config, both, tmp_path=tmp_path).returncode == 0

    # crm lost 0-9 (half its profiles, past the guard), app still has them: no candidates.
    run = run_target(
        mirror_config,
        [
            *full_table_copy(2, range(10, 20), stream=CRM),
            *full_table_copy(2, range(20), stream=APP),
        ],
        tmp_path=tmp_path,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert _deleted(sandbox) == []
    assert "10 more it lacks stay: another stream still loads them" in run.stderr

    # Now app loses 0 and 1 as well: no stream holds them any more.
    last = run_target(
        mirror_config,
        [
            *full_table_copy(3, range(10, 20), stream=CRM),
            *full_table_copy(3, range(2, 20), stream=APP),
        ],
        tmp_path=tmp_path,
    )

    assert last.returncode == 0, last.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == ["0", "1"]


def test_a_stream_without_versions_holds_the_profiles_it_loaded(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    incremental = [schema(APP, USER_SCHEMA, ["id"]), record(APP, user(8)), record(APP, user(9))]
    first = run_target(
        mirror_config, [*full_table_copy(1, range(10)), *incremental], tmp_path=tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]

    run = run_target(mirror_config, full_table_copy(2, range(8)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert _deleted(sandbox) == []


# Stream maps that filter


def _filter_config(
    mirror_config: dict[str, Any], maps: dict[str, Any], **settings: Any
) -> dict[str, Any]:
    return {**mirror_config, "stream_maps": maps, **settings}


@BOTH_LEDGERS
def test_a_stream_map_filter_added_between_syncs_deletes_nothing_unless_allowed(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    assert (
        run_target(mirror_config, full_table_copy(1, range(10)), tmp_path=tmp_path).returncode == 0
    )
    maps = {MIRRORED_STREAM: {"__filter__": "id != 3 and id != 4"}}

    filtered = run_target(
        _filter_config(mirror_config, maps), full_table_copy(2, range(10)), tmp_path=tmp_path
    )

    assert filtered.returncode == 0, filtered.stderr[-3000:]
    assert _deleted(sandbox) == []
    said = [line for line in filtered.stderr.splitlines() if "__filter__ in stream_maps" in line]
    assert len(said) == 1 and "WARNING" in said[0]
    assert MIRRORED_STREAM in said[0] and "mirror_delete_filtered_streams" in said[0]

    allowed = _filter_config(mirror_config, maps, mirror_delete_filtered_streams=True)
    run = run_target(allowed, full_table_copy(3, range(10)), tmp_path=tmp_path)

    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == ["3", "4"]


def test_an_alias_a_stream_map_filters_gets_no_mirror_deletes(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    alias = "active_users"
    maps: dict[str, Any] = {MIRRORED_STREAM: None, alias: {"__source__": MIRRORED_STREAM}}
    first = run_target(
        _filter_config(mirror_config, maps), full_table_copy(1, range(10)), tmp_path=tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(sandbox.profiles("users")) == 10

    maps[alias]["__filter__"] = "id != 3"
    run = run_target(
        _filter_config(mirror_config, maps), full_table_copy(2, range(10)), tmp_path=tmp_path
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert _deleted(sandbox) == []
    assert f"Stream '{alias}' has a __filter__ in stream_maps" in run.stderr

    # Allowed, here from the environment, as Meltano passes settings.
    allowed = run_target(
        _filter_config(mirror_config, maps),
        full_table_copy(3, range(10)),
        tmp_path=tmp_path,
        env={"TARGET_USERPILOT_MIRROR_DELETE_FILTERED_STREAMS": "true"},
        args=["--config", "ENV"],
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert _deleted(sandbox) == ["3"]


@pytest.mark.parametrize(
    ("maps", "stream", "aliases", "filtered"),
    [
        ({"users": {"__filter__": "x"}}, "users", ["users"], {"users"}),
        ({"public-*": {"__filter__": "x"}}, "public-users", ["public-users"], {"public-users"}),
        ({"users": {"__alias__": "u2", "__filter__": "x"}}, "users", ["u2"], {"u2"}),
        (
            {"active": {"__source__": "users", "__filter__": "x"}},
            "users",
            ["users", "active"],
            {"active"},
        ),
        (
            {"users": {"__filter__": "x"}, "all": {"__source__": "users"}},
            "users",
            ["users", "all"],
            {"users"},
        ),
        ({"users": {"email": None}}, "users", ["users"], set()),
        ({"orders": {"__filter__": "x"}}, "users", ["users"], set()),
        (None, "users", ["users"], set()),
    ],
)
def test_the_sinks_a_filter_feeds_are_found_as_the_sdk_matches_them(
    maps: dict[str, Any], stream: str, aliases: list[str], filtered: set[str]
) -> None:
    assert filtered_aliases(maps, stream, aliases) == filtered


# Logs


def test_mirror_deletes_never_log_the_ids_they_delete(
    sandbox: Sandbox, mirror_config: dict[str, Any], tmp_path: Path, run_target: RunTarget
) -> None:
    sandbox.set_limits(delete_interval=0)
    users = schema(MIRRORED_STREAM, {"user_id": {"type": "string"}}, ["user_id"])

    def copy_of(version: int, ids: list[str]) -> list[dict[str, Any]]:
        rows = [{**record(MIRRORED_STREAM, {"user_id": i}), "version": version} for i in ids]
        return [
            users,
            activate_version(version),
            *rows,
            activate_version(version),
            state({"v": version}),
        ]

    kept = [f"kept-{n}" for n in range(20)]
    erased = ["erase-me-6d1e", "erase-me-b07a"]
    assert run_target(mirror_config, copy_of(1, kept + erased), tmp_path=tmp_path).returncode == 0

    run = run_target(
        mirror_config,
        copy_of(2, kept),
        tmp_path=tmp_path,
        env={"LOGLEVEL": "DEBUG", "TARGET_USERPILOT_LOGLEVEL": "DEBUG"},
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(_deleted(sandbox)) == erased
    assert " DEBUG " in run.stderr  # it did log at DEBUG
    assert "erase-me" not in run.stdout + run.stderr
