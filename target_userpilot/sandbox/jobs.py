"""The bulk job lifecycle: one job at a time, scheduled on acceptance, advanced by the clock.

Job state is never advanced by a background worker. Every HTTP request and every Python call
first brings the board up to date with the clock (`JobBoard.advance`): jobs whose end time has
passed become final and their rows are applied to the profiles, in upload order. A job's whole
life is therefore decided when it is accepted, which keeps the emulator deterministic and free
of timing races of its own. Another client's job ("foreign") occupies the account the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from target_userpilot.sandbox.clock import Clock
from target_userpilot.sandbox.payloads import OBJECTS, ImportFile, Upload
from target_userpilot.sandbox.store import ProfileStore

# Phases before processing take this share of a job's duration each, but never longer than the
# cap: long jobs then spend almost all their time in `processing`, as real ones do.
_PHASE_SHARE = 0.05
_PHASE_CAP_SECONDS = 0.5
_JOB_ID_PREFIX = "bulk:jobs:NX-sandbox:"
#: The object of an Import API job (`POST /v1/imports`): event records, not profile rows.
IMPORTS = "imports"
#: Where an import job's status can be read (Userpilot does not say: both readings are served).
IMPORT_STATUS_PLACES = ("background_jobs", "imports", "nowhere")


#: How the status call's undocumented `elapsed_time` may read (`JobBoard.elapsed_time`):
#: seconds from acceptance to the end (to now while running), the same in milliseconds, in
#: whole seconds rounded, or the seconds since creation at the moment of asking, even once the
#: job is final. Userpilot documents none of them; a client must cope with each.
ELAPSED_READINGS = ("seconds", "milliseconds", "rounded", "since_creation")
#: How `start_time` and `end_time` read: to the millisecond, or cut to whole seconds.
TIME_READINGS = ("exact", "whole_seconds")


def check_readings(elapsed_time: str, job_times: str) -> None:
    """Refuse a reading the sandbox does not know, before anything changes."""
    if elapsed_time not in ELAPSED_READINGS:
        raise ValueError(
            f"elapsed_time must be one of {', '.join(ELAPSED_READINGS)}, got {elapsed_time!r}"
        )
    if job_times not in TIME_READINGS:
        raise ValueError(f"job_times must be one of {', '.join(TIME_READINGS)}, got {job_times!r}")


def check_rate(rows_per_minute: float | None) -> float:
    """A processing rate as a float; 0 (or None) means jobs complete at once."""
    rate = float(rows_per_minute or 0.0)
    if rate < 0:
        raise ValueError(f"rows_per_minute must be >= 0, got {rows_per_minute!r}")
    return rate


@dataclass
class Job:
    """One bulk job. Its schedule is fixed on acceptance; `status` is set once it is final."""

    job_id: str
    object: str
    rows: list[dict[str, Any]]
    total_rows: int
    filename: str | None
    file_size: int
    accepted: float
    queued_end: float
    processing_start: float
    end: float
    will_fail: bool = False
    foreign: bool = False
    rows_base: int = 0  # rows already done at processing_start (non-zero after a reschedule)
    status: str | None = None
    polls: int = 0
    first_seen_final: float | None = None
    #: Why the job fails (a malformed import line), if it must.
    error: str | None = None

    @property
    def is_import(self) -> bool:
        """An Import API job, whose rows are event records."""
        return self.object == IMPORTS

    def phase(self, now: float) -> str:
        """The status at `now`, for a job that is not final yet."""
        if now < self.queued_end:
            return "queued"
        if now < self.processing_start:
            return "validating"
        return "processing"

    def rows_done(self, now: float) -> int:
        """Rows processed by `now`, growing linearly through the processing phase."""
        if self.status == "failed":
            return 0
        if self.status == "completed" or now >= self.end:
            return self.total_rows
        if now < self.processing_start:
            return 0
        span = self.end - self.processing_start
        share = (now - self.processing_start) / span if span > 0 else 1.0
        return self.rows_base + int((self.total_rows - self.rows_base) * share)

    def seen(self, now: float) -> None:
        """Note the first time a client was shown the job's final status."""
        if self.status is not None and self.first_seen_final is None:
            self.first_seen_final = now


class JobBoard:
    """Every job of the account, ours and foreign, and the rate they are processed at.

    Plain data without a lock of its own: the account calls it under its lock.
    """

    def __init__(self, store: ProfileStore, clock: Clock, rows_per_minute: float | None) -> None:
        self.store = store
        self.clock = clock
        self.rows_per_minute = check_rate(rows_per_minute)
        #: Whether import jobs and bulk jobs take turns (one job of either kind at a time, as
        #: assumed), or each kind has a lane of its own.
        self.imports_share_lane = True
        #: Where import jobs' status is served: see `IMPORT_STATUS_PLACES`.
        self.import_status_at = "background_jobs"
        self.elapsed_time = "seconds"
        self.job_times = "exact"
        self.clear()

    def set_import_rules(self, share_lane: bool | None, status_at: str | None) -> None:
        """Change how import jobs relate to bulk jobs and where their status is read."""
        if share_lane is not None and not isinstance(share_lane, bool):
            raise ValueError(f"share_lane must be true or false, got {share_lane!r}")
        if status_at is not None and status_at not in IMPORT_STATUS_PLACES:
            raise ValueError(
                f"status_at must be one of {', '.join(IMPORT_STATUS_PLACES)}, got {status_at!r}"
            )
        if share_lane is not None:
            self.imports_share_lane = share_lane
        if status_at is not None:
            self.import_status_at = status_at

    def conflicting(self, obj: str) -> Job | None:
        """The running job that a new job of `obj` must wait for (409), if any.

        Bulk jobs wait for any bulk job, ours or another client's; import jobs likewise for
        import jobs. With `imports_share_lane`, either kind waits for the other too.
        """
        importing = obj == IMPORTS
        for job in self.jobs:
            if job.status is not None:
                continue
            if self.imports_share_lane or job.is_import == importing:
                return job
        return None

    def status_visible(self, job: Job, place: str) -> bool:
        """Whether a status call at `place` ("background_jobs" or "imports") knows `job`."""
        if not job.is_import:
            return place == "background_jobs"
        return self.import_status_at == place

    def clear(self) -> None:
        """Forget every job and pending hold (the rate stays)."""
        self.jobs: list[Job] = []
        self.by_id: dict[str, Job] = {}
        self.pending_holds: list[tuple[int, float]] = []  # (upload attempt, seconds)

    def advance(self, now: float) -> None:
        """Make every job whose end has passed final, applying completed jobs' rows in order."""
        pending = [job for job in self.jobs if job.status is None and job.end <= now]
        for job in sorted(pending, key=lambda j: j.end):
            job.status = "failed" if job.will_fail or job.error else "completed"
            if job.status == "completed" and job.is_import:
                self.store.import_records(job.rows, self.clock.iso(job.end), job.job_id)
            elif job.status == "completed":
                for row in job.rows:
                    self.store.merge(job.object, row)
            job.rows = []  # applied or discarded: no reason to keep them in memory

    def running(self, foreign: bool) -> Job | None:
        """The job of ours (or the foreign one) that has not ended, if any."""
        return next((j for j in self.jobs if j.status is None and j.foreign == foreign), None)

    def next_end(self) -> float | None:
        """When the next running job ends by the clock; None when none runs."""
        ends = [job.end for job in self.jobs if job.status is None]
        return min(ends) if ends else None

    def _schedule(self, rows: int, now: float) -> tuple[float, float, float]:
        """Queued end, processing start and end for a job of `rows` accepted at `now`."""
        rate = self.rows_per_minute
        duration = rows / rate * 60 if rate else 0.0
        phase = min(duration * _PHASE_SHARE, _PHASE_CAP_SECONDS)
        return now + phase, now + 2 * phase, now + duration

    def accept(self, obj: str, upload: Upload | ImportFile, now: float, will_fail: bool) -> Job:
        """Start a job for an accepted upload; the caller checked that none conflicts.

        An import file with a malformed line is accepted all the same, and its job fails.
        """
        problem = getattr(upload, "problem", None)
        if problem:
            total = sum(1 for line in upload.data.split(b"\n") if line.strip())
        else:
            total = len(upload.rows)
        queued_end, processing_start, end = self._schedule(total, now)
        prefix = "imports:jobs:NX-sandbox:" if obj == IMPORTS else _JOB_ID_PREFIX
        job = Job(
            job_id=f"{prefix}{uuid.uuid4()}",
            object=obj,
            rows=upload.rows,
            error=problem,
            total_rows=total,
            filename=upload.filename,
            file_size=upload.file_size,
            accepted=now,
            queued_end=queued_end,
            processing_start=processing_start,
            end=end,
            will_fail=will_fail,
        )
        self.jobs.append(job)
        self.by_id[job.job_id] = job
        return job

    def set_rows_per_minute(self, rows_per_minute: float | None, now: float) -> None:
        """Change the rate; a running job finishes its remaining rows at the new rate."""
        rate = check_rate(rows_per_minute)
        self.advance(now)
        self.rows_per_minute = rate
        for job in self.jobs:
            if job.status is not None or job.foreign:
                continue
            done = job.rows_done(now)
            if not rate:
                job.queued_end = min(job.queued_end, now)
                job.processing_start = min(job.processing_start, now)
                job.end = now
                continue
            start = max(now, job.processing_start)
            job.rows_base = done
            job.processing_start = start
            job.end = start + (job.total_rows - done) / rate * 60

    def hold_foreign_job(self, seconds: float, at_upload: int | None, attempts: int) -> None:
        """Let another client's job occupy the account for `seconds` from now, or from the
        arrival of the `at_upload`-th upload attempt (`attempts` have arrived so far)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        if at_upload is not None and (
            isinstance(at_upload, bool) or not isinstance(at_upload, int) or at_upload < 1
        ):
            raise ValueError(f"at_upload must be an integer >= 1, got {at_upload!r}")
        if at_upload is not None and at_upload > attempts:
            self.pending_holds.append((at_upload, float(seconds)))
            return
        self._hold(float(seconds), self.clock.now())

    def upload_attempt_arrived(self, attempts: int, now: float) -> None:
        """Start the holds that were waiting for this upload attempt."""
        for hold in [h for h in self.pending_holds if h[0] <= attempts]:
            self.pending_holds.remove(hold)
            self._hold(hold[1], now)

    def _hold(self, seconds: float, now: float) -> None:
        """Start or extend the foreign job."""
        self.advance(now)
        held = self.running(foreign=True)
        if held is not None:
            held.end = max(held.end, now + seconds)
            return
        rows = max(1, round(seconds * (self.rows_per_minute or 1800) / 60))
        job = Job(
            job_id=f"{_JOB_ID_PREFIX}{uuid.uuid4()}",
            object="users",
            rows=[],
            total_rows=rows,
            filename="other-client.ndjson",
            file_size=0,
            accepted=now,
            queued_end=now,
            processing_start=now,
            end=now + seconds,
            foreign=True,
        )
        self.jobs.append(job)
        self.by_id[job.job_id] = job

    def view(self, job: Job, now: float) -> dict[str, Any]:
        """The job as the status endpoint shows it at `now`."""
        final = job.status is not None
        view = {
            "job_id": job.job_id,
            "status": job.status or job.phase(now),
            "type": "events_import" if job.is_import else OBJECTS[job.object][2],
            "filename": job.filename,
            "file_size": job.file_size,
            "total_rows": job.total_rows,
            "completed_rows": job.rows_done(now),
            "start_time": self._time(job.accepted),
            "end_time": self._time(job.end) if final else None,
            "elapsed_time": self._elapsed(job, now),
            "links": "",
        }
        if job.status == "failed":
            view["links"] = f"/v1/background_jobs/{quote(job.job_id, safe='')}/errors"
            view["error"] = job.error or (
                "the job failed while processing its rows (sandbox fail_jobs fault)"
            )
        return view

    def _elapsed(self, job: Job, now: float) -> float | int:
        """`elapsed_time` as the reading in force says it."""
        if self.elapsed_time == "since_creation":
            return round(now - job.accepted, 3)
        seconds = (job.end if job.status is not None else now) - job.accepted
        if self.elapsed_time == "milliseconds":
            return round(seconds * 1000)
        if self.elapsed_time == "rounded":
            return round(seconds)
        return round(seconds, 3)

    def _time(self, moment: float) -> str:
        """A job timestamp as the reading in force says it."""
        stamp = self.clock.iso(moment)
        if self.job_times == "whole_seconds":
            return stamp.split(".")[0] + "Z"
        return stamp

    def views(self, now: float, *, listed_at: str | None = None) -> list[dict[str, Any]]:
        """Every job, newest first; with `listed_at`, those a list there shows: the jobs whose
        status is served at that place ("background_jobs" or "imports")."""
        jobs = reversed(self.jobs)
        if listed_at is not None:
            jobs = (j for j in jobs if self.status_visible(j, listed_at))
        return [self.view(job, now) for job in jobs]
