"""UserpilotClient over real loopback HTTP: the sandbox, scripted answers, TLS and a proxy.

The client knows HTTP and Userpilot's endpoints and nothing about Singer, so these tests call
it directly and check what reached the server: jobs, profiles, request counts and bytes.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from target_userpilot.errors import (
    AuthenticationError,
    ConfigurationError,
    EventRefused,
    JobTimeout,
    PayloadTooLarge,
    TransientError,
    Unconfirmed,
    UnexpectedAnswer,
    UserNotFound,
    UserpilotError,
    exit_code,
)
from target_userpilot.retry import RetryPolicy
from target_userpilot.sandbox import Sandbox
from target_userpilot.userpilot import transport
from target_userpilot.userpilot.client import UserpilotClient
from target_userpilot.userpilot.transport import _TokenAuth, parse_retry_after

from support.http_doubles import (
    Answer,
    Certificates,
    ConnectProxy,
    ScriptedServer,
    TlsFront,
    make_certificates,
    running,
)
from support.messages import API_KEY, users_messages
from support.runner import RunTarget

FAST = RetryPolicy(base_seconds=0.01, max_seconds=0.05, max_tries=5, poll_max_time=0.5)
UPLOAD = ("POST", "/v1/users/bulk_identify")
LIST = ("GET", "/v1/background_jobs")
FILENAME = "users-test-00001.ndjson"
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy, CA or .netrc of the machine running the tests leaks into them."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[UserpilotClient]:
    with_client = UserpilotClient(sandbox.url, API_KEY, retry=FAST, timeout=(2, 2))
    yield with_client
    with_client.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    with running(server):
        yield server


def scripted_client(server: ScriptedServer, **options: Any) -> UserpilotClient:
    options.setdefault("retry", FAST)
    return UserpilotClient(server.url, API_KEY, timeout=(2, 2), **options)


def job(job_id: str = "j-1", status: str = "queued", **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "filename": FILENAME, **fields}


# The bulk endpoints against the sandbox


def test_upload_returns_the_queued_job_and_its_rows_land(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    accepted = client.upload("users", batch_file, FILENAME)

    assert accepted["status"] == "queued"
    assert accepted["filename"] == FILENAME
    assert accepted["total_rows"] == 2
    assert sandbox.profiles("users")["u-1"]["metadata"] == {"plan": "pro"}
    assert set(sandbox.profiles("users")) == {"u-1", "u-2"}


def test_job_status_follows_the_job_to_completed(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    accepted = client.upload("users", batch_file, FILENAME)

    final = client.job_status(accepted["job_id"])

    assert final["job_id"] == accepted["job_id"]
    assert final["status"] == "completed"
    assert final["completed_rows"] == 2
    assert sandbox.stats()["status_polls"] == 1


def test_list_jobs_and_find_job_know_the_job_by_its_filename(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    accepted = client.upload("users", batch_file, FILENAME)

    assert [j["job_id"] for j in client.list_jobs()] == [accepted["job_id"]]
    found = client.find_job(FILENAME)
    assert found is not None
    assert found["job_id"] == accepted["job_id"]
    assert client.find_job("users-other-00001.ndjson") is None


def test_another_clients_job_is_waited_out_then_the_batch_is_uploaded(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.hold_foreign_job(0.6)
    started = time.monotonic()

    accepted = client.upload("users", batch_file, FILENAME, conflict_wait=30)

    assert time.monotonic() - started >= 0.6
    assert accepted["filename"] == FILENAME
    stats = sandbox.stats()
    assert stats["conflicts_foreign"] >= 1
    assert stats["uploads"] == 1
    assert set(sandbox.profiles("users")) == {"u-1", "u-2"}


def test_another_clients_job_past_the_wait_raises_job_timeout_naming_file_and_setting(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.hold_foreign_job(30)
    started = time.monotonic()

    with pytest.raises(JobTimeout) as stopped:
        client.upload("users", batch_file, FILENAME, conflict_wait=1)

    assert time.monotonic() - started < 15  # the foreign job holds the account for 30 s
    message = str(stopped.value)
    assert FILENAME in message
    assert "over 1 s" in message
    assert "job_timeout_seconds" in message
    assert exit_code(stopped.value) == 5
    assert sandbox.stats()["uploads"] == 0


def test_a_batch_too_large_raises_payload_too_large_once(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.set_faults(max_rows=1)

    with pytest.raises(PayloadTooLarge, match="HTTP 413"):
        client.upload("users", batch_file, FILENAME)

    assert sandbox.stats()["upload_attempts"] == 1
    assert sandbox.profiles("users") == {}


@pytest.mark.parametrize(("fault", "status"), [({}, 401), ({"forbidden": True}, 403)])
def test_a_refused_key_stops_at_once_without_retrying(
    sandbox: Sandbox, batch_file: str, fault: dict[str, Any], status: int
) -> None:
    sandbox.set_faults(**fault)
    key = API_KEY if fault else "wrong-key-7d1f"
    client = UserpilotClient(sandbox.url, key, retry=FAST)

    with pytest.raises(AuthenticationError, match=f"HTTP {status}") as refused:
        client.upload("users", batch_file, FILENAME)

    assert "api_key" in str(refused.value)
    assert key not in str(refused.value)
    assert exit_code(refused.value) == 3
    assert sandbox.stats()["requests"] == 1


def test_server_errors_are_retried_until_the_upload_lands_once(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.set_faults(error_rate=0.7, only="upload", seed=4)

    client.upload("users", batch_file, FILENAME)

    stats = sandbox.stats()
    assert stats["faults_injected"]["error"] >= 1
    assert stats["upload_attempts"] == stats["faults_injected"]["error"] + 1
    assert stats["uploads"] == 1
    assert set(sandbox.profiles("users")) == {"u-1", "u-2"}


def test_dropped_connections_are_retried_and_the_batch_lands_once(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.set_faults(drop_rate=0.7, only="upload", seed=4)

    client.upload("users", batch_file, FILENAME)

    stats = sandbox.stats()
    assert stats["faults_injected"]["drop"] >= 1
    assert stats["uploads"] == 1
    assert len(sandbox.jobs()) == 1
    assert set(sandbox.profiles("users")) == {"u-1", "u-2"}


def test_an_upload_whose_answer_timed_out_is_adopted_not_sent_again(
    sandbox: Sandbox, batch_file: str
) -> None:
    sandbox.set_faults(slow_rate=1.0, slow_seconds=1.0, only="upload")
    client = UserpilotClient(sandbox.url, API_KEY, retry=FAST, timeout=(2, 0.3))

    adopted = client.upload("users", batch_file, FILENAME)

    assert adopted["filename"] == FILENAME
    assert sandbox.stats()["upload_attempts"] == 1
    assert [j["job_id"] for j in sandbox.jobs()] == [adopted["job_id"]]


def test_status_polls_wait_out_failing_answers(
    client: UserpilotClient, sandbox: Sandbox, batch_file: str
) -> None:
    accepted = client.upload("users", batch_file, FILENAME)
    sandbox.set_faults(status_error_rate=0.6, seed=3)

    assert client.job_status(accepted["job_id"])["status"] == "completed"
    assert sandbox.stats()["faults_injected"]["status_error"] >= 1
    assert sandbox.stats()["upload_attempts"] == 1


def test_429_waits_retry_after_before_the_next_try_and_is_counted(
    scripted: ScriptedServer, batch_file: str
) -> None:
    scripted.answer(
        *UPLOAD,
        Answer(429, {"errors": [{"message": "Too many requests"}]}, {"Retry-After": "0.4"}),
        Answer(202, job()),
    )
    scripted.answer(*LIST, Answer(200, []))
    client = scripted_client(scripted)

    started = time.monotonic()
    accepted = client.upload("users", batch_file, FILENAME)

    assert accepted["job_id"] == "j-1"
    assert time.monotonic() - started >= 0.4
    assert client.rate_limited == 1
    assert len(scripted.requests_to(*UPLOAD)) == 2


# Answers of every shape


def test_an_empty_202_is_followed_through_the_jobs_list(
    scripted: ScriptedServer, batch_file: str
) -> None:
    scripted.answer(*UPLOAD, Answer(202, b""))
    scripted.answer(*LIST, Answer(200, [job("other", filename="x.ndjson"), job("j-7", "QUEUED")]))
    client = scripted_client(scripted)

    adopted = client.upload("users", batch_file, FILENAME)

    assert adopted["job_id"] == "j-7"
    assert adopted["status"] == "queued"
    assert len(scripted.requests_to(*UPLOAD)) == 1


@pytest.mark.parametrize("body", [b"", b"{}", b'{"message": "accepted"}', b"[]", b'"ok"'])
def test_an_acceptance_without_a_job_and_none_listed_is_a_clear_error_not_a_resend(
    scripted: ScriptedServer, batch_file: str, body: bytes
) -> None:
    scripted.answer(*UPLOAD, Answer(202, body))
    scripted.answer(*LIST, Answer(200, []))
    client = scripted_client(scripted)

    with pytest.raises(UnexpectedAnswer) as stopped:
        client.upload("users", batch_file, FILENAME)

    message = str(stopped.value)
    assert FILENAME in message
    assert "instead of a job object" in message
    assert "jobs list shows no job" in message
    assert exit_code(stopped.value) == 8
    assert len(scripted.requests_to(*UPLOAD)) == 1


def test_a_json_upload_accepted_without_a_job_is_a_clear_error(
    scripted: ScriptedServer, batch_file: str
) -> None:
    scripted.answer(*UPLOAD, Answer(202, b""))
    client = scripted_client(scripted, upload_format="json")

    with pytest.raises(UnexpectedAnswer, match="no filename to find its job by"):
        client.upload("users", batch_file, FILENAME)

    assert len(scripted.requests_to(*UPLOAD)) == 1
    assert scripted.requests_to(*LIST) == []


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"42",
        b"true",
        b'{"job_id": null}',
        b'{"job_id": ["j"]}',
        b'{"job_id": {"id": 1}}',
        b'{"job_id": true}',
        b'{"job_id": ""}',
        b'{"job_id": 17, "status": 5}',
        b'{"job_id": "j-1", "status": null}',
        b'{"errors": "none"}',
    ],
)
def test_no_upload_answer_shape_crashes_the_client(
    scripted: ScriptedServer, batch_file: str, body: bytes
) -> None:
    scripted.answer(*UPLOAD, Answer(202, body))
    scripted.answer(*LIST, Answer(200, [{"job_id": None}, "text", 3, job("j-9")]))
    client = scripted_client(scripted)

    try:
        answer = client.upload("users", batch_file, FILENAME)
    except UserpilotError:
        return  # a sentence, not an AttributeError, KeyError or TypeError
    assert isinstance(answer["job_id"], str)
    assert answer["job_id"]


def test_status_answers_that_are_no_job_are_polled_again_until_one_is(
    scripted: ScriptedServer,
) -> None:
    path = "/v1/background_jobs/j%3A1"
    scripted.answer(
        "GET",
        path,
        Answer(200, b""),
        Answer(200, []),
        Answer(200, {"status": "completed"}),
        Answer(200, {"job_id": "j:1"}),
        Answer(200, {"job_id": "j:1", "status": " COMPLETED "}),
    )
    client = scripted_client(scripted, retry=RetryPolicy(base_seconds=0.01, poll_max_time=5))

    final = client.job_status("j:1")

    assert final["status"] == "completed"
    assert len(scripted.requests_to("GET", path)) == 5


def test_status_answers_that_never_are_a_job_end_in_a_sentence_with_exit_8(
    scripted: ScriptedServer,
) -> None:
    scripted.answer("GET", "/v1/background_jobs/j-1", Answer(200, []))
    client = scripted_client(scripted)

    started = time.monotonic()
    with pytest.raises(UnexpectedAnswer) as stopped:
        client.job_status("j-1")

    # Polling ends after poll_max_time, not never; the slack is for a loaded machine.
    assert FAST.poll_max_time <= time.monotonic() - started < FAST.poll_max_time + 10
    message = str(stopped.value)
    assert message.startswith("Reading the status of job j-1 ")
    assert "failed" in message
    assert "a JSON array, not a job object" in message
    assert "api_url" in message
    assert exit_code(stopped.value) == 8


@pytest.mark.parametrize("status", ["COMPLETED", " Completed ", "Failed", "PROCESSING"])
def test_statuses_in_another_case_are_lower_cased(scripted: ScriptedServer, status: str) -> None:
    scripted.answer("GET", "/v1/background_jobs/j-1", Answer(200, job(status=status)))
    scripted.answer(*LIST, Answer(200, [job(status=status)]))
    client = scripted_client(scripted)

    assert client.job_status("j-1")["status"] == status.strip().lower()
    assert client.list_jobs()[0]["status"] == status.strip().lower()


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
def test_a_2xx_page_that_is_not_json_is_not_userpilot_and_the_upload_is_not_resent(
    scripted: ScriptedServer, batch_file: str, content_type: str
) -> None:
    page = b"<html><body>Please log in to the company proxy</body></html>"
    scripted.answer(*UPLOAD, Answer(200, page, {"Content-Type": content_type}))
    client = scripted_client(scripted)

    with pytest.raises(UnexpectedAnswer) as stopped:
        client.upload("users", batch_file, FILENAME)

    message = str(stopped.value)
    assert "not Userpilot's API" in message
    assert "was not repeated" in message
    assert not isinstance(stopped.value, TransientError)
    assert exit_code(stopped.value) == 8
    assert len(scripted.seen) == 1  # one upload, no retry, no lookup


def test_a_proxy_page_after_a_retry_still_stops_the_upload_at_once(
    scripted: ScriptedServer, batch_file: str
) -> None:
    scripted.answer(
        *UPLOAD,
        Answer(503, b"<html>503</html>", {"Content-Type": "text/html"}),
        Answer(200, b"<html>login</html>", {"Content-Type": "text/html"}),
        Answer(202, job()),
    )
    scripted.answer(*LIST, Answer(200, []))
    client = scripted_client(scripted)

    with pytest.raises(UnexpectedAnswer) as stopped:
        client.upload("users", batch_file, FILENAME)

    assert str(stopped.value).startswith("POST /v1/users/bulk_identify answered HTTP 200")
    assert len(scripted.requests_to(*UPLOAD)) == 2


def test_a_run_answered_by_a_proxy_page_stops_with_exit_8_after_one_upload(
    scripted: ScriptedServer, tmp_path: Path, run_target: RunTarget
) -> None:
    page = b"<html><body>Access denied by the web filter</body></html>"
    scripted.answer(*UPLOAD, Answer(200, page, {"Content-Type": "text/html"}))
    config = {"api_url": scripted.url, "api_key": API_KEY}

    run = run_target(config, users_messages(5), tmp_path=tmp_path, timeout=60)

    assert run.returncode == 8, run.stderr[-3000:]
    assert run.states == []
    assert "not Userpilot's API" in run.stderr
    assert "Traceback" not in run.stderr
    assert API_KEY not in run.stderr
    assert [(s.method, s.path) for s in scripted.seen] == [UPLOAD]


def test_a_json_upload_whose_answer_was_lost_is_sent_again_and_lands_once(
    tmp_path: Path, batch_file: str
) -> None:
    """JSON jobs have no filename to adopt them by: the batch goes again, after its own job."""
    patient = RetryPolicy(base_seconds=0.01, max_seconds=0.05, conflict_max_seconds=0.2)
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=120) as sandbox:  # 2 rows: 1 s
        sandbox.set_faults(slow_rate=1.0, slow_seconds=0.5, only="upload")
        client = UserpilotClient(
            sandbox.url, API_KEY, upload_format="json", retry=patient, timeout=(2, 0.2)
        )
        # The job of the lost answer holds the account for 1 s: the batch sent again meets
        # 409 until it ends, and is answered in time by then.
        threading.Timer(0.3, sandbox.set_faults).start()

        client.upload("users", batch_file, FILENAME, conflict_wait=10)

        assert sandbox.wait_idle(5)
        stats = sandbox.stats()
        assert stats["uploads"] == 2
        assert stats["conflicts_own"] >= 1
        assert set(sandbox.profiles("users")) == {"u-1", "u-2"}
        assert sandbox.profiles("users")["u-1"]["metadata"] == {"plan": "pro"}


# Import files: never posted twice on a guess

IMPORT = ("POST", "/v1/imports")
IMPORTS_LIST = ("GET", "/v1/imports")
EVENTS_FILE = "events-test-00001.ndjson"


@pytest.fixture
def events_file(tmp_path: Path) -> str:
    path = tmp_path / "events.ndjson"
    record = (
        '{"event_type":"track","user_id":"u-1","event_name":"paid","source":"backend-http",'
        '"inserted_at":"2023-01-01T00:00:00Z","metadata":{}}\n'
    )
    path.write_text(record)
    return str(path)


@pytest.mark.parametrize("status_at", ["background_jobs", "imports"])
def test_an_import_whose_answer_was_lost_is_found_in_a_job_list_and_adopted(
    events_file: str, status_at: str
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at=status_at) as sb:
        sb.set_faults(slow_rate=1.0, slow_seconds=1.0, only="upload")
        client = UserpilotClient(sb.url, API_KEY, retry=FAST, timeout=(2, 0.3))
        heard: list[bool] = []
        try:
            adopted = client.upload("events", events_file, EVENTS_FILE, reached=heard.append)
            final = client.job_status(adopted["job_id"])
        finally:
            client.close()

        assert adopted["filename"] == EVENTS_FILE
        assert final["status"] == "completed"
        assert sb.stats()["upload_attempts"] == 1
        assert len(sb.imported_events()) == 1
        assert heard == [True]


def test_an_import_found_nowhere_after_a_lost_answer_is_unconfirmed_not_sent_again(
    events_file: str,
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at="nowhere") as sb:
        sb.set_faults(slow_rate=1.0, slow_seconds=1.0, only="upload")
        client = UserpilotClient(sb.url, API_KEY, retry=FAST, timeout=(2, 0.3))
        try:
            with pytest.raises(Unconfirmed, match="lists no import job for that file"):
                client.upload("events", events_file, EVENTS_FILE)
        finally:
            client.close()

        assert sb.stats()["upload_attempts"] == 1
        assert len(sb.imported_events()) == 1


def test_an_import_is_posted_again_only_after_failures_that_prove_nothing_arrived(
    scripted: ScriptedServer, events_file: str
) -> None:
    scripted.answer(
        *IMPORT,
        Answer(429, {"errors": []}, {"Retry-After": "0.01"}),
        Answer(503, {"errors": []}, {"Retry-After": "0.01"}),
        Answer(202, job("i-1", filename=EVENTS_FILE)),
    )
    heard: list[bool] = []

    accepted = scripted_client(scripted).upload(
        "events", events_file, EVENTS_FILE, reached=heard.append
    )

    assert accepted["job_id"] == "i-1"
    assert len(scripted.requests_to(*IMPORT)) == 3
    assert scripted.requests_to(*LIST) == []
    assert heard == [True, False, True, False, True]


@pytest.mark.parametrize(
    "failure",
    [Answer(500, {"errors": []}), Answer(502, b""), Answer(503, b""), Answer(drop=True)],
    ids=["500", "502", "503 without Retry-After", "dropped"],
)
def test_an_import_that_may_have_arrived_is_looked_for_never_posted_again(
    scripted: ScriptedServer, events_file: str, failure: Answer
) -> None:
    scripted.answer(*IMPORT, failure, Answer(202, job("i-2", filename=EVENTS_FILE)))
    scripted.answer(*LIST, Answer(200, [job("other", filename="events-other.ndjson")]))
    heard: list[bool] = []

    with pytest.raises(Unconfirmed, match="may or may not have been imported"):
        scripted_client(scripted).upload("events", events_file, EVENTS_FILE, reached=heard.append)

    assert len(scripted.requests_to(*IMPORT)) == 1
    assert len(scripted.requests_to(*LIST)) == 1
    assert len(scripted.requests_to(*IMPORTS_LIST)) == 1  # 404 there: no list of imports
    assert heard == [True]


def test_a_job_list_that_cannot_be_read_is_no_proof_an_import_is_missing(
    scripted: ScriptedServer, events_file: str
) -> None:
    scripted.answer(*IMPORT, Answer(500, {"errors": []}))
    scripted.answer(*LIST, Answer(200, b"<html>Sign in</html>", {"Content-Type": "text/html"}))

    with pytest.raises(UnexpectedAnswer, match="not Userpilot's API"):
        scripted_client(scripted).upload("events", events_file, EVENTS_FILE)

    assert len(scripted.requests_to(*IMPORT)) == 1


@pytest.mark.parametrize(
    "refusal",
    [
        Answer(413, {"errors": [{"message": "too large"}]}),
        Answer(422, {"errors": [{"message": "bad file"}]}),
        Answer(401, {"errors": []}),
    ],
    ids=["413", "422", "401"],
)
def test_a_refused_import_tells_that_nothing_of_it_arrived(
    scripted: ScriptedServer, events_file: str, refusal: Answer
) -> None:
    scripted.answer(*IMPORT, refusal)
    heard: list[bool] = []

    with pytest.raises(UserpilotError):
        scripted_client(scripted).upload("events", events_file, EVENTS_FILE, reached=heard.append)

    assert heard == [True, False]


def test_find_import_looks_by_id_where_the_status_is_served_then_by_filename(
    events_file: str,
) -> None:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0, import_status_at="imports") as sb:
        client = UserpilotClient(sb.url, API_KEY, retry=FAST, timeout=(2, 2))
        try:
            accepted = client.upload("events", events_file, EVENTS_FILE)
            fresh = UserpilotClient(sb.url, API_KEY, retry=FAST, timeout=(2, 2))
            try:
                by_id = fresh.find_import("renamed.ndjson", accepted["job_id"])
                by_name = fresh.find_import(EVENTS_FILE)
                nowhere = fresh.find_import("never-sent.ndjson", "imports:jobs:missing")
            finally:
                fresh.close()
        finally:
            client.close()

    assert by_id is not None and by_id["status"] == "completed"
    assert by_name is not None and by_name["job_id"] == accepted["job_id"]
    assert nowhere is None


# Secrets


@pytest.mark.parametrize(
    "key",
    [
        f"{API_KEY}\n",
        f" {API_KEY}",
        f"{API_KEY}\r\nX-Evil: 1",
        f"{API_KEY}\x00",
        f"{API_KEY}é",
        f"{API_KEY}€",
    ],
)
def test_a_key_no_header_can_carry_is_refused_without_echoing_it(
    sandbox: Sandbox, key: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        UserpilotClient(sandbox.url, key)

    assert "cannot be sent as an HTTP header" in str(refused.value)
    assert API_KEY not in str(refused.value)
    assert exit_code(refused.value) == 2
    assert sandbox.stats()["requests"] == 0


@pytest.mark.parametrize("key", [f"{API_KEY}\n", f"{API_KEY}\u2019", f"{API_KEY}\r"])
def test_the_transport_never_lets_a_header_error_quote_the_key(sandbox: Sandbox, key: str) -> None:
    """Should a bad key get past the constructor, http.client's error (which quotes the
    header) still never reaches the caller."""
    client = UserpilotClient(sandbox.url, API_KEY)
    client.transport._auth = _TokenAuth(key)  # noqa: SLF001 - forces a key the constructor refuses

    with pytest.raises(ConfigurationError) as refused:
        client.list_jobs()

    text = str(refused.value) + repr(refused.value)
    assert "cannot be sent as an HTTP header" in text
    assert API_KEY not in text
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__


# Deletions


DELETE_USERS = ("DELETE", "/v1/users")


def test_delete_profiles_sends_the_ids_with_the_api_version(scripted: ScriptedServer) -> None:
    scripted.answer(*DELETE_USERS, Answer(202, {"message": "2 users scheduled for deletion"}))
    client = scripted_client(scripted)

    answer = client.delete_profiles("users", ["u-1", "u-2"])

    assert answer == {"message": "2 users scheduled for deletion"}
    (seen,) = scripted.requests_to(*DELETE_USERS)
    assert seen.json() == {"users": ["u-1", "u-2"]}
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-API-Version"] == "2020-09-22"
    assert seen.headers["Authorization"] == f"Token {API_KEY}"


def test_delete_companies_uses_the_companies_body(scripted: ScriptedServer) -> None:
    scripted.answer("DELETE", "/v1/companies", Answer(202, b""))
    client = scripted_client(scripted)

    assert client.delete_profiles("companies", ["c-1"]) == {}
    assert scripted.requests_to("DELETE", "/v1/companies")[0].json() == {"companies": ["c-1"]}


def test_a_rate_limited_deletion_waits_retry_after_then_goes_through(
    scripted: ScriptedServer,
) -> None:
    scripted.answer(
        *DELETE_USERS,
        Answer(429, {"errors": [{"message": "slow down"}]}, {"Retry-After": "0.3"}),
        Answer(503, b"<html>503</html>", {"Content-Type": "text/html"}),
        Answer(202, {"message": "scheduled"}),
    )
    client = scripted_client(scripted)

    started = time.monotonic()
    client.delete_profiles("users", ["u-1"])

    assert time.monotonic() - started >= 0.3
    assert client.rate_limited == 1
    assert len(scripted.requests_to(*DELETE_USERS)) == 3


def test_a_dropped_deletion_is_sent_again(scripted: ScriptedServer) -> None:
    scripted.answer(*DELETE_USERS, Answer(drop=True), Answer(202, b""))
    client = scripted_client(scripted)

    assert client.delete_profiles("users", ["u-1"]) == {}
    assert len(scripted.requests_to(*DELETE_USERS)) == 2


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [(413, PayloadTooLarge, 8), (401, AuthenticationError, 3), (403, AuthenticationError, 3)],
)
def test_deletion_refusals_raise_their_own_errors_at_once(
    scripted: ScriptedServer, status: int, error: type[UserpilotError], code: int
) -> None:
    scripted.answer(*DELETE_USERS, Answer(status, {"errors": [{"message": "no"}]}))
    client = scripted_client(scripted)

    with pytest.raises(error) as refused:
        client.delete_profiles("users", ["u-1", "u-2"])

    assert exit_code(refused.value) == code
    assert len(scripted.requests_to(*DELETE_USERS)) == 1


def test_another_4xx_on_a_deletion_stops_with_userpilots_message(scripted: ScriptedServer) -> None:
    scripted.answer(*DELETE_USERS, Answer(400, {"errors": [{"message": "X-API-Version missing"}]}))
    client = scripted_client(scripted)

    with pytest.raises(UserpilotError, match="X-API-Version missing") as refused:
        client.delete_profiles("users", ["u-1"])

    assert not isinstance(refused.value, EventRefused | TransientError)
    assert len(scripted.requests_to(*DELETE_USERS)) == 1


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"null", b'"no"', b'{"errors": "x"}', b'{"errors": [1, "a", null]}', b"<html>"],
)
def test_no_error_body_shape_crashes_the_client(scripted: ScriptedServer, body: bytes) -> None:
    scripted.answer(*DELETE_USERS, Answer(400, body, {"Content-Type": "application/json"}))
    client = scripted_client(scripted)

    with pytest.raises(UserpilotError, match="HTTP 400"):
        client.delete_profiles("users", ["u-1"])


# Events


TRACK = ("POST", "/v1/track")


def test_track_sends_one_event_with_the_api_version(scripted: ScriptedServer) -> None:
    scripted.answer(*TRACK, Answer(202, b""))
    client = scripted_client(scripted)

    client.track("u-1", "invoice_paid", {"amount": 12.5, "plan": "pró"})
    client.track("u-2", "seat_added", None)

    first, second = scripted.requests_to(*TRACK)
    assert first.json() == {
        "user_id": "u-1",
        "event_name": "invoice_paid",
        "metadata": {"amount": 12.5, "plan": "pró"},
    }
    assert second.json() == {"user_id": "u-2", "event_name": "seat_added"}
    assert first.headers["X-API-Version"] == "2020-09-22"
    assert first.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_refused_event_raises_event_refused_with_userpilots_message(
    scripted: ScriptedServer, status: int
) -> None:
    scripted.answer(*TRACK, Answer(status, {"errors": [{"message": "User not found"}]}))
    client = scripted_client(scripted)

    with pytest.raises(EventRefused, match=f"HTTP {status}.*User not found") as refused:
        client.track("u-1", "invoice_paid", None)

    assert len(scripted.requests_to(*TRACK)) == 1
    # Only a 404 says "no such user" (whatever its wording): the events lane tries it again.
    assert isinstance(refused.value, UserNotFound) == (status == 404)


@pytest.mark.parametrize(("status", "error"), [(401, AuthenticationError), (409, UserpilotError)])
def test_refusals_that_are_not_about_the_event_are_not_event_refused(
    scripted: ScriptedServer, status: int, error: type[UserpilotError]
) -> None:
    scripted.answer(*TRACK, Answer(status, {"errors": [{"message": "no"}]}))
    client = scripted_client(scripted)

    with pytest.raises(error) as refused:
        client.track("u-1", "invoice_paid", None)

    assert not isinstance(refused.value, EventRefused)


class RecordingPace:
    """A pace that owns its requests' timing: it hears each 429 and names the next slot."""

    def __init__(self, slot_in: float) -> None:
        self.slot_in = slot_in
        self.heard: list[float | None] = []

    def after_rate_limit(self, retry_after: float | None) -> float:
        self.heard.append(retry_after)
        return self.slot_in


class RecordingStop:
    """A stop that is never set and does not wait: it records each pause (simulated time)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(0.0 if timeout is None else timeout)
        return False


def test_a_rate_limited_event_is_sent_again_when_its_pace_says(scripted: ScriptedServer) -> None:
    """One place decides: the pace hears the 429 once, and its slot is the only wait (no
    Retry-After of the policy's on top of the pause the pace already takes)."""
    scripted.answer(
        *TRACK,
        Answer(429, {"errors": [{"message": "Too many requests"}]}, {"Retry-After": "0.3"}),
        Answer(503, b"<html>Service Unavailable</html>", {"Retry-After": "0"}),
        Answer(202, b""),
    )
    pace = RecordingPace(slot_in=7.0)
    stop = RecordingStop()
    client = scripted_client(scripted, pace=pace)

    client.track("u-1", "invoice_paid", None, stop=stop)

    assert pace.heard == [0.3]  # the 503 with Retry-After is not the pace's: no rate limit
    assert stop.waits[0] == 7.0
    assert 0.0 <= stop.waits[1] <= FAST.base_seconds / 2  # the policy's, for the 503
    assert client.rate_limited == 1
    assert len(scripted.requests_to(*TRACK)) == 3


@pytest.mark.parametrize(
    "answer",
    [
        Answer(500, {"errors": [{"message": "oops"}]}),
        Answer(502, b"<html>Bad Gateway</html>"),
        Answer(503, b"<html>Service Unavailable</html>"),
        Answer(504, b"<html>Gateway Timeout</html>"),
        Answer(drop=True),
    ],
    ids=["500", "502", "503-without-retry-after", "504", "dropped"],
)
def test_an_event_that_may_have_arrived_is_never_sent_twice(
    scripted: ScriptedServer, answer: Answer
) -> None:
    """Events are not idempotent: after the request left, only a failure that proves it was
    not taken (429, a 503 with Retry-After) is worth a second copy."""
    scripted.answer(*TRACK, answer, Answer(202, b""))
    client = scripted_client(scripted)

    with pytest.raises(Unconfirmed, match="no clear answer"):
        client.track("u-1", "invoice_paid", None)

    assert len(scripted.requests_to(*TRACK)) == 1


def test_an_event_whose_answer_comes_too_late_is_not_sent_again(scripted: ScriptedServer) -> None:
    # The answer comes after the client's read timeout; the server took the event.
    scripted.answer(*TRACK, Answer(202, b"", delay=1.0), Answer(202, b""))
    client = UserpilotClient(scripted.url, API_KEY, timeout=(2, 0.2), retry=FAST)

    with pytest.raises(Unconfirmed, match="timed out"):
        client.track("u-1", "invoice_paid", None)

    assert len(scripted.requests_to(*TRACK)) == 1


def test_an_event_that_could_not_connect_is_tried_again() -> None:
    client = UserpilotClient("http://127.0.0.1:9", API_KEY, timeout=(2, 2), retry=FAST)
    started = time.monotonic()

    with pytest.raises(TransientError, match="failed 5 times"):
        client.track("u-1", "invoice_paid", None)

    assert time.monotonic() - started < 5


def test_track_from_many_threads_uses_a_session_each_and_close_ends_them_all(
    scripted: ScriptedServer,
) -> None:
    scripted.answer(*TRACK, Answer(202, b""))
    client = scripted_client(scripted)
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        try:
            for n in range(15):
                client.track(f"u-{worker}", f"event-{n}", {"n": n})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert errors == []
    sent = {(s.json()["user_id"], s.json()["event_name"]) for s in scripted.requests_to(*TRACK)}
    assert sent == {(f"u-{w}", f"event-{n}") for w in range(6) for n in range(15)}
    assert len(client.transport._sessions) == 6  # noqa: SLF001 - one session per thread is the point
    sessions = list(client.transport._sessions)  # noqa: SLF001 - to check they are closed
    client.close()
    assert client.transport._sessions == []  # noqa: SLF001 - close() forgets them
    adapters = [adapter for s in sessions for adapter in s.adapters.values()]
    assert all(isinstance(a, HTTPAdapter) and not a.poolmanager.pools for a in adapters)


# Corporate networks: proxies, company CAs, and a .netrc that must not win


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"), ["userpilot.test", "localhost"])


@pytest.fixture
def tls_sandbox(sandbox: Sandbox, certificates: Certificates) -> Iterator[TlsFront]:
    front = TlsFront(certificates, sandbox.port)
    with running(front):
        yield front


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy(hosts={"userpilot.test": "127.0.0.1"})
    with running(server):
        yield server


def write_netrc(home: Path) -> None:
    """Credentials a developer might have for any host: requests would use them by default."""
    netrc = home / ".netrc"
    netrc.write_text(
        "machine userpilot.test login netrc-user password netrc-pass\n"
        "machine 127.0.0.1 login netrc-user password netrc-pass\n"
        "default login netrc-user password netrc-pass\n"
    )
    netrc.chmod(0o600)


@pytest.fixture
def corporate_network(
    proxy: ConnectProxy, certificates: Certificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ConnectProxy:
    """An egress proxy and a company CA in the environment, and a developer's .netrc."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca))
    write_netrc(tmp_path)
    return proxy


def test_https_goes_through_the_proxy_as_a_tunnel_and_the_proxy_never_sees_the_key(
    sandbox: Sandbox, tls_sandbox: TlsFront, corporate_network: ConnectProxy, batch_file: str
) -> None:
    proxy = corporate_network
    client = UserpilotClient(f"https://userpilot.test:{tls_sandbox.port}", API_KEY, retry=FAST)

    accepted = client.upload("users", batch_file, FILENAME)
    assert client.job_status(accepted["job_id"])["status"] == "completed"
    client.close()

    # The sandbox checked the token: .netrc's Basic credentials did not replace it.
    assert set(sandbox.profiles("users")) == {"u-1", "u-2"}
    assert sandbox.stats()["requests"] == 2
    (head,) = proxy.heads  # one tunnel, kept alive for both calls
    assert head.startswith(f"CONNECT userpilot.test:{tls_sandbox.port} HTTP/1.")
    seen = bytes(proxy.clear)
    assert len(seen) > 1000  # the upload crossed the proxy, encrypted
    for secret in (API_KEY.encode(), b"Authorization", b"netrc-pass", b"u-1", b"bulk_identify"):
        assert secret not in seen


def test_ssl_cert_file_is_honoured_like_requests_ca_bundle(
    sandbox: Sandbox,
    tls_sandbox: TlsFront,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))
    client = UserpilotClient(f"https://localhost:{tls_sandbox.port}", API_KEY, retry=FAST)

    assert client.list_jobs() == []
    assert sandbox.stats()["requests"] == 1


def test_an_unknown_ca_says_which_variables_name_a_company_ca(
    sandbox: Sandbox, tls_sandbox: TlsFront
) -> None:
    client = UserpilotClient(f"https://localhost:{tls_sandbox.port}", API_KEY, retry=FAST)

    with pytest.raises(TransientError) as failed:
        client.list_jobs()

    message = str(failed.value)
    assert "certificate verify failed" in message
    assert "REQUESTS_CA_BUNDLE" in message
    assert "SSL_CERT_FILE" in message
    assert sandbox.stats()["requests"] == 0


def test_loopback_requests_never_go_through_a_proxy(
    sandbox: Sandbox,
    proxy: ConnectProxy,
    batch_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    write_netrc(tmp_path)
    direct = UserpilotClient(sandbox.url, API_KEY, retry=FAST)

    accepted = direct.upload("users", batch_file, FILENAME)
    direct.job_status(accepted["job_id"])
    direct.close()

    assert proxy.heads == []
    assert set(sandbox.profiles("users")) == {"u-1", "u-2"}


def test_proxy_credentials_never_appear_in_an_error(
    batch_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy-user:proxy-s3cret@127.0.0.1:9")
    client = UserpilotClient("https://userpilot.test", API_KEY, retry=FAST, timeout=(1, 1))

    with pytest.raises(TransientError) as failed:
        client.list_jobs()

    assert "proxy-s3cret" not in str(failed.value)
    assert "proxy-user" not in str(failed.value)


#: A fixed wall clock for Retry-After dates (14 Nov 2023 22:13:20 UTC).
NOW = 1_700_000_000.0


def _http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("86400", 120.0),
        ("inf", 120.0),
        ("1e400", 120.0),
        ("nan", None),
        ("NaN", None),
        ("soon", None),
        ("", None),
        (_http_date(NOW + 30), 30.0),
        (_http_date(NOW - 30), 0.0),
        (_http_date(NOW + 86_400), 120.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # RFC 850, obsolete but allowed, and past
        ("Fri, 31 Feb 2025 99:99:99 GMT", None),
    ],
    ids=lambda value: repr(value) if isinstance(value, str) else None,
)
def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped_once(
    header: str, expected: float | None
) -> None:
    """The one parser: a single answer may not stall a lane for minutes, and a date counts."""
    assert parse_retry_after(header, now=lambda: NOW) == expected


def test_a_retry_after_date_is_measured_against_the_answers_own_date() -> None:
    """A server whose clock runs an hour ahead of ours still means 20 s, not the cap."""
    ahead = NOW + 3600
    response = requests.Response()
    response.headers["Retry-After"] = _http_date(ahead + 20)
    response.headers["Date"] = _http_date(ahead)
    assert transport._retry_after(response) == 20.0  # noqa: SLF001 - the headers it reads
    assert parse_retry_after(_http_date(ahead + 20), now=lambda: NOW) == 120.0
