"""The sandbox behaves like Userpilot's bulk API, over real loopback HTTP.

The target's own tests trust the sandbox to be a faithful stand-in: these tests pin down the
behaviour they rely on (shapes, limits, the job lifecycle, profile merging) and prove that each
injected fault is visible to a client exactly as the real failure would be. The sandbox as a
command (``userpilot-sandbox``): ``tests/e2e/test_sandbox_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from target_userpilot.sandbox import Sandbox
from target_userpilot.sandbox.limits import PerMinute

from support.messages import API_KEY
from support.waiting import eventually

FINAL = {"completed", "failed"}


def upload_json(
    api: requests.Session, sb: Sandbox, obj: str, rows: list[dict[str, Any]], **kwargs: Any
) -> requests.Response:
    return api.post(f"{sb.url}/v1/{obj}/bulk_identify", json={obj: rows}, **kwargs)


def upload_file(
    api: requests.Session, sb: Sandbox, obj: str, text: str, filename: str = "batch.ndjson"
) -> requests.Response:
    files = {"file": (filename, text.encode(), "application/x-ndjson")}
    return api.post(f"{sb.url}/v1/{obj}/bulk_identify", files=files)


def ndjson(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def job_status(api: requests.Session, sb: Sandbox, job_id: str) -> requests.Response:
    return api.get(f"{sb.url}/v1/background_jobs/{quote(job_id, safe='')}")


def await_final(api: requests.Session, sb: Sandbox, job_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = job_status(api, sb, job_id).json()
        return job if job["status"] in FINAL else None

    return eventually(final, what=f"job {job_id} to end")


def upload_when_free(
    api: requests.Session, sb: Sandbox, obj: str, rows: list[dict[str, Any]]
) -> requests.Response:
    """Upload, retrying while the account is busy (409), as a client would."""

    def accepted() -> requests.Response | None:
        response = upload_json(api, sb, obj, rows)
        if response.status_code == 409:
            return None
        assert response.status_code == 202, response.text
        return response

    return eventually(accepted, what="the account to be free")


def assert_error(response: requests.Response, status: int, error: str, code: str) -> str:
    """Check Userpilot's error envelope and return its message."""
    assert response.status_code == status, response.text
    (entry,) = response.json()["errors"]
    assert (entry["error"], entry["error_code"]) == (error, code)
    assert set(entry) == {"error", "error_code", "message", "details"}
    message: str = entry["message"]
    return message


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Token wrong-key", f"Bearer {API_KEY}", "Token "], ids=str
)
def test_v1_calls_without_the_right_key_get_401(
    default_sandbox: Sandbox, anon: requests.Session, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = anon.get(f"{default_sandbox.url}/v1/background_jobs", headers=headers)
    message = assert_error(response, 401, "unauthorized", "UNAUTHORIZED")
    assert message == "Invalid API key"
    # Admin endpoints stay open: tests must always be able to inspect the sandbox.
    assert anon.get(f"{default_sandbox.url}/_sandbox/stats").status_code == 200


def test_sandbox_without_api_key_accepts_any_token(anon: requests.Session) -> None:
    with Sandbox(api_key=None) as sb:
        response = anon.get(f"{sb.url}/v1/background_jobs", headers={"Authorization": "x"})
        assert response.status_code == 200
        assert response.json() == []


def test_sandbox_refuses_a_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Sandbox(host="0.0.0.0")  # noqa: S104 - the point is that it is refused


# --- uploads and profiles --------------------------------------------------------------------


def test_json_upload_creates_a_job_and_merges_user_profiles(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    first = upload_json(
        api,
        default_sandbox,
        "users",
        [
            {"user_id": "u1", "company_id": "c1", "metadata": {"plan": "free", "seats": 3}},
            {"user_id": "u2", "metadata": {"name": "Ann"}},
        ],
    )
    assert first.status_code == 202
    job = first.json()
    assert job["type"] == "users_bulk_identify"
    assert job["filename"] is None
    assert job["total_rows"] == 2
    assert job["status"] == "queued"
    assert await_final(api, default_sandbox, job["job_id"])["status"] == "completed"

    second = upload_json(
        api,
        default_sandbox,
        "users",
        [
            {"user_id": "u1", "company_id": "c2", "metadata": {"plan": None, "active": True}},
            {"user_id": "u2", "company_id": None, "metadata": {"score": 1.5}},
        ],
    )
    assert second.status_code == 202
    await_final(api, default_sandbox, second.json()["job_id"])

    assert default_sandbox.profiles("users") == {
        "u1": {"user_id": "u1", "company_id": "c2", "metadata": {"seats": 3, "active": True}},
        "u2": {"user_id": "u2", "company_id": None, "metadata": {"name": "Ann", "score": 1.5}},
    }


def test_ndjson_file_upload_creates_a_job_and_merges_profiles(
    default_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    companies = '{"company_id": "c1", "metadata": {"tier": "gold"}}\r\n\n{"company_id": "c2"}\n'
    response = upload_file(
        api, default_sandbox, "companies", companies, filename="companies-1.ndjson"
    )
    assert response.status_code == 202
    job = response.json()
    assert job["type"] == "companies_bulk_identify"
    assert job["filename"] == "companies-1.ndjson"
    assert job["file_size"] == len(companies.encode())
    assert job["total_rows"] == 2  # the blank line is not a row
    await_final(api, default_sandbox, job["job_id"])

    users = ndjson(
        {"user_id": "u1", "company_id": "c1", "metadata": {"plan": "pro", "seats": 2}},
        {"user_id": "u1", "company_id": "c2", "metadata": {"plan": None}},
    )
    response = upload_file(api, default_sandbox, "users", users)
    assert response.status_code == 202
    await_final(api, default_sandbox, response.json()["job_id"])

    assert default_sandbox.profiles("companies") == {
        "c1": {"company_id": "c1", "metadata": {"tier": "gold"}},
        "c2": {"company_id": "c2", "metadata": {}},
    }
    assert default_sandbox.profiles("users") == {
        "u1": {"user_id": "u1", "company_id": "c2", "metadata": {"seats": 2}},
    }
    admin = anon.get(f"{default_sandbox.url}/_sandbox/profiles/users").json()
    assert admin == default_sandbox.profiles("users")


def test_profiles_are_copies_that_callers_may_change(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, default_sandbox, "users", [{"user_id": "u1", "metadata": {"a": 1}}])
    default_sandbox.profiles("users")["u1"]["metadata"]["a"] = 2
    assert default_sandbox.profiles("users")["u1"]["metadata"] == {"a": 1}


# --- job status ------------------------------------------------------------------------------


def test_job_status_accepts_a_percent_encoded_job_id_with_colons(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    job_id = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).json()["job_id"]
    assert job_id.startswith("bulk:jobs:NX-sandbox:")

    response = job_status(api, default_sandbox, job_id)
    assert "%3A" in response.url
    assert response.status_code == 200
    assert response.json()["job_id"] == job_id

    unknown = job_status(api, default_sandbox, "bulk:jobs:NX-sandbox:nope")
    assert_error(unknown, 404, "not_found", "NOT_FOUND")


def test_job_list_shows_every_job_newest_first(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    first = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).json()["job_id"]
    second = upload_json(api, default_sandbox, "companies", [{"company_id": "c1"}]).json()["job_id"]
    listed = api.get(f"{default_sandbox.url}/v1/background_jobs").json()
    assert [job["job_id"] for job in listed] == [second, first]
    assert [job["job_id"] for job in default_sandbox.jobs()] == [second, first]


def test_job_moves_through_its_statuses_to_completed_with_every_row(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_rows_per_minute(2400)  # 20 rows: half a second
    rows = [{"user_id": f"u{n}"} for n in range(20)]
    job_id = upload_json(api, default_sandbox, "users", rows).json()["job_id"]

    seen: list[dict[str, Any]] = []

    def final() -> bool:
        seen.append(job_status(api, default_sandbox, job_id).json())
        return seen[-1]["status"] in FINAL

    eventually(final, what="the job to end")
    order = ["queued", "validating", "processing", "completed"]
    statuses = [job["status"] for job in seen]
    assert statuses == sorted(statuses, key=order.index)
    assert "processing" in statuses
    progress = [job["completed_rows"] for job in seen]
    assert progress == sorted(progress)
    last = seen[-1]
    assert last["completed_rows"] == last["total_rows"] == 20
    assert last["end_time"] is not None
    assert all(job["end_time"] is None for job in seen[:-1])
    assert last["elapsed_time"] == pytest.approx(0.5, abs=0.05)
    assert len(default_sandbox.profiles("users")) == 20


def test_elapsed_time_and_job_times_read_as_told(
    default_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    default_sandbox.set_rows_per_minute(2400)  # 20 rows: half a second
    job_id = upload_json(api, default_sandbox, "users", [{"user_id": f"u{n}"} for n in range(20)])
    job_id = job_id.json()["job_id"]
    assert default_sandbox.wait_idle(timeout=5)

    def read(**readings: str) -> dict[str, Any]:
        default_sandbox.set_job_figures(**readings)
        status: dict[str, Any] = job_status(api, default_sandbox, job_id).json()
        return status

    assert read()["elapsed_time"] == pytest.approx(0.5, abs=0.05)
    assert read(elapsed_time="milliseconds")["elapsed_time"] == pytest.approx(500, abs=50)
    assert read(elapsed_time="rounded")["elapsed_time"] in (0, 1)
    first = read(elapsed_time="since_creation")["elapsed_time"]
    eventually(lambda: read()["elapsed_time"] > first + 0.05, what="elapsed_time to grow")
    assert read()["end_time"] is not None  # final, and still growing
    whole = read(elapsed_time="seconds", job_times="whole_seconds")
    assert whole["start_time"].endswith("Z") and "." not in whole["start_time"]
    assert whole["elapsed_time"] == pytest.approx(0.5, abs=0.05)
    answer = anon.post(f"{default_sandbox.url}/_sandbox/job_figures", json={"job_times": "exact"})
    assert answer.status_code == 200
    assert "." in job_status(api, default_sandbox, job_id).json()["start_time"]
    refused = anon.post(
        f"{default_sandbox.url}/_sandbox/job_figures", json={"elapsed_time": "hours"}
    )
    assert "elapsed_time must be one of" in assert_error(
        refused, 400, "invalid_request", "BAD_REQUEST"
    )
    with pytest.raises(ValueError, match="job_times must be one of"):
        Sandbox(job_times="minutes")


def test_with_rate_zero_jobs_complete_by_the_first_status_call(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    job_id = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).json()["job_id"]
    job = job_status(api, default_sandbox, job_id).json()
    assert (job["status"], job["completed_rows"]) == ("completed", 1)


# --- the one-job rule ------------------------------------------------------------------------


def test_upload_while_our_own_job_runs_gets_409_until_it_ends(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_rows_per_minute(60)  # 10 rows: ten seconds
    first = upload_json(api, default_sandbox, "users", [{"user_id": f"u{n}"} for n in range(10)])
    assert first.status_code == 202

    second = upload_json(api, default_sandbox, "companies", [{"company_id": "c1"}])
    message = assert_error(second, 409, "conflict", "JOB_IN_PROGRESS")
    assert message == "Another bulk job is in progress"
    assert (
        default_sandbox.stats()["conflicts_own"],
        default_sandbox.stats()["conflicts_foreign"],
    ) == (1, 0)

    default_sandbox.set_rows_per_minute(0)  # the running job finishes its remaining rows at once
    assert default_sandbox.wait_idle(timeout=2)
    assert job_status(api, default_sandbox, first.json()["job_id"]).json()["status"] == "completed"
    assert upload_json(api, default_sandbox, "companies", [{"company_id": "c1"}]).status_code == 202


def test_foreign_job_answers_409_and_shows_in_the_job_list(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.hold_foreign_job(0.5)
    refused = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    assert_error(refused, 409, "conflict", "JOB_IN_PROGRESS")
    (foreign,) = api.get(f"{default_sandbox.url}/v1/background_jobs").json()
    assert foreign["status"] == "processing"

    accepted = upload_when_free(api, default_sandbox, "users", [{"user_id": "u1"}])
    assert accepted.json()["total_rows"] == 1
    stats = default_sandbox.stats()
    assert stats["conflicts_foreign"] >= 1
    assert stats["conflicts_own"] == 0
    assert stats["jobs"] == 1  # the foreign job is not ours


def test_wait_idle_reports_whether_jobs_ended_in_time(default_sandbox: Sandbox) -> None:
    default_sandbox.hold_foreign_job(5)
    assert default_sandbox.wait_idle(timeout=0.1) is False
    default_sandbox.reset()
    assert default_sandbox.wait_idle(timeout=0.1) is True


# --- limits and validation -------------------------------------------------------------------


def test_more_rows_or_bytes_than_the_limits_get_413(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(max_rows=3, max_bytes=100)
    rows = [{"user_id": f"u{n}"} for n in range(4)]
    too_many = upload_json(api, default_sandbox, "users", rows)
    assert_error(too_many, 413, "payload_too_large", "PAYLOAD_TOO_LARGE")
    big_file = ndjson({"user_id": "u1", "metadata": {"note": "x" * 100}})
    assert upload_file(api, default_sandbox, "users", big_file).status_code == 413

    assert upload_json(api, default_sandbox, "users", rows[:3]).status_code == 202
    stats = default_sandbox.stats()
    assert stats["rejected"] == {"413": 2}
    assert stats["jobs"] == 1


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ({"user_id": "u2", "metadata": {"address": {"city": "Oslo"}}}, "metadata.address"),
        ({"user_id": "u2", "metadata": {"tags": ["a", "b"]}}, "metadata.tags"),
        ({"metadata": {"plan": "pro"}}, "user_id is missing"),
        ({"user_id": 2}, "user_id must be a non-empty string"),
        ({"user_id": ""}, "user_id must be a non-empty string"),
        ({"user_id": "u2", "company_id": 9}, "company_id must be a non-empty string"),
        ({"user_id": "u2", "metadata": "plan=pro"}, "metadata must be an object"),
        ('{"user_id": "u2"', "not valid JSON"),
    ],
    ids=["nested", "array", "no-id", "int-id", "empty-id", "int-company", "text-meta", "json"],
)
def test_an_invalid_row_gets_400_naming_its_line(
    default_sandbox: Sandbox, api: requests.Session, bad_line: dict[str, Any], problem: str
) -> None:
    text = ndjson({"user_id": "u1"})
    text += bad_line if isinstance(bad_line, str) else json.dumps(bad_line)
    message = assert_error(
        upload_file(api, default_sandbox, "users", text), 400, "invalid_row", "VALIDATION_ERROR"
    )
    assert message.startswith("line 2: ")
    assert problem in message
    assert default_sandbox.jobs() == []


def test_an_invalid_json_row_gets_400_naming_its_position(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    rows = [{"company_id": "c1", "metadata": {"owner": {"id": 1}}}]
    message = assert_error(
        upload_json(api, default_sandbox, "companies", rows), 400, "invalid_row", "VALIDATION_ERROR"
    )
    assert message.startswith("row 1: metadata.owner")


# --- faults ----------------------------------------------------------------------------------


def test_fail_jobs_fails_the_next_job_which_applies_nothing(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(fail_jobs=1)
    failed_id = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).json()["job_id"]
    failed = await_final(api, default_sandbox, failed_id)
    assert failed["status"] == "failed"
    assert failed["error"]
    assert failed["links"].endswith("/errors")
    assert api.get(default_sandbox.url + failed["links"]).json()["errors"] == [failed["error"]]
    assert default_sandbox.profiles("users") == {}

    done_id = upload_json(api, default_sandbox, "users", [{"user_id": "u2"}]).json()["job_id"]
    assert await_final(api, default_sandbox, done_id)["status"] == "completed"
    assert list(default_sandbox.profiles("users")) == ["u2"]
    assert default_sandbox.stats()["faults_injected"]["fail_job"] == 1


def test_error_rate_answers_5xx_and_does_nothing(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(error_rate=1.0)
    codes = {
        upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).status_code
        for _ in range(12)
    }
    assert codes <= {500, 502, 503}
    assert len(codes) > 1  # a random pick, not always the same answer
    assert default_sandbox.jobs() == []
    assert default_sandbox.stats()["faults_injected"]["error"] == 12


def test_rate_limit_answers_429_with_retry_after(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(rate_limit_rate=1.0, retry_after=2)
    response = api.get(f"{default_sandbox.url}/v1/background_jobs")
    assert_error(response, 429, "rate_limited", "TOO_MANY_REQUESTS")
    assert response.headers["Retry-After"] == "2"

    default_sandbox.set_faults(rate_limit_rate=1.0, retry_after=0.5)
    assert api.get(f"{default_sandbox.url}/v1/background_jobs").headers["Retry-After"] == "0.5"


def test_drop_closes_the_connection_without_an_answer(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    assert default_sandbox.jobs() == []
    assert default_sandbox.stats()["faults_injected"]["drop"] == 1

    default_sandbox.set_faults()
    assert upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).status_code == 202


def test_slow_upload_times_out_on_the_client_but_the_job_exists(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(slow_rate=1.0, slow_seconds=3, only="upload")
    with pytest.raises(requests.ReadTimeout):
        upload_json(api, default_sandbox, "users", [{"user_id": "u1"}], timeout=0.3)
    (job,) = default_sandbox.jobs()
    # Status calls are not slowed (only="upload"): the client can find out what happened.
    assert job_status(api, default_sandbox, job["job_id"]).json()["status"] == "completed"
    assert default_sandbox.stats()["faults_injected"]["slow"] == 1


def test_status_error_rate_answers_500_to_status_calls_only(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(status_error_rate=1.0)
    accepted = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    assert accepted.status_code == 202
    failed = job_status(api, default_sandbox, accepted.json()["job_id"])
    assert_error(failed, 500, "internal_error", "INTERNAL_SERVER_ERROR")
    assert default_sandbox.stats()["faults_injected"]["status_error"] == 1


def test_only_limits_faults_to_one_kind_of_call(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(error_rate=1.0, only="status")
    accepted = upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    assert accepted.status_code == 202
    assert job_status(api, default_sandbox, accepted.json()["job_id"]).status_code in {
        500,
        502,
        503,
    }


def test_forbidden_answers_403_to_every_v1_call(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_faults(forbidden=True)
    assert_error(
        upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]),
        403,
        "forbidden",
        "FORBIDDEN",
    )
    assert_error(
        api.get(f"{default_sandbox.url}/v1/background_jobs"), 403, "forbidden", "FORBIDDEN"
    )


def test_faults_repeat_exactly_for_the_same_seed(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    def run() -> list[int]:
        default_sandbox.set_faults(error_rate=0.3, rate_limit_rate=0.2, seed=7)
        return [api.get(f"{default_sandbox.url}/v1/background_jobs").status_code for _ in range(30)]

    first = run()
    assert first == run()
    assert {200, 429} <= set(first)


def test_unknown_fault_settings_are_refused(
    default_sandbox: Sandbox, anon: requests.Session
) -> None:
    with pytest.raises(TypeError):
        default_sandbox.set_faults(error_rat=0.5)
    with pytest.raises(ValueError, match="error_rate"):
        default_sandbox.set_faults(error_rate=2)
    response = anon.post(f"{default_sandbox.url}/_sandbox/faults", json={"only": "everything"})
    assert_error(response, 400, "invalid_request", "BAD_REQUEST")


# --- statistics and admin --------------------------------------------------------------------


def test_stats_count_requests_and_time_every_job(
    default_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    default_sandbox.set_rows_per_minute(6000)  # 10 rows: a tenth of a second
    rows = [{"user_id": f"u{n}"} for n in range(10)]
    for _ in range(2):
        job_id = upload_when_free(api, default_sandbox, "users", rows).json()["job_id"]
        await_final(api, default_sandbox, job_id)

    stats = default_sandbox.stats()
    assert stats["uploads"] == stats["jobs"] == 2
    assert stats["upload_attempts"] == 2 + stats["conflicts_own"]
    assert stats["rows_received"] == 20
    assert stats["requests"] == stats["upload_attempts"] + stats["status_polls"]
    timings = stats["job_timings"]
    assert [t["rows"] for t in timings] == [10, 10]
    assert sum(t["polls"] for t in timings) == stats["status_polls"]
    for timing in timings:
        assert timing["completed_at"] - timing["accepted_at"] == pytest.approx(0.1, abs=0.01)
        assert timing["first_seen_final_at"] >= timing["completed_at"]
    assert 0 < stats["busy_share"] <= 1
    assert 0 <= stats["notice_delay_avg"] <= stats["notice_delay_max"]
    assert stats["polls_per_job_avg"] == stats["status_polls"] / 2
    assert anon.get(f"{default_sandbox.url}/_sandbox/stats").json()["uploads"] == 2


def test_stats_have_no_timing_figures_before_a_job_ends(default_sandbox: Sandbox) -> None:
    stats = default_sandbox.stats()
    assert stats["job_timings"] == []
    assert stats["busy_share"] is None
    assert stats["notice_delay_avg"] is None
    assert stats["polls_per_job_avg"] is None


def test_admin_endpoints_drive_the_sandbox_over_http(
    default_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    admin = f"{default_sandbox.url}/_sandbox"
    assert anon.post(f"{admin}/faults", json={"forbidden": True}).status_code == 200
    assert api.get(f"{default_sandbox.url}/v1/background_jobs").status_code == 403
    assert anon.post(f"{admin}/faults", json={}).status_code == 200
    assert upload_json(api, default_sandbox, "companies", [{"company_id": "c1"}]).status_code == 202
    assert anon.get(f"{admin}/profiles/companies").json() == {
        "c1": {"company_id": "c1", "metadata": {}}
    }

    assert anon.post(f"{admin}/hold", json={"seconds": 30}).status_code == 200
    assert upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).status_code == 409

    assert anon.post(f"{admin}/reset").status_code == 200
    assert anon.get(f"{admin}/profiles/companies").json() == {}
    assert anon.get(f"{admin}/stats").json()["requests"] == 0
    assert upload_json(api, default_sandbox, "users", [{"user_id": "u1"}]).status_code == 202


# --- deletions -------------------------------------------------------------------------------

VERSION = {"X-API-Version": "2020-09-22"}


def delete_ids(
    api: requests.Session, sb: Sandbox, obj: str, ids: Any, headers: dict[str, Any] | None = None
) -> requests.Response:
    """A deletion request, with the version header unless `headers` says otherwise."""
    body = ids if isinstance(ids, dict) else {obj: ids}
    return api.delete(
        f"{sb.url}/v1/{obj}", json=body, headers=VERSION if headers is None else headers
    )


def test_deletion_is_scheduled_in_order_and_applied_only_by_a_deletion_run(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    rows = [{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "u3"}]
    upload_json(api, no_deletion_interval_sandbox, "users", rows)
    upload_when_free(api, no_deletion_interval_sandbox, "companies", [{"company_id": "c1"}])

    answer = delete_ids(api, no_deletion_interval_sandbox, "users", ["u2", "u1"])
    assert answer.status_code == 202
    assert answer.json() == {"message": "2 users scheduled for deletion"}
    one = delete_ids(api, no_deletion_interval_sandbox, "companies", ["c1"])
    assert one.json() == {"message": "1 companies scheduled for deletion"}
    # Userpilot deletes once a day: until then every profile is still there.
    assert set(no_deletion_interval_sandbox.profiles("users")) == {"u1", "u2", "u3"}
    assert no_deletion_interval_sandbox.deletions("users") == ["u2", "u1"]
    assert no_deletion_interval_sandbox.deletions("companies") == ["c1"]
    assert anon.get(f"{no_deletion_interval_sandbox.url}/_sandbox/deletions").json() == {
        "users": ["u2", "u1"],
        "companies": ["c1"],
    }

    assert no_deletion_interval_sandbox.run_deletions() == {"users": 2, "companies": 1}
    assert set(no_deletion_interval_sandbox.profiles("users")) == {"u3"}
    assert no_deletion_interval_sandbox.profiles("companies") == {}
    assert no_deletion_interval_sandbox.deletions("users") == [
        "u2",
        "u1",
    ]  # what was requested stays readable
    stats = no_deletion_interval_sandbox.stats()
    assert (stats["deletion_requests"], stats["deletions_accepted"]) == (2, 2)
    assert stats["ids_scheduled"] == 3
    assert stats["by_endpoint"]["delete"] == {"requests": 2, "rate_limited": 0}

    no_deletion_interval_sandbox.reset()
    assert no_deletion_interval_sandbox.deletions("users") == []


def test_a_profile_created_again_before_the_deletion_run_is_erased_too(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"])
    upload_json(
        api, no_deletion_interval_sandbox, "users", [{"user_id": "u1", "metadata": {"plan": "pro"}}]
    )
    assert "u1" in no_deletion_interval_sandbox.profiles("users")
    assert anon.post(f"{no_deletion_interval_sandbox.url}/_sandbox/run_deletions").json() == {
        "users": 1,
        "companies": 0,
    }
    assert no_deletion_interval_sandbox.profiles("users") == {}
    # A second run has nothing left to do: each scheduled deletion runs once.
    upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u1"}])
    assert no_deletion_interval_sandbox.run_deletions() == {"users": 0, "companies": 0}
    assert list(no_deletion_interval_sandbox.profiles("users")) == ["u1"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Version": "2021-01-01"}],
    ids=["missing", "other-version"],
)
def test_deletion_without_the_api_version_header_gets_400(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session, headers: dict[str, str]
) -> None:
    answer = delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"], headers=headers)
    message = assert_error(answer, 400, "invalid_request", "INVALID_API_VERSION")
    assert "X-API-Version: 2020-09-22" in message
    assert no_deletion_interval_sandbox.deletions("users") == []


def test_deletion_without_the_right_key_gets_401(
    no_deletion_interval_sandbox: Sandbox, anon: requests.Session
) -> None:
    answer = anon.delete(
        f"{no_deletion_interval_sandbox.url}/v1/users", json={"users": ["u1"]}, headers=VERSION
    )
    assert_error(answer, 401, "unauthorized", "UNAUTHORIZED")
    assert no_deletion_interval_sandbox.deletions("users") == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"users": []}, "is empty"),
        ({"users": [""]}, "users[0] must be a non-empty string"),
        ({"users": ["u1", 7]}, "users[1] must be a non-empty string, got a number"),
        ({"users": ["u1", None]}, "users[1] must be a non-empty string, got null"),
        ({"users": "u1"}, 'array "users"'),
        ({"companies": ["c1"]}, 'array "users"'),
        ({"users": ["u1"], "force": True}, "unknown field 'force'"),
    ],
    ids=["empty", "empty-id", "number", "null", "not-a-list", "other-object", "unknown-field"],
)
def test_deletion_ids_must_be_non_empty_strings(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session, body: dict[str, Any], problem: str
) -> None:
    answer = delete_ids(api, no_deletion_interval_sandbox, "users", body)
    assert problem in assert_error(answer, 400, "invalid_request", "BAD_REQUEST")
    assert no_deletion_interval_sandbox.deletions("users") == []
    assert no_deletion_interval_sandbox.stats()["rejected"] == {"400": 1}


def test_deletion_with_more_ids_than_the_limit_gets_413(api: requests.Session) -> None:
    with Sandbox(api_key=API_KEY, delete_interval=0, max_delete_ids=2) as sb:
        too_many = delete_ids(api, sb, "companies", ["c1", "c2", "c3"])
        assert_error(too_many, 413, "payload_too_large", "PAYLOAD_TOO_LARGE")
        assert sb.deletions("companies") == []
        assert delete_ids(api, sb, "companies", ["c1", "c2"]).status_code == 202
        assert delete_ids(api, sb, "companies", ["c3"]).status_code == 202
        assert sb.deletions("companies") == ["c1", "c2", "c3"]


def test_deletion_requests_closer_than_the_interval_get_429_with_retry_after(
    api: requests.Session,
) -> None:
    with Sandbox(api_key=API_KEY, delete_interval=0.5) as sb:
        assert delete_ids(api, sb, "users", ["u1"]).status_code == 202
        refused = delete_ids(api, sb, "companies", ["c1"])  # users and companies share it
        assert_error(refused, 429, "rate_limited", "TOO_MANY_REQUESTS")
        assert refused.headers["Retry-After"] == "1"  # whole seconds, rounded up

        def admitted() -> bool:
            return delete_ids(api, sb, "users", ["u2"]).status_code == 202

        eventually(admitted, what="the deletion interval to pass")
        log = [e for e in sb.request_log() if e["status"] == 202]
        assert log[1]["at"] - log[0]["at"] >= 0.5
        assert sb.deletions("users") == ["u1", "u2"]
        assert sb.deletions("companies") == []
        stats = sb.stats()
        assert stats["by_endpoint"]["delete"]["rate_limited"] == stats["deletion_requests"] - 2
        assert stats["deletions_accepted"] == 2


def test_a_refused_deletion_request_does_not_move_the_interval(api: requests.Session) -> None:
    with Sandbox(api_key=API_KEY, delete_interval=0.3) as sb:
        assert delete_ids(api, sb, "users", ["u1"]).status_code == 202
        statuses = []

        def admitted() -> bool:
            statuses.append(delete_ids(api, sb, "users", ["u2"]).status_code)
            return statuses[-1] == 202

        eventually(admitted, what="the deletion interval to pass")
        assert statuses[0] == 429
        assert set(statuses[:-1]) == {429}
        # Measured from the last admitted request: had each refusal restarted the interval,
        # the request after a refusal could not pass sooner than 0.3 s after it.
        *_, last_refused, passed = sb.request_log()
        assert passed["at"] - last_refused["at"] < 0.3


def test_limits_change_while_the_sandbox_runs(
    default_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    assert default_sandbox.limits() == {
        "delete_interval": 2.0,
        "max_delete_ids": None,
        "events_per_minute": 600.0,
        "track_requires_user": True,
    }
    assert delete_ids(api, default_sandbox, "users", ["u1"]).status_code == 202
    assert delete_ids(api, default_sandbox, "users", ["u2"]).status_code == 429
    default_sandbox.set_limits(delete_interval=0)
    assert delete_ids(api, default_sandbox, "users", ["u2"]).status_code == 202

    assert anon.post(f"{default_sandbox.url}/_sandbox/limits", json={"max_delete_ids": 1}).ok
    assert delete_ids(api, default_sandbox, "users", ["u3", "u4"]).status_code == 413
    assert anon.get(f"{default_sandbox.url}/_sandbox/limits").json()["max_delete_ids"] == 1

    with pytest.raises(TypeError, match="unknown limit"):
        default_sandbox.set_limits(delete_intervall=1)
    with pytest.raises(ValueError, match="events_per_minute"):
        default_sandbox.set_limits(max_delete_ids=5, events_per_minute=-1)
    assert default_sandbox.limits()["max_delete_ids"] == 1  # nothing changed by a refused call
    refused = anon.post(
        f"{default_sandbox.url}/_sandbox/limits", json={"track_requires_user": "no"}
    )
    assert_error(refused, 400, "invalid_request", "BAD_REQUEST")


# --- tracked events --------------------------------------------------------------------------


def track(
    api: requests.Session, sb: Sandbox, body: dict[str, Any], headers: dict[str, Any] | None = None
) -> requests.Response:
    """A track request, with the version header unless `headers` says otherwise."""
    return api.post(
        f"{sb.url}/v1/track", json=body, headers=VERSION if headers is None else headers
    )


def test_track_stores_each_event_with_its_receive_time(
    default_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    metadata = {"amount": 12.5, "plan": "pro", "trial": False, "coupon": None}
    first = track(
        api, default_sandbox, {"user_id": "u1", "event_name": "invoice_paid", "metadata": metadata}
    )
    assert first.status_code == 202
    assert (
        track(api, default_sandbox, {"user_id": "u1", "event_name": "seat_added"}).status_code
        == 202
    )

    events = default_sandbox.events()
    assert [(e["user_id"], e["event_name"], e["metadata"]) for e in events] == [
        ("u1", "invoice_paid", metadata),
        ("u1", "seat_added", {}),
    ]
    assert events[0]["received_at"].endswith("Z")
    assert 0 <= events[0]["at"] <= events[1]["at"]
    assert anon.get(f"{default_sandbox.url}/_sandbox/events").json() == events
    stats = default_sandbox.stats()
    assert (stats["track_requests"], stats["events_received"]) == (2, 2)
    assert stats["by_endpoint"]["track"] == {"requests": 2, "rate_limited": 0}

    default_sandbox.reset()
    assert default_sandbox.events() == []


def test_track_without_the_api_version_header_gets_400(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    answer = track(api, default_sandbox, {"user_id": "u1", "event_name": "e"}, headers={})
    assert_error(answer, 400, "invalid_request", "INVALID_API_VERSION")
    assert default_sandbox.events() == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"event_name": "e"}, "user_id is missing"),
        ({"user_id": 1, "event_name": "e"}, "user_id must be a non-empty string, got a number"),
        ({"user_id": "u1", "event_name": ""}, "event_name must be a non-empty string"),
        ({"user_id": "u1"}, "event_name is missing"),
        ({"user_id": "u1", "event_name": "e", "metadata": ["a"]}, "metadata must be an object"),
        ({"user_id": "u1", "event_name": "e", "metadata": {"a": {"b": 1}}}, "metadata.a is an"),
        ({"user_id": "u1", "event_name": "e", "metadata": {"tags": [1]}}, "metadata.tags is an"),
        ({"user_id": "u1", "event_name": "e", "timestamp": "2024-01-01"}, "unknown field"),
    ],
    ids=["no-user", "int-user", "empty-name", "no-name", "list-meta", "nested", "array", "extra"],
)
def test_track_with_an_invalid_event_gets_400(
    default_sandbox: Sandbox, api: requests.Session, body: dict[str, Any], problem: str
) -> None:
    upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    message = assert_error(
        track(api, default_sandbox, body), 400, "invalid_event", "VALIDATION_ERROR"
    )
    assert problem in message
    assert default_sandbox.events() == []


def test_track_for_a_user_without_a_profile_yet_gets_404(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    default_sandbox.set_rows_per_minute(60)  # 10 rows: ten seconds
    upload_json(api, default_sandbox, "users", [{"user_id": f"u{n}"} for n in range(10)])
    # The user's job has not completed: Userpilot does not know the user yet.
    early = track(api, default_sandbox, {"user_id": "u0", "event_name": "e"})
    message = assert_error(early, 404, "not_found", "USER_NOT_FOUND")
    assert "u0" not in message  # error messages never echo record values

    default_sandbox.set_rows_per_minute(0)
    assert track(api, default_sandbox, {"user_id": "u0", "event_name": "e"}).status_code == 202
    assert [e["user_id"] for e in default_sandbox.events()] == ["u0"]


def test_track_with_a_body_over_max_bytes_gets_413(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    default_sandbox.set_faults(max_bytes=200)
    big = track(
        api, default_sandbox, {"user_id": "u1", "event_name": "e", "metadata": {"n": "x" * 200}}
    )
    assert_error(big, 413, "payload_too_large", "PAYLOAD_TOO_LARGE")
    assert track(api, default_sandbox, {"user_id": "u1", "event_name": "e"}).status_code == 202
    assert len(default_sandbox.events()) == 1


def test_track_accepts_unknown_users_when_told_to(api: requests.Session) -> None:
    with Sandbox(api_key=API_KEY, track_requires_user=False) as sb:
        assert track(api, sb, {"user_id": "nobody", "event_name": "e"}).status_code == 202
        assert len(sb.events()) == 1


def test_track_over_the_per_minute_limit_gets_429_with_retry_after(api: requests.Session) -> None:
    with Sandbox(api_key=API_KEY, events_per_minute=3, track_requires_user=False) as sb:
        codes = [track(api, sb, {"user_id": "u1", "event_name": "e"}).status_code for _ in range(3)]
        assert codes == [202, 202, 202]
        refused = track(api, sb, {"user_id": "u1", "event_name": "e"})
        assert_error(refused, 429, "rate_limited", "TOO_MANY_REQUESTS")
        # The oldest of the three leaves the 60 s window in just under a minute.
        assert refused.headers["Retry-After"] == "60"
        assert len(sb.events()) == 3
        assert sb.stats()["by_endpoint"]["track"]["rate_limited"] == 1


def test_events_per_minute_zero_or_none_means_no_limit(api: requests.Session) -> None:
    for unlimited in (0, None):
        with Sandbox(api_key=API_KEY, events_per_minute=unlimited, track_requires_user=False) as sb:
            for _ in range(20):
                assert track(api, sb, {"user_id": "u1", "event_name": "e"}).status_code == 202


def test_the_per_minute_window_slides() -> None:
    """The window's arithmetic, on a fake clock: a real minute is too long for a test."""
    window = PerMinute(2)
    assert window.admit(0.0) is None
    assert window.admit(10.0) is None
    assert window.admit(30.0) == pytest.approx(30.0)  # until the request at 0 s leaves
    assert window.admit(60.0) is None  # the 0 s request has left
    assert window.admit(65.0) == pytest.approx(5.0)  # until the 10 s one leaves
    assert PerMinute(0).admit(0.0) is None


def test_a_deletion_run_removes_a_deleted_users_events(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u1"}, {"user_id": "u2"}])
    for user_id in ("u1", "u2", "u1"):
        assert (
            track(
                api, no_deletion_interval_sandbox, {"user_id": user_id, "event_name": "e"}
            ).status_code
            == 202
        )
    delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"])
    assert len(no_deletion_interval_sandbox.events()) == 3  # scheduled only
    no_deletion_interval_sandbox.run_deletions()
    assert [e["user_id"] for e in no_deletion_interval_sandbox.events()] == ["u2"]


# --- faults on the deletion and track endpoints ----------------------------------------------


def test_faults_hit_deletion_and_track_calls_too_by_default(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u1"}])
    no_deletion_interval_sandbox.set_faults(rate_limit_rate=1.0, retry_after=2)
    refused = delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"])
    assert_error(refused, 429, "rate_limited", "TOO_MANY_REQUESTS")
    assert refused.headers["Retry-After"] == "2"
    assert (
        track(api, no_deletion_interval_sandbox, {"user_id": "u1", "event_name": "e"}).status_code
        == 429
    )
    assert no_deletion_interval_sandbox.deletions("users") == []
    assert no_deletion_interval_sandbox.events() == []
    by_endpoint = no_deletion_interval_sandbox.stats()["by_endpoint"]
    assert by_endpoint["delete"]["rate_limited"] == by_endpoint["track"]["rate_limited"] == 1
    assert [e["fault"] for e in no_deletion_interval_sandbox.request_log()[-2:]] == [
        "rate_limit",
        "rate_limit",
    ]


def test_endpoints_limits_faults_to_the_chosen_families(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session
) -> None:
    no_deletion_interval_sandbox.set_faults(error_rate=1.0, endpoints=["track", "delete"])
    assert (
        upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u1"}]).status_code
        == 202
    )
    assert api.get(f"{no_deletion_interval_sandbox.url}/v1/background_jobs").status_code == 200
    assert delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"]).status_code in {
        500,
        502,
        503,
    }
    assert track(
        api, no_deletion_interval_sandbox, {"user_id": "u1", "event_name": "e"}
    ).status_code in {500, 502, 503}
    assert no_deletion_interval_sandbox.stats()["faults_injected"]["error"] == 2

    no_deletion_interval_sandbox.set_faults(forbidden=True, endpoints=["bulk"])
    assert (
        upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u2"}]).status_code
        == 403
    )
    assert (
        track(api, no_deletion_interval_sandbox, {"user_id": "u1", "event_name": "e"}).status_code
        == 202
    )


def test_only_keeps_its_meaning_beside_the_new_endpoints(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u1"}])
    no_deletion_interval_sandbox.set_faults(error_rate=1.0, only="status")
    assert api.get(f"{no_deletion_interval_sandbox.url}/v1/background_jobs").status_code in {
        500,
        502,
        503,
    }
    assert delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"]).status_code == 202
    assert (
        track(api, no_deletion_interval_sandbox, {"user_id": "u1", "event_name": "e"}).status_code
        == 202
    )


def test_a_slow_track_call_times_out_on_the_client_but_the_event_is_stored(
    default_sandbox: Sandbox, api: requests.Session
) -> None:
    upload_json(api, default_sandbox, "users", [{"user_id": "u1"}])
    default_sandbox.set_faults(slow_rate=1.0, slow_seconds=2, endpoints=["track", "delete"])
    with pytest.raises(requests.ReadTimeout):
        api.post(
            f"{default_sandbox.url}/v1/track",
            json={"user_id": "u1", "event_name": "e"},
            headers=VERSION,
            timeout=0.3,
        )
    # The in-flight duplicate a client must live with: Userpilot has the event already.
    eventually(lambda: len(default_sandbox.events()) == 1, what="the slow event to be stored")
    assert default_sandbox.stats()["faults_injected"]["slow"] == 1


def test_a_slow_deletion_call_times_out_on_the_client_but_is_scheduled(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session
) -> None:
    no_deletion_interval_sandbox.set_faults(slow_rate=1.0, slow_seconds=2, endpoints=["delete"])
    with pytest.raises(requests.ReadTimeout):
        api.delete(
            f"{no_deletion_interval_sandbox.url}/v1/users",
            json={"users": ["u1"]},
            headers=VERSION,
            timeout=0.3,
        )
    eventually(
        lambda: no_deletion_interval_sandbox.deletions("users") == ["u1"],
        what="the deletion to be scheduled",
    )


def test_a_dropped_deletion_or_track_call_has_no_effect(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session
) -> None:
    no_deletion_interval_sandbox.set_faults(drop_rate=1.0, endpoints=["delete", "track"])
    with pytest.raises(requests.ConnectionError):
        delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"])
    with pytest.raises(requests.ConnectionError):
        track(api, no_deletion_interval_sandbox, {"user_id": "u1", "event_name": "e"})
    assert no_deletion_interval_sandbox.deletions("users") == []
    assert no_deletion_interval_sandbox.events() == []
    assert no_deletion_interval_sandbox.stats()["faults_injected"]["drop"] == 2


def test_answer_next_scripts_the_next_calls_of_one_endpoint(
    no_deletion_interval_sandbox: Sandbox, api: requests.Session, anon: requests.Session
) -> None:
    upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u1"}])
    no_deletion_interval_sandbox.answer_next("track", 503, times=2)
    no_deletion_interval_sandbox.answer_next("delete", 429, retry_after=3)
    event = {"user_id": "u1", "event_name": "e"}
    first, second = (
        track(api, no_deletion_interval_sandbox, event),
        track(api, no_deletion_interval_sandbox, event),
    )
    assert (first.status_code, second.status_code) == (503, 503)
    assert first.headers["Content-Type"] == "text/html"  # a proxy's page, as in production
    assert track(api, no_deletion_interval_sandbox, event).status_code == 202
    limited = delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"])
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert delete_ids(api, no_deletion_interval_sandbox, "users", ["u1"]).status_code == 202
    assert len(no_deletion_interval_sandbox.events()) == 1
    assert no_deletion_interval_sandbox.deletions("users") == ["u1"]
    stats = no_deletion_interval_sandbox.stats()
    assert stats["faults_injected"]["scripted"] == 3
    assert [e["fault"] for e in no_deletion_interval_sandbox.request_log()].count("scripted") == 3

    answer = anon.post(
        f"{no_deletion_interval_sandbox.url}/_sandbox/answer_next",
        json={"endpoint": "bulk", "status": 422},
    )
    assert answer.status_code == 200
    refused = upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u2"}])
    assert_error(refused, 422, "invalid_request", "REQUEST_REFUSED")
    assert (
        upload_json(api, no_deletion_interval_sandbox, "users", [{"user_id": "u2"}]).status_code
        == 202
    )

    no_deletion_interval_sandbox.answer_next("list", 500, times=5)
    no_deletion_interval_sandbox.reset()
    assert api.get(f"{no_deletion_interval_sandbox.url}/v1/background_jobs").status_code == 200


def test_nonsense_fault_selectors_and_scripts_are_refused(
    default_sandbox: Sandbox, anon: requests.Session
) -> None:
    with pytest.raises(ValueError, match="tracking"):
        default_sandbox.set_faults(endpoints=["tracking"])
    with pytest.raises(ValueError, match="list of endpoint families"):
        default_sandbox.set_faults(endpoints="track")
    refused: list[dict[str, Any]] = [
        {"endpoint": "jobs", "status": 500},
        {"endpoint": "track", "status": 200},
    ]
    for bad in refused:
        with pytest.raises(ValueError):
            default_sandbox.answer_next(**bad)
        answer = anon.post(f"{default_sandbox.url}/_sandbox/answer_next", json=bad)
        assert_error(answer, 400, "invalid_request", "BAD_REQUEST")
    with pytest.raises(ValueError, match="times"):
        default_sandbox.answer_next("track", 500, times=0)
    answer = anon.post(f"{default_sandbox.url}/_sandbox/faults", json={"endpoints": ["delete"]})
    assert answer.status_code == 200


def test_stats_count_requests_and_429s_per_endpoint(api: requests.Session) -> None:
    with Sandbox(api_key=API_KEY, delete_interval=60, events_per_minute=1) as sb:
        job_id = upload_json(api, sb, "users", [{"user_id": "u1"}]).json()["job_id"]
        job_status(api, sb, job_id)
        api.get(f"{sb.url}/v1/background_jobs")
        delete_ids(api, sb, "users", ["u9"])
        delete_ids(api, sb, "users", ["u9"])  # within the interval: 429
        track(api, sb, {"user_id": "u1", "event_name": "e"})
        track(api, sb, {"user_id": "u1", "event_name": "e"})  # over the minute's 1: 429
        api.get(f"{sb.url}/v1/nowhere")
        by_endpoint = sb.stats()["by_endpoint"]
        assert by_endpoint == {
            "bulk": {"requests": 1, "rate_limited": 0},
            "status": {"requests": 1, "rate_limited": 0},
            "list": {"requests": 1, "rate_limited": 0},
            "imports": {"requests": 0, "rate_limited": 0},
            "delete": {"requests": 2, "rate_limited": 1},
            "track": {"requests": 2, "rate_limited": 1},
            "other": {"requests": 1, "rate_limited": 0},
        }
        assert sum(counts["requests"] for counts in by_endpoint.values()) == sb.stats()["requests"]


# --- TLS -------------------------------------------------------------------------------------


def test_tls_with_files_that_do_not_load_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        Sandbox(tls=(missing, missing))


def test_sandbox_logs_each_v1_request_with_its_answer_and_fault(default_sandbox: Sandbox) -> None:
    default_sandbox.set_faults(rate_limit_rate=1.0, retry_after=2)
    answer = requests.get(f"{default_sandbox.url}/v1/background_jobs", timeout=5)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "2"
    (entry,) = default_sandbox.request_log()
    assert entry["method"] == "GET"
    assert entry["path"] == "/v1/background_jobs"
    assert entry["status"] == 429
    assert entry["fault"] == "rate_limit"
    assert entry["at"] >= 0
    assert requests.get(f"{default_sandbox.url}/_sandbox/requests", timeout=5).json() == [entry]


def test_sandbox_refuse_uploads_answers_the_status_with_userpilots_error_envelope(
    default_sandbox: Sandbox,
) -> None:
    default_sandbox.set_faults(refuse_uploads=422)
    headers = {"Authorization": f"Token {API_KEY}"}
    answer = requests.post(
        f"{default_sandbox.url}/v1/users/bulk_identify",
        json={"users": [{"user_id": "u-1"}]},
        headers=headers,
        timeout=5,
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["message"].startswith("The sandbox refuses every upload")
    assert requests.get(f"{default_sandbox.url}/v1/background_jobs", headers=headers, timeout=5).ok
    assert default_sandbox.stats()["faults_injected"]["refuse"] == 1
    assert default_sandbox.stats()["uploads"] == 0
    bad_key = requests.post(
        f"{default_sandbox.url}/v1/users/bulk_identify",
        json={"users": [{"user_id": "u-1"}]},
        headers={"Authorization": "Token wrong"},
        timeout=5,
    )
    assert bad_key.status_code == 401  # the key is checked first
    for nonsense in (200, 401, 409, 413, 429, 500, True):
        with pytest.raises(ValueError, match="refuse_uploads"):
            default_sandbox.set_faults(refuse_uploads=nonsense)


def test_sandbox_foreign_job_can_start_at_a_given_upload(default_sandbox: Sandbox) -> None:
    headers = {"Authorization": f"Token {API_KEY}"}
    default_sandbox.hold_foreign_job(30, at_upload=2)

    def upload() -> int:
        return requests.post(
            f"{default_sandbox.url}/v1/users/bulk_identify",
            json={"users": [{"user_id": "u-1"}]},
            headers=headers,
            timeout=5,
        ).status_code

    assert upload() == 202
    assert upload() == 409
    assert default_sandbox.stats()["conflicts_foreign"] == 1
    with pytest.raises(ValueError, match="at_upload"):
        default_sandbox.hold_foreign_job(1, at_upload=0)
