"""The job lane: the one bulk job this process runs at a time.

Userpilot runs one bulk job per account, users and companies together. The lane's worker thread
takes the next batch from the buffer whenever no job of ours runs, uploads it, follows the job
with status polls placed by what the run has learned of Userpilot's pace (``pace.py``), and when
the job completes makes its batch durable: the summary counts it, skip_unchanged confirms it, and
its hold is released so a held-back STATE can go out. Meanwhile the reading thread fills the next
batch. This is the one place a job is waited on.

Before its first batch the lane settles the Import API files earlier runs of the account left
unsettled (a crash, a stop, a lost answer): their jobs are looked for and awaited here, and
``memory/imported.py`` records how each ended, so no event goes twice.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_userpilot.batching.batch import SealedBatch
from target_userpilot.batching.buffer import BatchBuffer
from target_userpilot.batching.halves import first_half
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.errors import (
    JobFailed,
    JobTimeout,
    PayloadTooLarge,
    Unconfirmed,
    WaitInterrupted,
)
from target_userpilot.lanes.base import Abandoned, Lane
from target_userpilot.lanes.pace import JobPace, JobWindow, job_seconds, reported_seconds
from target_userpilot.memory.imported import ImportedEvents
from target_userpilot.records.routing import EVENTS
from target_userpilot.rejects import RejectLog
from target_userpilot.retry import Stop
from target_userpilot.summary import RunSummary, count, duration
from target_userpilot.userpilot.client import FINAL_STATUSES, WAITING_STATUSES

logger = logging.getLogger("target_userpilot.lane")

#: How often, at most, a long job reports its progress at INFO.
PROGRESS_EVERY_SECONDS = 30.0
#: Longest pause between two status polls.
MAX_POLL_INTERVAL = 30.0
#: Shortest pause between two polls of a job still running past its predicted end.
MIN_POLL_INTERVAL = 0.05
#: A job past its predicted end is polled again after this share of the time it has run.
LATE_POLL_SHARE = 0.1
#: A job is first checked this long after the moment it is predicted to end.
NOTICE_MARGIN = 0.02


class Uploader(Protocol):
    """What the lane needs from a client: the real one, or the dry run's."""

    def upload(
        self,
        object: str,
        path: str,
        filename: str,
        *,
        conflict_wait: float,
        stop: Stop | None = None,
        reached: Callable[[bool], None] | None = None,
    ) -> dict[str, Any]:
        """Upload a batch file; every wait before a retry, and for another client's job, ends
        when ``stop`` is set (:class:`~target_userpilot.errors.WaitInterrupted`); ``reached``
        hears whether a try may have reached Userpilot (an events file's ledger record)."""
        ...

    def job_status(self, job_id: str, *, stop: Stop | None = None) -> dict[str, Any]:
        """The job's status; a failed poll is not retried once ``stop`` is set."""
        ...

    def find_import(
        self, filename: str, job_id: str | None = None, *, stop: Stop | None = None
    ) -> dict[str, Any] | None:
        """An earlier upload's import job, by id or filename; None if shown nowhere."""
        ...


class JobHistory(Protocol):
    """The sync history (``memory/history.py``): told of every upload and how its job ended."""

    def job_sent(self, batch: SealedBatch, job_id: str) -> None: ...

    def job_ended(self, batch: SealedBatch, job_id: str, outcome: str) -> None: ...


@dataclass
class _Running:
    """The job in flight and what we have learned of it."""

    job: dict[str, Any]
    batch: SealedBatch
    #: When the upload was answered: the job existed by then (our clock, as every time here).
    uploaded: float
    polls: int = 0
    last_progress_log: float = 0.0
    #: When the last poll that saw the job unfinished was sent (0: none did).
    last_pending_sent: float = 0.0
    #: When the poll that saw the job final was sent.
    final_sent: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    warned_status: set[str] = field(default_factory=set)

    @property
    def job_id(self) -> str:
        return str(self.job.get("job_id"))


class JobLane(Lane):
    """Uploads batches one job at a time and follows each job to its end."""

    def __init__(
        self,
        uploader: Uploader,
        source: BatchBuffer,
        checkpoints: Checkpoints,
        summary: RunSummary,
        rejects: RejectLog,
        *,
        pace: JobPace,
        job_timeout: float = 7200.0,
        confirmer: ImportedEvents | None = None,
        before_upload: Callable[[SealedBatch], None] | None = None,
        history: JobHistory | None = None,
        run_id: str | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        # The lane measures jobs, and waits for its polls, on its pace's clock.
        super().__init__(clock=pace.clock, on_failure=on_failure)
        self._uploader = uploader
        self._history = history
        self._source = source
        self._checkpoints = checkpoints
        self._summary = summary
        self._rejects = rejects
        #: The ledger's side of every batch (``memory/imported.py``); none: nothing recorded.
        self._confirmer = confirmer or ImportedEvents(None, "", summary)
        #: skip_unchanged: leaves out the rows Userpilot already holds, on this thread, in the
        #: order batches go up, outside the buffer's lock (the ledger may be slow).
        self._before_upload = before_upload
        #: After a stop: whether batches sealed before it still go up (not after a signal).
        self._sealed_may_go = True
        self.pace = pace
        self.job_timeout = float(job_timeout)
        self._run_id = run_id or uuid.uuid4().hex[:12]
        self._uploads = 0
        self._busy = False
        #: Rows per object the stop kept from going up, in batches this lane had taken.
        self.unsent: Counter[str] = Counter()
        #: Jobs of ours left to Userpilot by a stop before their end was seen.
        self.left_to_userpilot: list[str] = []
        self._start(self._work, "userpilot-job-lane")

    # What differs from the other lanes

    @override
    @property
    def busy(self) -> bool:
        """True while a batch of ours is uploading or in a job."""
        return self._busy

    @override
    def wait_idle(self) -> None:
        """Block until every batch the buffer will give has gone up and completed.

        After a stop, until the job in flight ended (the buffer gives nothing more).
        """
        with self._cond:
            while self._running and self._error is None and not self._abandon.is_set():
                self.clock.wait(self._cond)  # the thread's end, a failure and a stop notify
        self.raise_error()

    @override
    def stop(self, *, send_sealed: bool = False) -> None:
        """With ``send_sealed``, batches already sealed still go up (they hold only records
        read before the failure); otherwise (a stop signal) nothing more is uploaded."""
        if not send_sealed:
            self._sealed_may_go = False  # before the lane is seen stopping: no upload slips by
        super().stop(send_sealed=send_sealed)

    @override
    def _stopped(self, *, send_sealed: bool) -> None:
        if send_sealed and not self._abandon.is_set():
            self._source.stop()
        else:
            self._source.discard()

    @override
    def _failed(self, exc: BaseException) -> None:
        self._source.fail(exc)  # a reading thread waiting for room raises it

    # The worker thread

    def _work(self) -> None:
        if not self._confirmer.settle_earlier(
            lambda r: self._uploader.find_import(r.filename, r.job_id, stop=self._stop_event),
            self._await_earlier,
            self._stop_event,
        ):
            raise Abandoned  # a stop came first: the next run settles the rest
        while (batch := self._source.take()) is not None:
            self._busy = True
            try:
                if self._before_upload is not None:
                    try:
                        self._before_upload(batch)
                    except BaseException:
                        batch.discard()  # leave no personal data in the temp directory
                        raise
                self._send(batch)
            finally:
                self._busy = False

    def _send(self, batch: SealedBatch) -> None:
        """Upload ``batch`` and follow its job to the end; 413 splits it in halves."""
        try:
            self._confirmer.prepare(batch)
        except BaseException:
            batch.discard()
            raise
        if batch.rows == 0:
            self._durable(batch, 0.0)
            batch.discard()
            return
        try:
            if not self._sealed_may_go:
                raise Abandoned  # no upload starts after a stop signal (a 413's other half)
            running = self._upload(batch)
        except PayloadTooLarge:
            self._split(batch)
            return
        except Unconfirmed as exc:
            try:  # an events file Userpilot shows nowhere: done with as if sent, counted apart
                self._confirmer.unconfirmed(batch, exc)
                self._checkpoints.release(batch.hold)
            finally:
                batch.discard()
            return
        except (WaitInterrupted, Abandoned) as stopped:
            # The stop ended a wait before a retry, a job lookup or another client's job.
            if isinstance(stopped, WaitInterrupted):
                logger.warning(
                    "%s The %s of %s %s not confirmed in Userpilot; the rerun from the last "
                    "STATE sends %s.",
                    stopped,
                    _rows(batch),
                    _streams(batch),
                    "is" if batch.rows == 1 else "are",
                    "it" if batch.rows == 1 else "them",
                )
            self.unsent[batch.object] += batch.rows
            batch.discard()
            raise Abandoned from None
        except BaseException:
            batch.discard()  # the run stops: leave no personal data in the temp directory
            raise
        try:
            job: dict[str, Any] | None = running.job
            if _status(running.job) not in FINAL_STATUSES:
                job = self._follow(running)
            if job is not None:
                self._conclude(running, job)
        finally:
            batch.discard()

    def _upload(self, batch: SealedBatch) -> _Running:
        self._uploads += 1
        filename = batch.filename = f"{batch.object}-{self._run_id}-{self._uploads:05d}.ndjson"
        logger.debug(
            "Uploading %s: %d %s rows, %d bytes.", filename, batch.rows, batch.object, batch.bytes
        )
        with self._confirmer.uploading(batch) as reached:  # an events file: in the ledger first
            job = self._uploader.upload(
                batch.object,
                batch.path,
                filename,
                conflict_wait=self.job_timeout,
                stop=self._stop_event,
                reached=reached,
            )
        self._confirmer.accepted(batch, str(job.get("job_id")))
        running = _Running(job, batch, self.clock.now())
        if self._history is not None:
            self._history.job_sent(batch, running.job_id)
        logger.info("Uploaded %s of %s as job %s.", _rows(batch), _streams(batch), running.job_id)
        return running

    def _split(self, batch: SealedBatch) -> None:
        """Userpilot said 413: send each half (``halves.py``), one job after the other; reject
        a lone row."""
        if first_half(batch.rows) is None:
            for line in batch.read_lines():
                self._reject(batch, line, "Userpilot refused the row as too large (HTTP 413)")
            batch.rows = 0
            batch.row_streams = {}
            self._durable(batch, 0.0)
            batch.discard()
            return
        first, second = batch.split()
        logger.warning(
            "Userpilot refused %d rows of %s as too large (HTTP 413); "
            "sending them in two halves of %d and %d.",
            batch.rows,
            _streams(batch),
            first.rows,
            second.rows,
        )
        try:
            self._send(first)
        except BaseException as exc:
            if isinstance(exc, Abandoned):
                self.unsent[second.object] += second.rows  # the stop came between the halves
            second.discard()
            raise
        self._send(second)

    # Following the job

    def _follow(self, running: _Running, *, earlier: bool = False) -> dict[str, Any] | None:
        """Poll until the job is final; None if the lane was abandoned first.

        The job is ours and in flight, so a stop lets its polls go on (its STATE may still go
        out); but a poll that fails after a stop is not tried again: the job is then left to
        Userpilot, and the lane ends (:class:`Abandoned`). An ``earlier`` run's job is not in
        flight: a stop ends its wait at once, and the next run settles it.
        """
        wait = self._next_wait(running, None, running.uploaded)
        while not self.clock.wait(self._stop_event if earlier else self._abandon, wait):
            sent = self.clock.now()
            try:
                job = self._uploader.job_status(running.job_id, stop=self._stop_event)
            except WaitInterrupted as stopped:
                if not earlier:
                    self._leave_to_userpilot(running, str(stopped))
                raise Abandoned from None
            running.polls += 1
            now = self.clock.now()
            status = _status(job)
            if status in FINAL_STATUSES:
                running.job = job
                running.final_sent = sent
                return job
            running.last_pending_sent = sent
            if status not in WAITING_STATUSES and status not in running.warned_status:
                running.warned_status.add(status)
                logger.warning(
                    "Job %s reports an unknown status '%s'; still waiting for it.",
                    running.job_id,
                    status,
                )
            if now - running.uploaded > self.job_timeout:
                msg = (
                    f"Userpilot job {running.job_id} ({_streams(running.batch)}, "
                    f"{_rows(running.batch)}) has not finished after "
                    f"{self.job_timeout:.0f} s (job_timeout_seconds); last status '{status}'. "
                    "It may still finish in Userpilot; rerun from the last STATE to be sure."
                )
                if self._history is not None:
                    self._history.job_ended(running.batch, running.job_id, "timed out")
                raise JobTimeout(msg)
            wait = self._next_wait(running, job, now)
        if not earlier:
            self._leave_to_userpilot(running, "The run was told to stop at once.")
        return None

    def _leave_to_userpilot(self, running: _Running, why: str) -> None:
        """A stop ends the following of our job before its end was seen: say so, once."""
        self.left_to_userpilot.append(running.job_id)
        then = "the rerun from the last STATE sends its rows again"
        if running.batch.object == EVENTS:
            then = "the next run settles it first (its events go again only if it failed)"
        logger.warning(
            "%s Job %s (%s of %s) is left to Userpilot: it may still complete there, but its "
            "STATE does not go out; %s.",
            why,
            running.job_id,
            _rows(running.batch),
            _streams(running.batch),
            then,
        )

    def _next_wait(self, running: _Running, job: dict[str, Any] | None, now: float) -> float:
        """Pause before the next poll: until the predicted end, then a tenth of the time so far.

        The end is predicted from the pace learned from this run's completed jobs; the job's own
        progress (``completed_rows``) corrects it while it runs. Until a job's duration has been
        pinned down by our polls (``pace.proven``), the first poll comes within a second and the
        job is followed by its own progress, so a pace learned from one small job never makes a
        big one wait. Every wait is at most ``MAX_POLL_INTERVAL``.
        """
        rows = running.batch.rows
        paced_end = running.uploaded + self.pace.predict(rows)
        end = paced_end
        basis = "observed" if self.pace.observed else "expected"
        proven = self.pace.proven
        rate = self.pace.rate
        soon: float | None = None
        if job is not None:
            total = _as_int(job.get("total_rows")) or rows
            done = _as_int(job.get("completed_rows")) or 0
            running.samples.append((now, done))
            remaining = max(0, total - done)
            progress = _progress_rate(running)
            if progress is not None:
                # Two polls apart while processing: the job's own rate is the best guide.
                rate, basis = progress, "observed"
                end = now + remaining / rate
            elif done:
                # One poll: rows done over the time since the upload, which also counts
                # queueing and validation, so this guess errs late.
                rate, basis = done / max(now - running.uploaded, 1e-3), "observed"
                guess = now + remaining / rate
                if not proven:
                    # No job has proven the pace yet: come back soon for a second sample, the
                    # job's own rate.
                    end = guess
                    soon = max(MIN_POLL_INTERVAL, LATE_POLL_SHARE * 2 * (now - running.uploaded))
                elif guess < paced_end:
                    # Ahead of the learned pace (this guess errs late, so it is safe to follow).
                    end = guess
                elif guess > paced_end + (paced_end - running.uploaded) / 2:
                    # Far behind the learned pace: Userpilot slowed down; follow the job.
                    end = guess
                    soon = max(MIN_POLL_INTERVAL, LATE_POLL_SHARE * 2 * (now - running.uploaded))
            elif not proven:
                # Not started, and nothing proves the pace: look again soon, then less often.
                soon = max(MIN_POLL_INTERVAL, LATE_POLL_SHARE * 2 * (now - running.uploaded))
            self._log_progress(
                running, now=now, done=done, total=total, rate=rate, basis=basis, end=end
            )
        elif not proven:
            end = min(end, running.uploaded + 1.0)
        elif end - now > 2 * MIN_POLL_INTERVAL:
            # One poll half-way checks the prediction against the job's own progress, so a
            # Userpilot much slower than the jobs before is noticed before the end.
            return min(MAX_POLL_INTERVAL, (end - now) / 2)
        if end - now > 0:
            wait = end - now + NOTICE_MARGIN
            return min(MAX_POLL_INTERVAL, wait if soon is None else min(wait, soon))
        share = LATE_POLL_SHARE * (now - running.uploaded)
        return min(MAX_POLL_INTERVAL, max(MIN_POLL_INTERVAL, share))

    def _log_progress(
        self,
        running: _Running,
        *,
        now: float,
        done: int,
        total: int,
        rate: float,
        basis: str,
        end: float,
    ) -> None:
        if (
            now - running.last_progress_log < PROGRESS_EVERY_SECONDS
            or now - running.uploaded < PROGRESS_EVERY_SECONDS
        ):
            return
        running.last_progress_log = now
        logger.info(
            "Job %s (%s): %d of %d rows done, %.0f rows/min (%s), about %s left.",
            running.job_id,
            _streams(running.batch),
            done,
            total,
            rate * 60,
            basis,
            duration(max(0.0, end - now)),
        )

    def _conclude(self, running: _Running, job: dict[str, Any]) -> None:
        status = _status(job)
        now = self.clock.now()
        seconds = now - running.uploaded
        if status == "failed":
            details = json.dumps(job, sort_keys=True, default=str)
            msg = (
                f"Userpilot job {running.job_id} for {_streams(running.batch)} "
                f"({_rows(running.batch)}) ended with status 'failed'. "
                f"Job details: {details}. No STATE was written past these records; fix the cause "
                "and rerun from the last STATE."
            )
            if self._history is not None:
                self._history.job_ended(running.batch, running.job_id, "failed")
            self._confirmer.failed(running.batch)
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
        if self._history is not None:
            # Before the confirm: an upsert Userpilot may still erase stays out of its ledger.
            self._history.job_ended(running.batch, running.job_id, "completed")
        window = _window(running, now)
        if window is not None and job.get("followed", True):
            self.pace.learn(
                running.batch.rows, job_seconds(window, reported_seconds(job)), proven=window.tight
            )
        logger.info(
            "Job %s completed: %s of %s in %.1f s (%s).",
            running.job_id,
            _rows(running.batch),
            _streams(running.batch),
            seconds,
            count(running.polls, "status poll"),
        )
        self._durable(running.batch, seconds)

    def _await_earlier(self, job: dict[str, Any], batch: SealedBatch) -> dict[str, Any] | None:
        """An import job an earlier run left (``ImportedEvents.settle_earlier``), awaited like
        one of ours; None if a stop ended the wait."""
        return self._follow(_Running(job, batch, self.clock.now()), earlier=True)

    def _durable(self, batch: SealedBatch, seconds: float) -> None:
        """The batch is in Userpilot (or was empty): count it, confirm it, release its STATE."""
        self._summary.batch_done(batch, seconds)
        if batch.rows:
            self._confirmer.confirm(batch)
        self._source.durable(batch)  # its users exist: their events may go
        self._checkpoints.release(batch.hold)

    def _reject(self, batch: SealedBatch, line: bytes, reason: str) -> None:
        try:
            row = json.loads(line)
        except ValueError:
            row = line.decode(errors="replace")
        key = "company_id" if batch.object == "companies" else "user_id"
        row_id = row.get(key) if isinstance(row, dict) else None
        stream = batch.row_streams.get(row_id, batch.stream) if isinstance(row_id, str) else ""
        if batch.object == "events" and batch.row_streams:
            stream = next(iter(batch.row_streams.values()))  # a lone event: keys are not in rows
        self._rejects.reject(stream or batch.stream, None, reason, row)


def _rows(batch: SealedBatch) -> str:
    """``1 users row``, ``5 companies rows``; an Import API file's are ``events``."""
    if batch.object == EVENTS:
        return count(batch.rows, "event")
    return count(batch.rows, f"{batch.object} row")


def _streams(batch: SealedBatch) -> str:
    """``stream 'users'`` or ``streams 'a', 'b'``, for log lines."""
    names = batch.streams
    return f"stream {names}" if names.count("'") == 2 else f"streams {names}"


def _status(job: dict[str, Any]) -> str:
    return str(job.get("status")).strip().lower()


def _progress_rate(running: _Running) -> float | None:
    """Rows per second this job has shown between two polls while processing, if it has."""
    started = [(t, d) for t, d in running.samples if d > 0]
    if len(started) >= 2:
        (t0, d0), (t1, d1) = started[0], started[-1]
        if d1 > d0 and t1 > t0:
            return (d1 - d0) / (t1 - t0)
    return None


def _window(running: _Running, now: float) -> JobWindow | None:
    """What our polls prove of the job's duration; None when it was final in the upload's
    answer, which no poll bounds (it teaches nothing)."""
    if not running.final_sent:
        return None
    return JobWindow(
        running_at=max(0.0, running.last_pending_sent - running.uploaded),
        asked_at=max(0.0, running.final_sent - running.uploaded),
        answered_at=max(0.0, now - running.uploaded),
    )


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
