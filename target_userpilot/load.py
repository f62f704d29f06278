"""One run of the target: settings, the client, the job lane, STATE release, rejects, summary.

The target creates one :class:`Load` and every sink shares it, because Userpilot's one-job rule
and STATE release are properties of the whole process, not of a stream.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any

from target_userpilot.batch import SealedBatch
from target_userpilot.checkpoints import Checkpoints
from target_userpilot.client import UserpilotClient
from target_userpilot.dryrun import DryRunClient
from target_userpilot.errors import Terminated
from target_userpilot.lane import JobLane
from target_userpilot.rejects import RejectLog
from target_userpilot.settings import Settings
from target_userpilot.summary import RunSummary
from target_userpilot.unchanged import ConfirmedRows

logger = logging.getLogger("target_userpilot")


class Load:
    """Everything one run shares across its sinks."""

    def __init__(self, settings: Settings, *, user_agent: str = "target-userpilot") -> None:
        self.settings = settings
        self.summary = RunSummary(dry_run=settings.dry_run)
        self.rejects = RejectLog(settings.on_invalid_record, settings.rejects_path)
        self.checkpoints = Checkpoints(self._write_state)
        self._stdout_lock = threading.Lock()
        self._user_agent = user_agent
        self._client: UserpilotClient | DryRunClient | None = None
        self._lane: JobLane | None = None
        self._signals = 0
        self._finishing = False
        self.confirmed: ConfirmedRows | None = None
        if settings.skip_unchanged:
            scope = "dry-run" if settings.dry_run else settings.api_url.rstrip("/")
            self.confirmed = ConfirmedRows(settings.state_db, scope)

    # The lane and its client are made on first use: --about and config checks need neither.

    @property
    def lane(self) -> JobLane:
        """The process's one job lane."""
        if self._lane is None:
            s = self.settings
            if s.dry_run:
                self._client = DryRunClient(s.output_dir)
            else:
                self._client = UserpilotClient(
                    s.api_url,
                    s.api_key or "",
                    upload_format=s.upload_format,
                    timeout=(10.0, s.request_timeout_seconds),
                    user_agent=self._user_agent,
                )
            self._lane = JobLane(
                self._client,
                rows_per_minute=s.rows_per_minute,
                job_timeout=s.job_timeout_seconds,
                on_complete=self._job_completed,
                on_reject=self._row_rejected,
            )
        return self._lane

    def check_lane(self) -> None:
        """Raise the error that ended the lane, if any (called per record: kept cheap)."""
        if self._lane is not None:
            self._lane.raise_error()

    def submit(self, batch: SealedBatch) -> None:
        """Send a sealed batch through the lane (blocks only while the previous job runs)."""
        tally = self.summary.stream(batch.stream)
        if self.confirmed is not None:
            dropped = self.confirmed.drop_unchanged(batch)
            tally.unchanged += dropped
            if dropped:
                logger.info(
                    "Skipped %d unchanged %s rows of stream '%s'; %d left to send.",
                    dropped,
                    batch.object,
                    batch.stream,
                    batch.rows,
                )
        self.lane.submit(batch)

    def add_state(self, state: dict[str, Any]) -> None:
        """A STATE message arrived; it goes out once the records before it are durable."""
        self.checkpoints.add_state(state)

    def finish(self) -> None:
        """End of input: wait for the last job, so the final STATE goes out."""
        self._finishing = True
        if self._lane is not None:
            self._lane.wait_idle()

    def settle(self) -> None:
        """The run is failing: let the job in flight end (so its STATE goes out), never raise.

        A second SIGTERM or SIGINT cuts the wait short.
        """
        if self._lane is None or self._signals > 1:
            return
        try:
            self._lane.wait_idle()
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to report
            logger.debug("While stopping, the running job also failed: %s", exc)

    def terminate(self, signum: int) -> None:
        """A termination signal arrived (handler, main thread): stop the run where it is.

        The SDK's own handler would drain every sink from inside the signal handler, re-entering
        whatever upload the main thread was in, and then exit 0 although the records not yet
        uploaded were never sent. Instead, the run stops reading and uploading; on the way out
        the job already in flight is awaited (``settle``), so the STATE it backs still goes out,
        and the run ends with its own exit code. A second signal stops the wait. Once all input
        is read and uploaded (``finish``), the first signal only waits for the last job: the run
        then ends as usual.
        """
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1 and self._finishing:
            # Everything is read and uploaded: the last job's end is the run's end.
            logger.warning(
                "Received %s after the end of input: waiting for the last job to end, so the "
                "final STATE can go out; send the signal again to stop at once.",
                name,
            )
            return
        if self._signals == 1:
            running = self._lane is not None and self._lane.busy
            logger.warning(
                "Received %s: no further input is read or uploaded.%s",
                name,
                " Waiting for the job in flight to end, so its STATE can go out; send the "
                "signal again to stop at once."
                if running
                else "",
            )
        msg = (
            f"Received {name}, so the run stopped before all of its input was loaded. STATE was "
            "written up to the last record Userpilot confirmed; rerun from it to load the rest."
        )
        raise Terminated(msg)

    def close(self) -> None:
        """Let a job in flight end (its STATE goes out), stop the watcher, close connections."""
        self.settle()
        if self._lane is not None:
            self._lane.close()
        if self._client is not None:
            self._client.close()
        if self.confirmed is not None:
            self.confirmed.close()
            self.confirmed = None

    def log_summary(self) -> None:
        """The end-of-run account on stderr: a table for people, a JSON line for schedulers."""
        for line in self.summary.table().splitlines():
            logger.info("%s", line)
        sys.stderr.write(self.summary.json_line() + "\n")
        sys.stderr.flush()

    # Callbacks from the lane

    def _job_completed(self, batch: SealedBatch, job: dict[str, Any], seconds: float) -> None:
        if batch.rows:
            self.summary.job_done(batch.stream, batch.rows, batch.merged, seconds)
        elif batch.merged:
            self.summary.stream(batch.stream).merged += batch.merged
        if self.confirmed is not None and batch.rows:
            self.confirmed.confirm(batch)
        self.checkpoints.release(batch.hold)

    def _row_rejected(self, batch: SealedBatch, line: bytes, reason: str) -> None:
        self.summary.stream(batch.stream).rejected += 1
        try:
            row = json.loads(line)
        except ValueError:
            row = line.decode(errors="replace")
        self.rejects.reject(batch.stream, None, reason, row)

    def _write_state(self, state: dict[str, Any]) -> None:
        line = json.dumps(state) + "\n"
        with self._stdout_lock:
            sys.stdout.write(line)
            sys.stdout.flush()
        logger.debug("Wrote STATE after its records were confirmed by Userpilot.")
