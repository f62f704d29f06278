"""Userpilot's endpoints: bulk jobs, their status, deletions and events; no Singer inside.

What to ask Userpilot and what its answers mean. How a request travels (sessions, auth,
proxies, CAs) is ``transport.py``'s; whether a failed one is tried again, the run's retry policy's
(``target_userpilot/retry.py``); which hosts and keys are allowed, ``hosts.py``'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from target_userpilot.errors import (
    AuthenticationError,
    JobConflict,
    JobNotFound,
    JobTimeout,
    PayloadTooLarge,
    RequestRefused,
    TransientError,
    Unconfirmed,
    UnexpectedAnswer,
)
from target_userpilot.retry import RatePace, RetryPolicy, Stop
from target_userpilot.userpilot.transport import (
    IMPORT_LIST_PATHS,
    IMPORT_STATUS_PATHS,
    IMPORTS_PATH,
    JOBS_PATH,
    RequestObserver,
    Transport,
)

logger = logging.getLogger("target_userpilot.userpilot.client")

FINAL_STATUSES = frozenset({"completed", "failed"})
WAITING_STATUSES = frozenset({"queued", "validating", "processing", "pending_refresh"})
#: What a job's type says about its object, to tell users' jobs from companies' in the list.
JOB_TYPES = {"users": "users_bulk_identify", "companies": "companies_bulk_identify"}
#: The batches of ``events_api: import``: Import API files, uploaded to ``IMPORTS_PATH``.
EVENTS = "events"


def deletion_body(object: str, ids: list[str]) -> bytes:
    """The JSON body of a deletion request: ``{"users": [ids]}`` (the dry run writes the same)."""
    return json.dumps({object: list(ids)}).encode()


class UserpilotClient:
    """Talks to one Userpilot host (or the sandbox) with one API key, from any thread."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        upload_format: str = "ndjson",
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        user_agent: str = "target-userpilot",
        pace: RatePace | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        #: ``observe`` is told of every request as it ends (the run's METRIC records).
        self.transport = Transport(
            api_url, api_key, timeout=timeout, user_agent=user_agent, observe=observe
        )
        self.api_url = self.transport.api_url
        self.upload_format = upload_format
        #: The retry policy, declared once: immutable, shared by every call of every thread.
        self.retry = retry or RetryPolicy()
        #: The pace of this client's track requests (the events lane's own client): after a
        #: 429 it, not the retry policy, says when the event goes again.
        self.pace = pace
        #: Import jobs we created, and where their status was found (see ``_import_status``).
        self._import_jobs: set[str] = set()
        self._import_status_path: str | None = None
        self._unfollowable_warned = False

    @property
    def rate_limited(self) -> int:
        """429 answers met so far, by every thread."""
        return self.transport.rate_limited

    def close(self) -> None:
        """Close every thread's pooled connections."""
        self.transport.close()

    # Bulk jobs

    def upload(
        self,
        object: str,
        path: str,
        filename: str,
        *,
        conflict_wait: float = 7200.0,
        stop: Stop | None = None,
        reached: Callable[[bool], None] | None = None,
    ) -> dict[str, Any]:
        """Upload one batch file to ``/v1/<object>/bulk_identify`` and return the job object.

        A 409 means another job holds the account (ours are awaited before we upload, so it is
        another client's): it is waited out with jittered backoff for up to ``conflict_wait``
        seconds, then :class:`JobTimeout` is raised. Setting ``stop`` (the run stops) ends any
        wait before a retry, a job lookup or a wait for another client's job, with
        :class:`WaitInterrupted`: nothing more is sent for this batch.

        A timeout or dropped connection after the file was sent is ambiguous: Userpilot may have
        created the job. Before trying again we look for a job with our (unique) filename and
        adopt it, so a flaky network never sends a batch twice or trips over our own job. The
        same lookup follows an acceptance that names no job. JSON uploads carry no filename to
        look for: after a lost answer they are sent again, which upserts the same rows twice.

        An ``events`` batch (``events_api: import``) is an Import API file: it goes to
        ``/v1/imports``, always as a multipart NDJSON file, and its job is followed likewise.
        Its events count each time they arrive, so it is sent again only after a failure that
        proves nothing arrived (``TransientError.had_no_effect``); after any other failure it
        is looked for wherever Userpilot may list import jobs (:meth:`_listed_import`), and
        found nowhere it raises :class:`Unconfirmed`, never sent again. ``reached`` hears
        ``True`` before each try, and ``False`` when every try so far proved that nothing of the
        file reached Userpilot (the ledger's record of the file says so, for a rerun).
        """
        importing = object == EVENTS
        endpoint = IMPORTS_PATH if importing else f"/v1/{object}/bulk_identify"
        ndjson = importing or self.upload_format == "ndjson"
        maybe_created = False
        lost: TransientError | None = None  # the failure after which the file may have arrived
        accepted_as: str | None = None  # what an acceptance that named no job held instead

        def attempt() -> dict[str, Any]:
            nonlocal maybe_created, accepted_as, lost
            if accepted_as is not None:
                return self._adopt_unnamed(endpoint, filename, accepted_as, ndjson)
            if maybe_created and importing:
                return self._adopt_lost_import(filename, lost)
            if maybe_created and ndjson:
                existing = self.find_job(filename)
                if existing is not None:
                    logger.info(
                        "Found job %s from the interrupted upload of %s.",
                        existing["job_id"],
                        filename,
                    )
                    return existing
            elif maybe_created:
                logger.info(
                    "The answer to the JSON upload of %s was lost; JSON jobs carry no filename "
                    "to find them by, so the batch is sent again (its rows are upserted twice).",
                    filename,
                )
            if reached is not None:
                reached(True)
            try:
                answer = self._post_batch(endpoint, object, path, filename)
            except TransientError as exc:
                # Bulk: a refused connection sent nothing, so no job to look for before the
                # next try. Events: only a failure that proves nothing was done is sent again.
                arrived = not exc.had_no_effect if importing else exc.reached_server
                if arrived:
                    maybe_created, lost = True, exc
                elif not maybe_created and reached is not None:
                    reached(False)
                raise
            except (JobConflict, PayloadTooLarge, AuthenticationError, RequestRefused):
                # Refused as a whole: nothing of the file was taken.
                if not maybe_created and reached is not None:
                    reached(False)
                raise
            except UnexpectedAnswer as exc:
                msg = (
                    f"{exc} The upload of {filename} was not repeated, since it may have "
                    "reached Userpilot; rerun from the last STATE once api_url answers as "
                    "Userpilot."
                )
                raise UnexpectedAnswer(msg) from None
            job = _job_object(answer)
            if job is not None:
                return job
            # Accepted, yet no job named: never sent again, only looked for (a lookup that
            # fails for a moment is retried as any transient failure).
            accepted_as = _describe(answer)
            return self._adopt_unnamed(endpoint, filename, accepted_as, ndjson)

        what = f"Uploading the {object} batch {filename}"
        try:
            job: dict[str, Any] = self.retry.wait_out_conflicts(
                lambda: self.retry.run(attempt, what, stop=stop), conflict_wait, stop=stop
            )
            if importing:
                self._import_jobs.add(job["job_id"])
            return job
        except JobConflict:
            msg = (
                f"Another bulk job held the Userpilot account for over {conflict_wait:.0f} s, "
                f"so the batch file {filename} could not be uploaded within "
                "job_timeout_seconds. Check the running jobs in Userpilot (another client may "
                "be loading), or raise job_timeout_seconds."
            )
            raise JobTimeout(msg) from None

    def _adopt_lost_import(self, filename: str, lost: TransientError | None) -> dict[str, Any]:
        """The answer to an import upload was lost: its job, if Userpilot lists it; else the
        file is :class:`Unconfirmed` (sending it again could import its events twice)."""
        job = self._listed_import(filename)
        if job is None:
            msg = (
                f"The answer to the upload of the events file {filename} was lost ({lost}), "
                "and Userpilot lists no import job for that file (GET /v1/background_jobs, "
                "GET /v1/imports): its events may or may not have been imported"
            )
            raise Unconfirmed(msg)
        logger.info(
            "Found import job %s from the interrupted upload of %s.", job["job_id"], filename
        )
        return job

    def _adopt_unnamed(
        self, endpoint: str, filename: str, described: str, ndjson: bool
    ) -> dict[str, Any]:
        """An upload accepted without a job id: find its job by filename, or say why not."""
        if ndjson:
            job = self.find_job(filename)
            if job is not None:
                logger.info(
                    "Userpilot accepted %s with %s; following its job %s from the jobs list.",
                    filename,
                    described,
                    job["job_id"],
                )
                return job
            where = "and the jobs list shows no job for that file"
        else:
            where = "and a JSON upload has no filename to find its job by"
        msg = (
            f"POST {endpoint} accepted the batch {filename} with {described} instead of a job "
            f"object, {where}: the target cannot follow the job. Check Userpilot's background "
            "jobs and api_url (a proxy may be answering), then rerun from the last STATE."
        )
        raise UnexpectedAnswer(msg)

    def job_status(self, job_id: str, *, stop: Stop | None = None) -> dict[str, Any]:
        """The job object of ``job_id``, its status in lower case.

        Transient failures and answers that are no job object are retried for a long while
        (``poll_max_time``): a poll changes nothing, and the job goes on meanwhile. Once
        ``stop`` is set a failed poll is not retried (:class:`WaitInterrupted`).
        """
        if job_id in self._import_jobs:
            return self._import_status(job_id, stop)
        return self._poll(f"/v1/background_jobs/{quote(str(job_id), safe='')}", job_id, stop)

    def _import_status(self, job_id: str, stop: Stop | None = None) -> dict[str, Any]:
        """An import job's status, wherever Userpilot serves it (it does not say where).

        ``/v1/background_jobs/{id}`` first, as for bulk jobs, then ``/v1/imports/{id}``; the
        place that knew the job is used from then on. If neither knows it, the job cannot be
        followed: it counts as completed once accepted (as a track request does on its 202),
        marked ``followed: False``, with one WARNING per run. The next upload still waits out
        a running job through 409.
        """
        if self._import_status_path is not None:
            return self._poll(f"{self._import_status_path}{quote(job_id, safe='')}", job_id, stop)
        job = self._import_job(job_id, stop)
        if job is not None:
            return job
        if not self._unfollowable_warned:
            self._unfollowable_warned = True
            logger.warning(
                "Userpilot accepted import job %s but shows its status neither at "
                "/v1/background_jobs/{id} nor at /v1/imports/{id}, so import jobs cannot be "
                "followed: each counts as loaded once Userpilot accepted it, and the next "
                "upload waits out a running job (HTTP 409). A failed import would go "
                "unnoticed: check the imports in Userpilot.",
                job_id,
            )
        return {"job_id": job_id, "status": "completed", "followed": False}

    def _import_job(self, job_id: str, stop: Stop | None = None) -> dict[str, Any] | None:
        """The import job ``job_id`` at the first status place that knows it (learned for the
        next polls), or None when none does."""
        quoted = quote(str(job_id), safe="")
        for place in IMPORT_STATUS_PATHS:
            try:
                job = self._poll(f"{place}{quoted}", job_id, stop)
            except JobNotFound:
                continue
            self._import_status_path = place
            return job
        return None

    def find_import(
        self, filename: str, job_id: str | None = None, *, stop: Stop | None = None
    ) -> dict[str, Any] | None:
        """An import job of an earlier upload (a run that crashed, or lost the answer): by
        ``job_id`` where import jobs' status is read, else by ``filename`` in the job lists.

        None only when every place answered and none shows it. A place that cannot be read
        (after the retries, or answering something that is not Userpilot's) raises: "not found"
        would be a guess, and a file found nowhere is never sent again. Once ``stop`` is set a
        failed look is not tried again (:class:`WaitInterrupted`).
        """
        if job_id is not None:
            self._import_jobs.add(job_id)
            job = self._import_job(job_id, stop)
            if job is not None:
                return job
        return self.retry.run(
            lambda: self._listed_import(filename),
            f"Looking for the import job of {filename}",
            stop=stop,
        )

    def _listed_import(self, filename: str) -> dict[str, Any] | None:
        """One look for the import job of ``filename`` in each list Userpilot may keep of
        them: the background jobs (as for bulk jobs), then ``GET /v1/imports``."""
        for place in IMPORT_LIST_PATHS:
            try:
                answer = self.transport.request("GET", place)
            except JobNotFound:
                continue  # no list there
            job = next((j for j in _job_list(answer, place) if j.get("filename") == filename), None)
            if job is not None:
                self._import_jobs.add(job["job_id"])
                return job
        return None

    def _poll(self, path: str, job_id: str, stop: Stop | None = None) -> dict[str, Any]:
        """One job's status at ``path``, retried for a long while (``poll_max_time``)."""

        def poll() -> dict[str, Any]:
            answer = self.transport.request("GET", path)
            job = _job_object(answer)
            if job is None or "status" not in job:
                msg = f"GET {path} answered with {_describe(answer)}, not a job object"
                raise UnexpectedAnswer(msg)
            return job

        what = (
            f"Reading the status of job {job_id} (it may still complete in Userpilot; "
            "nothing is uploaded again for it)"
        )
        return self.retry.poll(poll, what, stop=stop)

    def list_jobs(self) -> list[dict[str, Any]]:
        """One try at the account's bulk jobs; an answer that is no job list is an error."""
        return _job_list(self.transport.request("GET", JOBS_PATH), JOBS_PATH)

    def find_job(self, filename: str) -> dict[str, Any] | None:
        """The job created from ``filename``, if Userpilot has one (or lists none we can read)."""
        try:
            jobs = self.list_jobs()
        except UnexpectedAnswer:
            return None
        return next((job for job in jobs if job.get("filename") == filename), None)

    # Deletions and events

    def delete_profiles(
        self, object: str, ids: list[str], *, stop: Stop | None = None
    ) -> dict[str, Any]:
        """Ask Userpilot to delete ``ids`` of ``object`` (``users`` or ``companies``).

        Returns Userpilot's answer (``{}`` when it sent no body). Deleting is idempotent, so
        every transient failure is retried, until ``stop`` is set (:class:`WaitInterrupted`:
        erasure is never asked for after a stop); 413 raises :class:`PayloadTooLarge` for the
        caller to split the ids.
        """
        if object not in JOB_TYPES:
            raise ValueError(f"object must be 'users' or 'companies', not {object!r}")
        path = f"/v1/{object}"
        body = deletion_body(object, ids)
        what = f"Deleting {len(ids)} {object}"
        answer = self.retry.run(
            lambda: self.transport.request("DELETE", path, data=body, versioned=True),
            what,
            stop=stop,
        )
        if isinstance(answer, dict):
            return answer
        return {} if answer is None else {"message": answer}

    def track(
        self,
        user_id: str,
        event_name: str,
        metadata: dict[str, Any] | None,
        *,
        stop: Stop | None = None,
    ) -> None:
        """Send one event to ``/v1/track``.

        Raises :class:`EventRefused` when Userpilot refuses this event (a 4xx about its
        content), so the caller rejects that record alone; :class:`UserNotFound`, one kind of
        it, for a 404 (no such user), which proves the event was not recorded. Events are not
        idempotent: a failure is retried only when it proves the event was not taken (no
        connection, 429, 503 with Retry-After), after a 429 when the client's ``pace`` says, and
        never once ``stop`` is set (:class:`WaitInterrupted`: the event was not taken); a
        timeout or another 5xx after sending raises :class:`Unconfirmed`.
        """
        event: dict[str, Any] = {"user_id": user_id, "event_name": event_name}
        if metadata is not None:
            event["metadata"] = metadata
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        self.retry.run_once_in_effect(
            lambda: self.transport.request(
                "POST", "/v1/track", data=body, versioned=True, events=True
            ),
            "Sending an event to /v1/track",
            stop=stop,
            pace=self.pace,
        )

    # Sending

    def _post_batch(self, endpoint: str, object: str, path: str, filename: str) -> Any:
        """One try at sending a batch file: streamed as multipart, or as one JSON payload."""
        if self.upload_format == "ndjson" or object == EVENTS:
            return self.transport.send_file(endpoint, path, filename)
        with open(path, "rb") as handle:
            body = (
                b'{"'
                + object.encode()
                + b'":['
                + b",".join(line.rstrip(b"\n") for line in handle if line.strip())
                + b"]}"
            )
        return self.transport.request("POST", endpoint, data=body, content_type="application/json")


def _job_object(answer: Any) -> dict[str, Any] | None:
    """A job object with ``job_id`` as a string and ``status`` in lower case; else None."""
    if not isinstance(answer, dict):
        return None
    job_id = answer.get("job_id")
    if isinstance(job_id, bool) or not isinstance(job_id, str | int) or str(job_id) == "":
        return None
    job = dict(answer)
    job["job_id"] = str(job_id)
    status = answer.get("status")
    if isinstance(status, str) and status.strip():
        job["status"] = status.strip().lower()
    else:
        job.pop("status", None)  # a missing or unreadable status is no status
    return job


def _describe(answer: Any) -> str:
    """What an answer that is not a job object holds, in words (never its values)."""
    if answer is None:
        return "an empty body"
    if isinstance(answer, list):
        return "a JSON array"
    if isinstance(answer, dict) and _job_object(answer) is None:
        return "a JSON object without a job_id"
    if isinstance(answer, dict):
        return "a JSON object without a status"
    if isinstance(answer, bool):
        return "a JSON boolean"
    return "a JSON string" if isinstance(answer, str) else "a JSON number"


def _job_list(answer: Any, path: str) -> list[dict[str, Any]]:
    """The jobs of a list answer: a JSON array, or an object wrapping one (tolerated)."""
    jobs = answer
    if isinstance(answer, dict):
        jobs = answer.get("jobs", answer.get("data"))
    if not isinstance(jobs, list):
        msg = f"GET {path} answered JSON that is not a list of jobs"
        raise UnexpectedAnswer(msg)
    return [job for job in map(_job_object, jobs) if job is not None]
