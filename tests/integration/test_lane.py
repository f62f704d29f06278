"""The job lane (lanes/jobs.py) and what it learns of Userpilot's pace (lanes/pace.py).

The lane's timing runs in simulated time (``simulated.py``): a run and a sandbox on one
simulated clock, so notice delays and polls per job are in simulated seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.clock import SimulatedClock
from target_userpilot.lanes import jobs as lane
from target_userpilot.lanes.pace import JobPace, JobWindow, job_seconds

from support.simulated import add_rows, simulated_run, simulated_sandbox

# The pace


def test_before_any_job_the_pace_is_the_rows_per_minute_guess() -> None:
    pace = JobPace(1800)

    assert not pace.observed
    assert pace.predict(1800) == pytest.approx(60.0)


def test_the_pace_learns_rows_per_second_and_a_fixed_time_per_job() -> None:
    pace = JobPace(1800)
    for rows in (1000, 2000, 4000):
        pace.learn(rows, 1.5 + rows / 500)  # 1.5 s per job, 500 rows a second

    assert pace.observed
    assert pace.rate == pytest.approx(500)
    assert pace.fixed == pytest.approx(1.5)
    assert pace.predict(10_000) == pytest.approx(21.5)
    assert pace.rows_per_minute() == pytest.approx(30_000)


def test_jobs_of_one_size_put_all_the_time_on_the_rows() -> None:
    pace = JobPace(1800)
    pace.learn(1000, 2.0)
    pace.learn(1000, 2.0)

    assert pace.fixed == 0
    assert pace.predict(1000) == pytest.approx(2.0)


def test_a_fit_without_physical_sense_falls_back_to_time_per_row() -> None:
    pace = JobPace(1800)
    pace.learn(1000, 5.0)
    pace.learn(2000, 4.0)  # bigger job, shorter: noise, not a negative rate

    assert pace.rate > 0
    assert pace.fixed == 0


# What a completed job took: our own clock first, Userpilot's figures inside its bounds

#: A job seen running by a poll sent 1.3 s after the upload's answer, and final by one sent at
#: 1.5 s and answered at 1.51 s.
WINDOW = JobWindow(running_at=1.3, asked_at=1.5, answered_at=1.51)


def test_a_figure_inside_what_the_polls_prove_is_taken() -> None:
    assert job_seconds(WINDOW, (1.43, None)) == 1.43


@pytest.mark.parametrize(
    ("figure", "reading"),
    [
        (1430, "milliseconds"),
        (0, "whole seconds, rounded to 0"),
        (1, "whole seconds, rounded down below the last running poll"),
        (1.505, "the time since creation at the moment of asking"),
        (-3.0, "negative"),
    ],
)
def test_a_figure_outside_the_bounds_gives_way_to_our_own_clock(
    figure: float, reading: str
) -> None:
    assert job_seconds(WINDOW, (figure, None)) == pytest.approx(1.405), reading


def test_the_job_timestamps_are_checked_the_same_way() -> None:
    assert job_seconds(WINDOW, (1430, 1.4)) == 1.4
    assert job_seconds(WINDOW, (1430, 2.0)) == pytest.approx(1.405)


def test_only_a_window_with_a_running_poll_in_its_second_half_proves_the_pace() -> None:
    assert WINDOW.tight
    assert not JobWindow(running_at=0.0, asked_at=1.0, answered_at=1.01).tight
    assert not JobWindow(running_at=0.4, asked_at=1.0, answered_at=1.01).tight
    pace = JobPace(1800)
    pace.learn(10, 0.5, proven=False)
    assert pace.observed and not pace.proven
    pace.learn(1000, 1.1)
    assert pace.proven


# The lane against undocumented readings of elapsed_time, in simulated time


@pytest.mark.parametrize(
    ("elapsed_time", "job_times"),
    [
        ("milliseconds", "exact"),
        ("rounded", "whole_seconds"),
        ("since_creation", "exact"),
        ("since_creation", "whole_seconds"),
    ],
)
def test_jobs_are_noticed_soon_whatever_elapsed_time_means(
    tmp_path: Path, elapsed_time: str, job_times: str
) -> None:
    """The issue's case: a 10-row job, then a users job of about 1.5 s. Read as seconds, one
    elapsed_time in milliseconds made the users job wait minutes for its first poll."""
    clock = SimulatedClock()
    options = {"elapsed_time": elapsed_time, "job_times": job_times}
    with simulated_sandbox(clock, rows_per_minute=60_000, **options) as sandbox:
        run = simulated_run(clock, sandbox, tmp_path, [])
        try:
            add_rows(run, "companies", range(10))  # a small job first: its pace says little
            run.buffer.flush("companies")
            add_rows(run, "users", range(1500))
            run.finish()
        finally:
            run.close()
        timings = sandbox.stats()["job_timings"]

    assert [t["rows"] for t in timings] == [10, 1500]
    delays = [t["first_seen_final_at"] - t["completed_at"] for t in timings]
    assert max(delays) < 1.0, delays  # simulated seconds, not the minutes it took
    assert max(t["polls"] for t in timings) <= 6
    assert clock.stalls == 0


def test_every_wait_is_capped_by_max_poll_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even the half-way poll of a job predicted to take hours."""
    pace = JobPace(1)  # one row a minute: 10,000 rows take a week
    pace.learn(10, 600.0)
    batch = SealedBatch("users", "users", "users.ndjson", rows=10_000, bytes=5_000_000)
    running = lane._Running({"job_id": "j"}, batch, uploaded=100.0)  # noqa: SLF001
    waiter = lane.JobLane.__new__(lane.JobLane)
    waiter.pace = pace

    assert waiter._next_wait(running, None, 100.0) == lane.MAX_POLL_INTERVAL  # noqa: SLF001
    monkeypatch.setattr(lane, "MAX_POLL_INTERVAL", 2.0)
    assert waiter._next_wait(running, None, 100.0) == 2.0  # noqa: SLF001


# The lane against a sandbox much faster than rows_per_minute says, in simulated time


def test_job_ends_are_noticed_soon_once_the_pace_is_learned(tmp_path: Path) -> None:
    """Userpilot 40x faster than the target is told: after the first job, the lane polls just
    after each predicted end, so ends are noticed within a few hundredths of a second, in few
    polls."""
    clock = SimulatedClock()
    with simulated_sandbox(clock, rows_per_minute=72_000) as sandbox:
        run = simulated_run(
            clock, sandbox, tmp_path, [], batch_size_rows=2000, rows_per_minute=1800
        )
        try:
            add_rows(run, "users", range(12_000))
            run.finish()
        finally:
            run.close()
        timings = sandbox.stats()["job_timings"]

    assert [t["rows"] for t in timings] == [2000] * 6
    later = timings[1:]
    delays = [t["first_seen_final_at"] - t["completed_at"] for t in later]
    # Each job takes about 1.7 s (rows_per_minute would say 67 s): noticed within 0.1 s.
    assert max(delays) <= 0.1, delays
    assert max(t["polls"] for t in later) <= 3
    assert run.pace.rows_per_minute() == pytest.approx(72_000, rel=0.05)
    assert clock.stalls == 0


def test_the_first_job_trusts_its_own_progress_over_rows_per_minute(tmp_path: Path) -> None:
    """The issue's case: a poll sees the first job mostly done; the next poll comes near its
    end, not when rows_per_minute (far slower) would have it end."""
    clock = SimulatedClock()
    with simulated_sandbox(clock, rows_per_minute=48_000) as sandbox:
        run = simulated_run(
            clock, sandbox, tmp_path, [], batch_size_rows=1000, rows_per_minute=1800
        )
        try:
            add_rows(run, "users", range(1000))
            run.finish()
        finally:
            run.close()
        (job,) = sandbox.stats()["job_timings"]

    # rows_per_minute alone would have put the end 33 s away; the job took 1.25 s.
    assert job["first_seen_final_at"] - job["completed_at"] < 0.5
    assert clock.stalls == 0
