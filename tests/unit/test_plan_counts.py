"""The pure parts of a plan: how a decision is counted, batches merged, versions judged, and the
plan file's shape."""

from __future__ import annotations

import json

from target_userpilot.memory.mirror import VersionEnd
from target_userpilot.memory.unchanged import row_hash
from target_userpilot.plan.planner import PlannedBatch
from target_userpilot.plan.tally import (
    CHANGED,
    DELETED,
    NEW,
    SUMMARY_COUNTERS,
    UNCHANGED,
    PlanStop,
    PlanTally,
    StreamPlan,
    compare_row,
    version_verdict,
)
from target_userpilot.plan.versions import PlannedVersions
from target_userpilot.settings import env_config, meltano_nested
from target_userpilot.summary import StreamTally


def test_a_row_is_compared_as_skip_unchanged_compares_it() -> None:
    digest = row_hash(b'{"user_id":"1","metadata":{"plan":"pro"}}\n')
    assert compare_row(None, digest) == NEW
    assert compare_row(DELETED, digest) == NEW  # deleted earlier in the input: Userpilot has none
    assert compare_row(digest, digest) == UNCHANGED
    assert compare_row(row_hash(b"other\n"), digest) == CHANGED


def test_unchanged_rows_are_sent_unless_skip_unchanged_is_on() -> None:
    for skip, sent, unchanged in ((True, 2, 3), (False, 5, 0)):
        plan = StreamPlan("users", skip_unchanged=skip)
        for i, standing in enumerate([NEW, CHANGED, UNCHANGED, UNCHANGED, UNCHANGED]):
            plan.row(standing, str(i), repeated=False)
        summary = plan.summary()
        assert (summary["rows_sent"], summary["unchanged"]) == (sent, unchanged)


def test_deletions_already_accepted_count_apart_from_those_to_send() -> None:
    plan = StreamPlan("users")
    for _ in range(3):
        plan.note("marked")
    plan.note("mirrored")
    plan.note("already_deleted", "7")
    assert (plan.summary()["deleted"], plan.summary()["deleted_before"]) == (3, 1)


def test_events_already_sent_and_repeated_are_the_summarys_skipped() -> None:
    plan = StreamPlan("events")
    plan.note("events_new", "e-1")
    plan.note("events_sent_before", "e-0")
    plan.note("events_repeated", "e-1")
    assert (plan.summary()["events_sent"], plan.summary()["events_skipped"]) == (1, 2)


def test_samples_are_the_first_distinct_ids_up_to_the_setting() -> None:
    plan = StreamPlan("users", sample_ids=2)
    for row_id in ("a", "a", "b", "c"):
        plan.note("new", row_id)
    assert plan.samples == {"new": ["a", "b"]}
    none = StreamPlan("users", sample_ids=0)
    none.note("new", "a")
    assert none.samples == {} and none.new == 1


def test_rejections_count_each_reason() -> None:
    plan = StreamPlan("users")
    plan.reject("'id' is missing or null", "record 3")
    plan.reject("'id' is missing or null", "record 9")
    plan.reject("its row is 90 bytes, more than max_file_bytes (50)", "12")
    rejected = plan.as_dict()["rejected"]
    assert rejected == {
        "count": 3,
        "reasons": {
            "'id' is missing or null": 2,
            "its row is 90 bytes, more than max_file_bytes (50)": 1,
        },
    }


def test_the_summary_counters_a_plan_predicts_are_the_run_summarys() -> None:
    assert set(SUMMARY_COUNTERS) <= set(StreamTally.__dataclass_fields__)
    assert set(StreamPlan("users").summary()) == set(SUMMARY_COUNTERS)


def test_the_guards_verdict_on_a_version() -> None:
    within = version_verdict(VersionEnd("s", "users", 2, 100, 3, 0, 10))
    assert (within["verdict"], within["percent"]) == ("would delete", 3.0)
    past = version_verdict(VersionEnd("s", "users", 2, 100, 90, 1, 10))
    assert (past["verdict"], past["percent"], past["held_elsewhere"]) == (
        "would stop the run",
        90.0,
        1,
    )
    assert version_verdict(VersionEnd("s", "users", 2, 0, 0, 0, 5))["verdict"] == (
        "nothing to delete"
    )


def test_the_plan_file_has_its_documented_shape() -> None:
    tally = PlanTally(skip_unchanged=True)
    users = tally.stream("users", "users")
    users.received = 2
    users.row(NEW, "1", repeated=False)
    users.row(UNCHANGED, "2", repeated=False)
    tally.stop = PlanStop("guard", "users", "Stream 'users': ...")
    data = json.loads(json.dumps(tally.as_dict()))
    assert set(data) == {
        "plan_format",
        "ledger",
        "skip_unchanged",
        "outcome",
        "state_messages",
        "streams",
        "total",
    }
    assert data["outcome"] == {
        "completes": False,
        "stops": {"kind": "guard", "stream": "users", "reason": "Stream 'users': ..."},
        "messages_after_stop": 0,
    }
    stream = data["streams"]["users"]
    assert set(stream) == {
        "object",
        "received",
        "profiles",
        "deletions",
        "versions",
        "events",
        "rejected",
        "samples",
        "summary",
    }
    assert stream["profiles"] == {
        "new": 1,
        "changed": 0,
        "unchanged": 1,
        "repeated": 0,
        "merged": 0,
        "to_send": 1,
    }
    assert data["total"]["rows_sent"] == 1 and data["total"]["unchanged"] == 1


def test_the_summary_lines_count_and_never_name() -> None:
    tally = PlanTally()
    plan = tally.stream("users", "users")
    plan.received = 1
    plan.note("marked")
    plan.sample("to_delete", "secret-id-42")
    text = "\n".join(tally.lines())
    assert "1 to delete" in text
    assert "secret-id-42" not in text
    assert "No ledger yet (a first run)" in text


def test_a_batch_merges_one_profiles_rows_as_the_run_merges_them() -> None:
    users, crm = StreamPlan("users"), StreamPlan("users")
    batch = PlannedBatch(max_rows=10, max_bytes=10_000)
    batch.add(users, "1", b'{"user_id":"1","metadata":{"a":1,"b":1}}\n')
    batch.add(crm, "1", b'{"user_id":"1","metadata":{"a":2}}\n')
    batch.add(users, "2", b'{"user_id":"2","metadata":{}}\n')
    sealed = batch.seal()
    assert [(row_id, line) for row_id, _, line, _ in sealed] == [
        ("1", b'{"user_id":"1","metadata":{"a":2,"b":1}}\n'),
        ("2", b'{"user_id":"2","metadata":{}}\n'),
    ]
    assert sealed[0][1] is crm and sealed[0][3] == [users]  # the row counts for the last stream


def test_a_batch_is_full_at_the_runs_limits_and_a_deletion_supersedes_its_rows() -> None:
    plan = StreamPlan("users")
    batch = PlannedBatch(max_rows=2, max_bytes=10_000)
    batch.add(plan, "1", b"x\n")
    batch.add(plan, "2", b"y\n")
    assert batch.fits("1", b"z\n") and not batch.fits("3", b"z\n")
    batch.supersede("1")
    assert [row_id for row_id, *_ in batch.seal()] == ["2"]
    small = PlannedBatch(max_rows=10, max_bytes=5)
    small.add(plan, "1", b"abcd\n")
    assert not small.fits("2", b"e\n")


def test_versions_without_a_ledger_judge_this_inputs_rows_alone() -> None:
    versions = PlannedVersions(None)
    versions.save_version_ids("scope", "users", "s", 1, ["1", "2", "3"])
    versions.save_version_ids("scope", "users", "s", 2, ["1", "2"])
    versions.save_unversioned_ids("scope", "users", "other", ["2"])
    assert versions.has_version("scope", "users", "s", 2)
    assert versions.version_counts("scope", "users", "s", 2) == (3, 1, 0)
    assert versions.ids_not_in_version("scope", "users", "s", 2) == ["3"]
    versions.forget("scope", "users", ["3"])
    assert versions.version_counts("scope", "users", "s", 2) == (2, 0, 0)


def test_an_object_setting_meltano_flattened_for_a_command_is_nested_as_in_a_run() -> None:
    flat = {
        "accounts.object": "companies",
        "accounts.id_property": "account_id",
        "crm\\.companies.object": "companies",  # Meltano's escape for a literal dot
    }
    assert meltano_nested(flat) == {
        "accounts": {"object": "companies", "id_property": "account_id"},
        "crm.companies": {"object": "companies"},
    }
    environ = {"TARGET_USERPILOT_OBJECT_MAPPING": json.dumps(flat)}
    schema = {"properties": {"object_mapping": {"type": "object"}}}
    assert env_config(schema, "TARGET_USERPILOT_", environ)["object_mapping"] == flat
    under_meltano = {**environ, "MELTANO_LOADER_NAME": "target-userpilot"}
    nested = env_config(schema, "TARGET_USERPILOT_", under_meltano)["object_mapping"]
    assert nested["accounts"] == {"object": "companies", "id_property": "account_id"}
