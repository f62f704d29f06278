"""The fault matrix: whatever the network or Userpilot does, the load lands exactly.

One multi-job pipeline (3,000 users in six jobs, then 40 companies) runs once cleanly, then
under each fault alone and under all of them at once. Every faulty run must leave the sandbox
exactly as the clean run did, exit 0, never run two jobs at once (`conflicts_own == 0`) and stay
within a small number of extra requests per injected fault: retries are bounded, and a failed
status poll is never answered by uploading again.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from target_userpilot.retry import RetryPolicy
from target_userpilot.sandbox import Sandbox

from support.messages import API_KEY, COMPANY_SCHEMA, USER_SCHEMA, record, schema, state, user
from support.runner import run_process

N_USERS = 3000
N_COMPANIES = 40
BATCH_ROWS = 500
#: Six user jobs and one company job.
N_JOBS = N_USERS // BATCH_ROWS + 1


def _pipeline() -> list[dict[str, Any]]:
    messages = [schema("users", USER_SCHEMA, ["id"])]
    for i in range(N_USERS):
        messages.append(record("users", user(i)))
        if (i + 1) % 500 == 0:
            messages.append(state({"bookmarks": {"users": i}}))
    messages.append(schema("companies", COMPANY_SCHEMA, ["company_id"]))
    messages.extend(
        record("companies", {"company_id": f"c-{c}", "name": f"Company {c}", "employees": c})
        for c in range(N_COMPANIES)
    )
    messages.append(state({"bookmarks": {"users": N_USERS - 1, "companies": "done"}}))
    return messages


PIPELINE = _pipeline()


def _config(sandbox: Sandbox) -> dict[str, Any]:
    return {
        "api_url": sandbox.url,
        "api_key": API_KEY,
        "batch_size_rows": BATCH_ROWS,
        # The sandbox completes jobs at once: tell the client so it polls after 0.2 s, not 1 s.
        "rows_per_minute": 600_000,
        # Short enough that the sandbox's slow answers (2 s) time out.
        "request_timeout_seconds": 1,
    }


@dataclass
class Outcome:
    returncode: int
    stderr: str
    states: list[Any]
    users: dict[str, dict[str, Any]]
    companies: dict[str, dict[str, Any]]
    stats: dict[str, Any]
    log: list[dict[str, Any]]
    seconds: float


def _load(tmp_path: Path, faults: dict[str, Any] | None = None, hold: float = 0.0) -> Outcome:
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        if faults:
            sandbox.set_faults(**faults)
        if hold:
            # Another client's job starts as our third batch arrives: in mid-run, wherever
            # the target's start-up time puts that.
            sandbox.hold_foreign_job(hold, at_upload=3)
        started = time.monotonic()
        run = run_process(_config(sandbox), PIPELINE, tmp_path=tmp_path, timeout=90)
        seconds = time.monotonic() - started
        return Outcome(
            run.returncode,
            run.stderr,
            run.states,
            sandbox.profiles("users"),
            sandbox.profiles("companies"),
            sandbox.stats(),
            sandbox.request_log(),
            seconds,
        )


# name: (faults, seconds another client's job holds the account from our third upload)
SCENARIOS: dict[str, tuple[dict[str, Any], float]] = {
    "clean": ({}, 0.0),
    "5xx": ({"error_rate": 0.3, "seed": 1}, 0.0),
    # Retry-After of 1 s: longer than the client's first backoff (at most 0.5 s), so a client
    # that ignored the header would come back too early.
    "429-with-retry-after": ({"rate_limit_rate": 0.15, "retry_after": 1, "seed": 3}, 0.0),
    "dropped-connections": ({"drop_rate": 0.3, "seed": 3}, 0.0),
    "slow-answers": ({"slow_rate": 0.25, "slow_seconds": 2, "seed": 6}, 0.0),
    "another-clients-job": ({}, 1.5),
    "failing-status-polls": ({"status_error_rate": 0.5, "seed": 5}, 0.0),
    "all-at-once": (
        {
            "error_rate": 0.06,
            "rate_limit_rate": 0.06,
            "retry_after": 0.5,
            "drop_rate": 0.06,
            "slow_rate": 0.06,
            "slow_seconds": 2,
            "status_error_rate": 0.1,
            "seed": 3,
        },
        1.0,
    ),
    # The sandbox creates the job, then answers after the client's 1 s read timeout.
    "slow-uploads": ({"slow_rate": 0.5, "slow_seconds": 2, "only": "upload", "seed": 8}, 0.0),
}
#: Each fault alone, then all of them at once.
MATRIX = [
    "5xx",
    "429-with-retry-after",
    "dropped-connections",
    "slow-answers",
    "another-clients-job",
    "failing-status-polls",
    "all-at-once",
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every scenario's run, side by side: the runs mostly wait (backoff, Retry-After, slow
    answers), so running them at once keeps the module to the time of the slowest run."""
    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        futures = {
            name: pool.submit(_load, tmp_path_factory.mktemp(name), faults, hold)
            for name, (faults, hold) in SCENARIOS.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def clean(outcomes: dict[str, Outcome]) -> Outcome:
    """The pipeline without faults: what every faulty run must reproduce."""
    outcome = outcomes["clean"]
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert len(outcome.users) == N_USERS
    assert len(outcome.companies) == N_COMPANIES
    assert outcome.stats["jobs"] == N_JOBS
    assert outcome.stats["upload_attempts"] == N_JOBS
    return outcome


def _injected(outcome: Outcome) -> int:
    return sum(outcome.stats["faults_injected"].values())


def _assert_lands_like_the_clean_run(outcome: Outcome, clean: Outcome) -> None:
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert outcome.users == clean.users
    assert outcome.companies == clean.companies
    assert outcome.states[-1] == clean.states[-1]
    stats = outcome.stats
    assert stats["conflicts_own"] == 0  # never two jobs of ours at once
    assert stats["uploads"] == N_JOBS  # no batch accepted twice
    assert all(job["status"] == "completed" for job in stats["job_timings"])


@pytest.mark.parametrize("name", MATRIX)
def test_load_under_faults_lands_exactly_as_a_clean_run(
    name: str, outcomes: dict[str, Outcome], clean: Outcome
) -> None:
    faults, hold = SCENARIOS[name]
    outcome = outcomes[name]

    _assert_lands_like_the_clean_run(outcome, clean)
    injected = _injected(outcome)
    if faults:
        assert injected >= 2, f"the seed injected only {injected} faults: the test proves nothing"
    if hold:
        assert outcome.stats["conflicts_foreign"] >= 1
    # No hammering: each injected fault and each 409 cost at most one retry plus one lookup
    # of the job by filename; the clean run's requests are the floor.
    extra = outcome.stats["requests"] - clean.stats["requests"]
    assert extra <= 2 * (injected + outcome.stats["conflicts_foreign"]), (
        f"{outcome.stats['requests']} requests for {injected} faults "
        f"(clean run: {clean.stats['requests']})"
    )


def test_retry_after_is_waited_before_the_next_request(
    outcomes: dict[str, Outcome], clean: Outcome
) -> None:
    outcome = outcomes["429-with-retry-after"]

    _assert_lands_like_the_clean_run(outcome, clean)
    log = outcome.log
    limited = [n for n, entry in enumerate(log) if entry["status"] == 429]
    assert len(limited) >= 3
    for n in limited:
        assert n + 1 < len(log), "the run ended on a 429"
        waited = log[n + 1]["at"] - log[n]["at"]
        assert waited >= 1.0, f"request {n + 1} came {waited:.2f} s after a 429 (Retry-After: 1)"


def test_failed_status_polls_are_retried_never_answered_by_uploading_again(
    outcomes: dict[str, Outcome], clean: Outcome
) -> None:
    outcome = outcomes["failing-status-polls"]

    _assert_lands_like_the_clean_run(outcome, clean)
    assert outcome.stats["faults_injected"]["status_error"] >= 3
    assert outcome.stats["upload_attempts"] == N_JOBS
    uploads = [e for e in outcome.log if e["method"] == "POST"]
    assert len(uploads) == N_JOBS


def test_upload_that_timed_out_is_adopted_not_sent_again(
    outcomes: dict[str, Outcome], clean: Outcome
) -> None:
    """The sandbox creates the job, then answers too late: the client must find that job by its
    filename instead of uploading the batch a second time."""
    outcome = outcomes["slow-uploads"]

    _assert_lands_like_the_clean_run(outcome, clean)
    slow = outcome.stats["faults_injected"]["slow"]
    assert slow >= 2
    assert outcome.stats["upload_attempts"] == N_JOBS  # every timed-out upload was adopted
    assert outcome.stderr.count("from the interrupted upload of") == slow
    assert "timed out (ReadTimeout)" in outcome.stderr


def test_retries_give_up_after_a_bounded_number_of_tries_with_a_clear_message(
    tmp_path: Path,
) -> None:
    """Every call answered 429 with Retry-After: 0, so the tries come fast: the run must still
    stop after the policy's tries, not hammer forever."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
        sandbox.set_faults(rate_limit_rate=1.0, retry_after=0)
        run = run_process(_config(sandbox), PIPELINE[:600], tmp_path=tmp_path, timeout=60)
        stats = sandbox.stats()

    assert run.returncode == 9, run.stderr[-3000:]  # its own code: Userpilot unreachable
    assert stats["requests"] == RetryPolicy().max_tries
    assert stats["uploads"] == 0
    assert run.states == []
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert "failed 8 times" in stopped[0]
    assert "HTTP 429" in stopped[0]
    assert "rerun" in stopped[0]


# The sandbox features these tests rely on.


def test_a_job_past_job_timeout_seconds_stops_the_run_naming_the_job(tmp_path: Path) -> None:
    """Exit 5 for our own slow job (another client's job: tests/integration/test_load.py)."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=600) as sandbox:  # 100 rows: 10 s
        config = _config(sandbox) | {"job_timeout_seconds": 1}
        run = run_process(config, [*PIPELINE[:101], state({"n": 100})], tmp_path=tmp_path)
        (job,) = sandbox.jobs()

    assert run.returncode == 5, run.stderr[-3000:]
    stopped = [line for line in run.stderr.splitlines() if "target-userpilot stopped:" in line]
    assert len(stopped) == 1
    assert f"Userpilot job {job['job_id']} (stream 'users', 100 users rows)" in stopped[0]
    assert "job_timeout_seconds" in stopped[0]
    assert "rerun from the last STATE" in stopped[0]
    assert job["status"] != "completed"
    assert run.states == []
    assert "Traceback" not in run.stderr
