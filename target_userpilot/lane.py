"""The job lane: the one bulk job this process runs at a time.

Userpilot runs one bulk job per account, users and companies together. The lane serialises every
upload of the process: a flush waits for the previous job to end, uploads its batch, and returns
at once, so the next batch is built while Userpilot works. A watcher thread follows the running
job, pacing its status polls by the job's observed progress, and on completion makes the batch
durable, which is what lets a held-back STATE message go out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_userpilot.batch import SealedBatch
from target_userpilot.client import FINAL_STATUSES, WAITING_STATUSES
from target_userpilot.errors import JobConflict, JobFailed, JobTimeout, PayloadTooLarge
from target_userpilot.summary import duration

logger = logging.getLogger("target_userpilot.lane")

#: How often, at most, a long job reports its progress at INFO.
PROGRESS_EVERY_SECONDS = 30.0
#: Longest pause between two status polls.
MAX_POLL_INTERVAL = 30.0
#: Shortest pause between two polls of a job still running past its predicted end.
MIN_POLL_INTERVAL = 0.5
#: A job is first checked this long after the moment it is predicted to end.
NOTICE_MARGIN = 0.02


class Uploader(Protocol):
    """What the lane needs from a client: the real one, or the dry run's."""

    def upload(
        self, object: str, path: str, filename: str, *, conflict_wait: float
    ) -> dict[str, Any]: ...

    def job_status(self, job_id: str) -> dict[str, Any]: ...


@dataclass
class _Running:
    """The job in flight and what we have learned of it."""

    job: dict[str, Any]
    batch: SealedBatch
    submitted: float
    uploaded: float
    polls: int = 0
    last_progress_log: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    warned_status: set[str] = field(default_factory=set)
    near_end_polls: int = 0

    @property
    def job_id(self) -> str:
        return str(self.job.get("job_id"))


class JobLane:
    """Uploads batches one job at a time and follows each job to its end."""

    def __init__(
        self,
        uploader: Uploader,
        *,
        rows_per_minute: float = 1800.0,
        job_timeout: float = 7200.0,
        on_complete: Callable[[SealedBatch, dict[str, Any], float], None] | None = None,
        on_reject: Callable[[SealedBatch, bytes, str], None] | None = None,
    ) -> None:
        self._uploader = uploader
        self.rows_per_minute = max(float(rows_per_minute), 1.0)
        self.job_timeout = float(job_timeout)
        self._on_complete = on_complete
        self._on_reject = on_reject
        self._run_id = uuid.uuid4().hex[:12]
        self._uploads = 0
        self._cond = threading.Condition()
        self._running: _Running | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Called from the reading thread

    def submit(self, batch: SealedBatch) -> None:
        """Wait for the running job to end, upload ``batch``, and return while it runs."""
        submitted = time.monotonic()
        self.wait_idle()
        if batch.rows == 0:
            self._finish_batch(batch, {"job_id": None, "total_rows": 0}, 0.0)
            return
        self._upload(batch, submitted)

    def wait_idle(self) -> None:
        """Block until no job runs; raise the error that ended the last one, if any."""
        with self._cond:
            while self._running is not None and self._error is None:
                self._cond.wait(timeout=1.0)
            self.raise_error()

    def raise_error(self) -> None:
        """Raise the failure the watcher saw, so the reading thread stops the run."""
        if self._error is not None:
            raise self._error

    @property
    def busy(self) -> bool:
        """True while a job of ours runs."""
        return self._running is not None

    def close(self) -> None:
        """Stop the watcher thread (a running job is left to Userpilot)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # Uploading

    def _upload(self, batch: SealedBatch, submitted: float) -> None:
        self._uploads += 1
        filename = f"{batch.object}-{self._run_id}-{self._uploads:05d}.ndjson"
        remaining = max(1.0, self.job_timeout - (time.monotonic() - submitted))
        logger.debug(
            "Uploading %s: %d %s rows, %d bytes.", filename, batch.rows, batch.object, batch.bytes
        )
        try:
            job = self._uploader.upload(batch.object, batch.path, filename, conflict_wait=remaining)
        except PayloadTooLarge:
            self._split(batch)
            return
        except JobConflict:
            batch.discard()
            msg = (
                f"Another bulk job held the Userpilot account for over "
                f"{self.job_timeout:.0f} s (job_timeout_seconds), so the batch of stream "
                f"'{batch.stream}' could not be uploaded. Check running jobs in Userpilot, "
                "or raise job_timeout_seconds."
            )
            raise JobTimeout(msg) from None
        except BaseException:
            # The run stops: leave no batch file (personal data) behind in the temp directory.
            batch.discard()
            raise
        running = _Running(job, batch, submitted, time.monotonic())
        logger.info(
            "Uploaded %d %s rows of stream '%s' as job %s.",
            batch.rows,
            batch.object,
            batch.stream,
            running.job_id,
        )
        if str(job.get("status")) in FINAL_STATUSES:
            self._conclude(running, job)
            return
        with self._cond:
            self._running = running
            self._ensure_watcher()
            self._cond.notify_all()

    def _split(self, batch: SealedBatch) -> None:
        """Userpilot said 413: upload each half, one after the other; reject a lone row."""
        if batch.rows <= 1:
            for line in batch.read_lines():
                if self._on_reject is not None:
                    self._on_reject(
                        batch, line, "Userpilot refused the row as too large (HTTP 413)"
                    )
            batch.rows = 0
            self._finish_batch(batch, {"job_id": None, "total_rows": 0}, 0.0)
            return
        first, second = batch.split()
        logger.warning(
            "Userpilot refused %d rows of stream '%s' as too large (HTTP 413); "
            "sending them in two halves of %d and %d.",
            batch.rows,
            batch.stream,
            first.rows,
            second.rows,
        )
        try:
            for half in (first, second):
                submitted = time.monotonic()
                self.wait_idle()
                self._upload(half, submitted)
        except BaseException:
            second.discard()
            raise

    # Following the job (watcher thread)

    def _ensure_watcher(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._watch, name="userpilot-job-watcher", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while self._running is None and not self._stop.is_set():
                    self._cond.wait(timeout=1.0)
                running = self._running
            if running is None:
                return
            try:
                final = self._follow(running)
                if final is not None:
                    self._conclude(running, final)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                with self._cond:
                    self._error = exc
            finally:
                # Concluded, failed or abandoned by close(): the file is of no further use.
                running.batch.discard()
            with self._cond:
                self._running = None
                self._cond.notify_all()

    def _follow(self, running: _Running) -> dict[str, Any] | None:
        """Poll until the job is final; None if the lane was closed first."""
        wait = self._first_wait(running.batch.rows)
        while not self._stop.wait(wait):
            job = self._uploader.job_status(running.job_id)
            running.polls += 1
            now = time.monotonic()
            status = str(job.get("status"))
            if status in FINAL_STATUSES:
                return job
            if status not in WAITING_STATUSES and status not in running.warned_status:
                running.warned_status.add(status)
                logger.warning(
                    "Job %s reports an unknown status '%s'; still waiting for it.",
                    running.job_id,
                    status,
                )
            if now - running.submitted > self.job_timeout:
                msg = (
                    f"Userpilot job {running.job_id} (stream '{running.batch.stream}', "
                    f"{running.batch.rows} rows) has not finished after "
                    f"{self.job_timeout:.0f} s (job_timeout_seconds); last status '{status}'. "
                    "It may still finish in Userpilot; rerun from the last STATE to be sure."
                )
                raise JobTimeout(msg)
            wait = self._next_wait(running, job, now)
        return None

    def _first_wait(self, rows: int) -> float:
        """Poll the first time within a second, sooner for a batch Userpilot does quickly."""
        expected = rows / (self.rows_per_minute / 60.0)
        return min(1.0, expected + NOTICE_MARGIN)

    def _next_wait(self, running: _Running, job: dict[str, Any], now: float) -> float:
        """Pause before the next poll: most of the expected remaining time, within bounds."""
        total = _as_int(job.get("total_rows")) or running.batch.rows
        done = _as_int(job.get("completed_rows")) or 0
        running.samples.append((now, done))
        rate = self.rows_per_minute / 60.0
        basis = "expected"  # until the job shows progress, rows_per_minute is all we know
        first_t, first_done = running.samples[0]
        if done > first_done and now > first_t:
            rate = (done - first_done) / (now - first_t)
            basis = "observed"
        eta = max(0.0, (total - done) / rate)
        if (
            now - running.last_progress_log >= PROGRESS_EVERY_SECONDS
            and now - running.uploaded >= PROGRESS_EVERY_SECONDS
        ):
            running.last_progress_log = now
            logger.info(
                "Job %s (stream '%s'): %d of %d rows done, %.0f rows/min (%s), about %s left.",
                running.job_id,
                running.batch.stream,
                done,
                total,
                rate * 60,
                basis,
                duration(eta),
            )
        if eta >= 2 * MIN_POLL_INTERVAL:
            return min(MAX_POLL_INTERVAL, eta * 0.8)
        # The end is near: poll once, just after it. A job still running then (slower than
        # observed, or done but refreshing) is polled from MIN_POLL_INTERVAL on, doubling.
        wait = eta + NOTICE_MARGIN
        if running.near_end_polls:
            backoff = MIN_POLL_INTERVAL * 2 ** (running.near_end_polls - 1)
            wait = max(wait, min(MAX_POLL_INTERVAL, backoff))
        running.near_end_polls += 1
        return wait

    def _conclude(self, running: _Running, job: dict[str, Any]) -> None:
        status = str(job.get("status"))
        seconds = time.monotonic() - running.uploaded
        if status == "failed":
            details = json.dumps(job, sort_keys=True, default=str)
            msg = (
                f"Userpilot job {running.job_id} for stream '{running.batch.stream}' "
                f"({running.batch.rows} {running.batch.object} rows) ended with status 'failed'. "
                f"Job details: {details}. No STATE was written past these records; fix the cause "
                "and rerun from the last STATE."
            )
            running.batch.discard()
            raise JobFailed(msg)
        total = _as_int(job.get("total_rows"))
        done = _as_int(job.get("completed_rows"))
        if total is not None and done is not None and done < total:
            logger.warning(
                "Job %s completed only %d of %d rows; Userpilot did not say why.",
                running.job_id,
                done,
                total,
            )
        logger.info(
            "Job %s completed: %d %s rows of stream '%s' in %.1f s (%d status polls).",
            running.job_id,
            running.batch.rows,
            running.batch.object,
            running.batch.stream,
            seconds,
            running.polls,
        )
        self._finish_batch(running.batch, job, seconds)

    def _finish_batch(self, batch: SealedBatch, job: dict[str, Any], seconds: float) -> None:
        try:
            if self._on_complete is not None:
                self._on_complete(batch, job, seconds)
        finally:
            batch.discard()


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
