"""The job lane (lanes/jobs.py) and what it learns of Userpilot's pace (lanes/pace.py)."""

from __future__ import annotations

import statistics

import pytest
from conftest import API_KEY, run_target, users_messages

from target_userpilot.lanes.pace import JobPace
from target_userpilot.sandbox import Sandbox

# The pace


def test_before_any_job_the_pace_is_the_rows_per_minute_guess():
    pace = JobPace(1800)

    assert not pace.observed
    assert pace.predict(1800) == pytest.approx(60.0)


def test_the_pace_learns_rows_per_second_and_a_fixed_time_per_job():
    pace = JobPace(1800)
    for rows in (1000, 2000, 4000):
        pace.learn(rows, 1.5 + rows / 500)  # 1.5 s per job, 500 rows a second

    assert pace.observed
    assert pace.rate == pytest.approx(500)
    assert pace.fixed == pytest.approx(1.5)
    assert pace.predict(10_000) == pytest.approx(21.5)
    assert pace.rows_per_minute() == pytest.approx(30_000)


def test_jobs_of_one_size_put_all_the_time_on_the_rows():
    pace = JobPace(1800)
    pace.learn(1000, 2.0)
    pace.learn(1000, 2.0)

    assert pace.fixed == 0
    assert pace.predict(1000) == pytest.approx(2.0)


def test_a_fit_without_physical_sense_falls_back_to_time_per_row():
    pace = JobPace(1800)
    pace.learn(1000, 5.0)
    pace.learn(2000, 4.0)  # bigger job, shorter: noise, not a negative rate

    assert pace.rate > 0
    assert pace.fixed == 0


# The lane against a sandbox much faster than rows_per_minute says


def test_job_ends_are_noticed_soon_once_the_pace_is_learned(tmp_path):
    """Userpilot 40x faster than the target is told: after the first job, the lane polls just
    after each predicted end, so ends are noticed within a few tenths of a second, in few polls."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=72_000) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "batch_size_rows": 2000,
            "rows_per_minute": 1800,
        }
        run = run_target(config, users_messages(12_000), tmp_path=tmp_path)
        timings = sandbox.stats()["job_timings"]

    assert run.returncode == 0, run.stderr[-3000:]
    later = [t for t in timings[1:] if t["first_seen_final_at"] is not None]
    assert len(later) >= 5
    delays = [t["first_seen_final_at"] - t["completed_at"] for t in later]
    # Each job takes about 1.7 s (rows_per_minute would say 67 s): noticed within 0.3 s.
    assert statistics.median(delays) <= 0.3, delays
    assert max(t["polls"] for t in later) <= 4
    assert run.summary["userpilot_rows_per_minute"] == pytest.approx(72_000, rel=0.3)


def test_the_first_job_trusts_its_own_progress_over_rows_per_minute(tmp_path):
    """The issue's case: a poll sees the first job mostly done; the next poll comes near its
    end, not when rows_per_minute (far slower) would have it end."""
    with Sandbox(port=0, api_key=API_KEY, rows_per_minute=48_000) as sandbox:
        config = {
            "api_url": sandbox.url,
            "api_key": API_KEY,
            "batch_size_rows": 1000,
            "rows_per_minute": 1800,
        }
        run = run_target(config, users_messages(1000), tmp_path=tmp_path)
        (job,) = sandbox.stats()["job_timings"]

    assert run.returncode == 0, run.stderr[-3000:]
    # rows_per_minute alone would have put the end 33 s away.
    assert job["first_seen_final_at"] - job["completed_at"] < 1.0
