"""The `/v1` API of one emulated Userpilot account: routing, faults, the key, and endpoints
(bulk uploads and job status; deletions; tracked events).

`Account` owns the one lock; the stored data, the job board, the fault dice and the tally it
holds are plain objects it calls under that lock.
"""

from __future__ import annotations

import hmac
import threading
from typing import Any
from urllib.parse import unquote

from target_userpilot.sandbox.clock import Clock
from target_userpilot.sandbox.faults import FaultDice, Faults
from target_userpilot.sandbox.jobs import IMPORTS, JobBoard, check_readings
from target_userpilot.sandbox.limits import Interval, PerMinute, RealTimeRules, retry_after_seconds
from target_userpilot.sandbox.payloads import (
    OBJECTS,
    ImportFile,
    Upload,
    parse_deletion,
    parse_event,
    parse_import,
    parse_upload,
)
from target_userpilot.sandbox.stats import Tally
from target_userpilot.sandbox.store import ProfileStore
from target_userpilot.sandbox.wire import Rejected, Reply, Request

# Multipart framing around the file: allowed on top of max_bytes before the body is refused
# unread, so a file just under the limit is still parsed and measured exactly.
_MULTIPART_SLACK_BYTES = 64 * 1024
#: The version the real-time and deletion APIs require in `X-API-Version`.
API_VERSION = "2020-09-22"


# The endpoint family (see `faults.ENDPOINTS`) of each route.
_ENDPOINT_OF_ROUTE = {
    "upload": "bulk",
    "import": "imports",
    "import_status": "status",
    "import_list": "list",
    "status": "status",
    "errors": "status",
    "list": "list",
    "delete": "delete",
    "track": "track",
}

# Calls that change the account: an injected slow answer comes after their effect.
_EFFECTFUL = frozenset({"upload", "import", "delete", "track"})


def route_v1(method: str, path: str) -> tuple[str, str]:
    """Map a /v1 call to (endpoint, argument); the job id arrives percent-encoded."""
    parts = path.rstrip("/").split("/")[2:]  # drop "" and "v1"
    if parts == ["track"]:
        return ("track", "") if method == "POST" else ("method", f"{path} takes POST")
    if parts == ["imports"]:
        if method == "GET":
            return ("import_list", "")
        return ("import", "") if method == "POST" else ("method", f"{path} takes POST")
    if len(parts) == 2 and parts[0] == "imports":
        return ("import_status", unquote(parts[1])) if method == "GET" else ("method", path)
    if len(parts) == 1 and parts[0] in OBJECTS:
        return ("delete", parts[0]) if method == "DELETE" else ("method", f"{path} takes DELETE")
    if len(parts) == 2 and parts[0] in OBJECTS and parts[1] == "bulk_identify":
        return ("upload", parts[0]) if method == "POST" else ("method", f"{path} takes POST")
    if parts and parts[0] == "background_jobs":
        if method != "GET":
            return ("method", f"{path} takes GET")
        if len(parts) == 1:
            return ("list", "")
        if len(parts) == 2:
            return ("status", unquote(parts[1]))
        if len(parts) == 3 and parts[2] == "errors":
            return ("errors", unquote(parts[1]))
    return ("unknown", "")


class Account:
    """One Userpilot account: profiles, jobs, faults and statistics, guarded by one lock."""

    def __init__(
        self,
        api_key: str | None,
        rows_per_minute: float | None,
        keep_uploads: bool = False,
        *,
        delete_interval: float | None = 2.0,
        max_delete_ids: int | None = None,
        events_per_minute: float | None = 600,
        track_requires_user: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.api_key = api_key
        self.rules = RealTimeRules(
            delete_interval, max_delete_ids, events_per_minute, track_requires_user
        )
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # set by `Sandbox.stop`: cuts slow answers short
        self.clock = clock or Clock()
        self.store = ProfileStore(keep_uploads)
        self.board = JobBoard(self.store, self.clock, rows_per_minute)
        self.dice = FaultDice()
        self.tally = Tally(self.clock)

    # --- what the facade calls ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget profiles, jobs, statistics, faults, scripted answers and any foreign hold."""
        with self.lock:
            self.store.clear()
            self.board.clear()
            self.dice = FaultDice()
            self.tally.clear()
            self.rules.clear()

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault set."""
        with self.lock:
            self.board.advance(self.clock.now())
            self.dice.use(faults)

    def set_limits(self, **settings: object) -> None:
        """Change the deletion and track rules (see `RealTimeRules.change`)."""
        with self.lock:
            self.rules.change(**settings)

    def limits(self) -> dict[str, Any]:
        """The deletion and track rules in force."""
        with self.lock:
            return self.rules.settings()

    def set_rows_per_minute(self, rows_per_minute: float | None) -> None:
        """Change the processing rate; a running job finishes at the new rate."""
        with self.lock:
            self.board.set_rows_per_minute(rows_per_minute, self.clock.now())

    def set_job_figures(self, elapsed_time: str | None, job_times: str | None) -> None:
        """Change how job status answers read their times (see `jobs.ELAPSED_READINGS`)."""
        with self.lock:
            elapsed = self.board.elapsed_time if elapsed_time is None else elapsed_time
            times = self.board.job_times if job_times is None else job_times
            check_readings(elapsed, times)
            self.board.elapsed_time, self.board.job_times = elapsed, times

    def hold_foreign_job(self, seconds: float, at_upload: int | None) -> None:
        """Let another client's job occupy the account (see `Sandbox.hold_foreign_job`)."""
        with self.lock:
            self.board.hold_foreign_job(seconds, at_upload, self.tally.counts["upload_attempts"])

    def profiles_copy(self, obj: str) -> dict[str, dict[str, Any]]:
        """Stored profiles of one object, as deep copies."""
        with self.lock:
            self.board.advance(self.clock.now())
            return self.store.profiles_copy(obj)

    def uploads_copy(self) -> list[bytes]:
        """The kept upload files, oldest first."""
        if not self.store.keep_uploads:
            raise RuntimeError("uploads are only kept with Sandbox(keep_uploads=True)")
        with self.lock:
            return list(self.store.uploads)

    def answer_next(
        self, endpoint: str, status: int, times: int, retry_after: float | None
    ) -> None:
        """Script the answers of the next calls of an endpoint family."""
        with self.lock:
            self.dice.script(endpoint, status, times, retry_after)

    def deletions_copy(self, obj: str) -> list[str]:
        """Ids scheduled for deletion, in request order."""
        with self.lock:
            return self.store.deletions_copy(obj)

    def run_deletions(self) -> dict[str, int]:
        """Apply the scheduled deletions now, after every job that has ended."""
        with self.lock:
            self.board.advance(self.clock.now())
            return self.store.run_deletions()

    def events_copy(self) -> list[dict[str, Any]]:
        """Every received event, oldest first."""
        with self.lock:
            return self.store.events_copy()

    def imported_copy(self) -> list[dict[str, Any]]:
        """Every event of a completed import job, oldest job first."""
        with self.lock:
            self.board.advance(self.clock.now())
            return self.store.imported_copy()

    def set_import_rules(self, share_lane: bool | None, status_at: str | None) -> None:
        """See `Sandbox.set_import_rules`."""
        with self.lock:
            self.board.set_import_rules(share_lane, status_at)

    def job_views(self) -> list[dict[str, Any]]:
        """Every job, newest first."""
        with self.lock:
            now = self.clock.now()
            self.board.advance(now)
            return self.board.views(now)

    def is_idle(self) -> tuple[bool, float | None]:
        """Whether no job runs, and otherwise when the next one ends by the clock."""
        with self.lock:
            self.board.advance(self.clock.now())
            next_end = self.board.next_end()
        return (next_end is None, next_end)

    def stats(self) -> dict[str, Any]:
        """See `Sandbox.stats`."""
        with self.lock:
            now = self.clock.now()
            self.board.advance(now)
            return self.tally.report(self.board, now)

    def requests_copy(self) -> list[dict[str, Any]]:
        """See `Sandbox.request_log`."""
        with self.lock:
            return self.tally.requests_copy()

    def body_limit(self) -> int:
        """Bytes of a /v1 body worth keeping in memory; anything larger is drained and refused."""
        with self.lock:
            return self.dice.faults.max_bytes + _MULTIPART_SLACK_BYTES

    # --- the /v1 API -------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        return scheme.lower() == "token" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def serve_v1(self, request: Request) -> Reply:
        """Answer one `/v1` call: faults first, then the key, then the endpoint itself.

        Faults come before authentication because in production they happen in front of the
        API (proxies, rate limiters, the network), where no key has been checked yet.
        """
        route = route_v1(request.method, request.path)
        endpoint = _ENDPOINT_OF_ROUTE.get(route[0], "other")
        # `Faults.only` knows two kinds of call: uploads, and everything about jobs.
        kind = {"bulk": "upload", "imports": "upload", "delete": "delete", "track": "track"}.get(
            endpoint, "status"
        )
        tally = self.tally
        with self.lock:
            arrived = self.clock.now()
            self.board.advance(arrived)
            tally.counts["requests"] += 1
            if route[0] in ("upload", "import"):
                tally.counts["upload_attempts"] += 1
                self.board.upload_attempt_arrived(tally.counts["upload_attempts"], arrived)
            elif route[0] in ("status", "list", "import_status", "import_list"):
                tally.counts["status_polls"] += 1
            elif route[0] == "delete":
                tally.counts["deletion_requests"] += 1
            elif route[0] == "track":
                tally.counts["track_requests"] += 1
            faults = self.dice.faults
            refusal = self.dice.scripted(endpoint)
            if refusal is not None:
                fault: str | None = "scripted"
            else:
                fault = self.dice.roll(endpoint, kind)
                refusal = self.dice.reply_for(fault)
            if fault:
                tally.faults_injected[fault] += 1
            if refusal is None and faults.forbidden and faults.selects(endpoint):
                tally.faults_injected["forbidden"] += 1
                refusal = Reply.error(403, "forbidden", "FORBIDDEN", "This API key is not allowed")
            if refusal is None and not self._authorized(request.authorization):
                refusal = Reply.error(401, "unauthorized", "UNAUTHORIZED", "Invalid API key")
            if refusal is None and route[0] in ("delete", "track"):
                rules = self.rules
                pace = rules.delete_pace if route[0] == "delete" else rules.event_pace
                refusal = self._admit_real_time(request, pace, arrived)
            if refusal is None and faults.refuse_uploads and route[0] in ("upload", "import"):
                tally.faults_injected["refuse"] += 1
                refusal = Reply.error(
                    faults.refuse_uploads,
                    "invalid_request",
                    "REQUEST_REFUSED",
                    "The sandbox refuses every upload (refuse_uploads fault).",
                )
            if refusal is not None:
                tally.log_request(arrived, request, endpoint, fault, refusal)
        if refusal is not None:
            return refusal

        # Calls with an effect are slowed after it; the others before answering.
        slow_after = route[0] in _EFFECTFUL
        if fault == "slow" and not slow_after:
            self.stopping.wait(faults.slow_seconds)
        reply = self._endpoint(route, request, faults)
        with self.lock:
            tally.log_request(arrived, request, endpoint, fault, reply)
        if fault == "slow" and slow_after:
            # The nasty realistic case: the job exists, but the client times out waiting.
            self.stopping.wait(faults.slow_seconds)
        return reply

    def _admit_real_time(
        self, request: Request, pace: Interval | PerMinute, now: float
    ) -> Reply | None:
        """The real-time API's own checks (the caller holds the lock): the version header, then
        the rate limit. None lets the request through."""
        if request.api_version is None or request.api_version.strip() != API_VERSION:
            return Reply.error(
                400,
                "invalid_request",
                "INVALID_API_VERSION",
                f"This endpoint requires the header X-API-Version: {API_VERSION}",
            )
        wait = pace.admit(now)
        if wait is None:
            return None
        return Reply.error(
            429, "rate_limited", "TOO_MANY_REQUESTS", "Too many requests"
        ).retry_after(retry_after_seconds(wait))

    def _endpoint(self, route: tuple[str, str], request: Request, faults: Faults) -> Reply:
        name, argument = route
        if name == "upload":
            return self._upload(argument, request, faults)
        if name == "import":
            return self._upload(IMPORTS, request, faults)
        if name == "import_status":
            return self._job_status(argument, errors_only=False, place="imports")
        if name == "delete":
            return self._delete(argument, request, faults)
        if name == "track":
            return self._track(request, faults)
        if name in ("status", "errors"):
            return self._job_status(argument, errors_only=name == "errors")
        if name in ("list", "import_list"):
            return self._job_list("background_jobs" if name == "list" else "imports")
        if name == "method":
            return Reply.error(405, "method_not_allowed", "METHOD_NOT_ALLOWED", argument)
        return Reply.error(404, "not_found", "NOT_FOUND", f"No route for {request.path}")

    def _job_list(self, place: str) -> Reply:
        """The jobs listed at `place`: every bulk job at /v1/background_jobs, with the import
        jobs wherever their status is served (`JobBoard.import_status_at`); GET /v1/imports
        lists import jobs only when their status is at /v1/imports/{id}, else answers 405."""
        with self.lock:
            if place == "imports" and self.board.import_status_at != "imports":
                return Reply.error(
                    405, "method_not_allowed", "METHOD_NOT_ALLOWED", "/v1/imports takes POST"
                )
            now = self.clock.now()
            self.board.advance(now)
            for job in self.board.jobs:
                if self.board.status_visible(job, place):
                    job.seen(now)
            return Reply.of_json(200, self.board.views(now, listed_at=place))

    def _job_status(self, job_id: str, errors_only: bool, place: str = "background_jobs") -> Reply:
        """One job's status (a poll), or the error report that a failed job's `links` names.

        `place` is where the call came: an import job is known at one place only (see
        `JobBoard.import_status_at`), a bulk job at /v1/background_jobs.
        """
        with self.lock:
            now = self.clock.now()
            self.board.advance(now)
            job = self.board.by_id.get(job_id)
            if job is not None and not self.board.status_visible(job, place):
                job = None
            if job is None:
                return Reply.error(404, "not_found", "NOT_FOUND", f"No background job {job_id!r}")
            view = self.board.view(job, now)
            if errors_only:
                errors = [view["error"]] if "error" in view else []
                return Reply.of_json(200, {"job_id": job.job_id, "errors": errors})
            job.polls += 1
            job.seen(now)
            return Reply.of_json(200, view)

    def _upload(self, obj: str, request: Request, faults: Faults) -> Reply:
        """Validate outside the lock (it may take a while), then accept under it.

        `obj` is users, companies, or imports (an Import API file of event records).
        """
        upload: Upload | ImportFile
        try:
            if obj == IMPORTS:
                upload = parse_import(
                    request.content_type, request.body, faults.max_rows, faults.max_bytes
                )
            else:
                upload = parse_upload(
                    obj, request.content_type, request.body, faults.max_rows, faults.max_bytes
                )
        except Rejected as rejected:
            with self.lock:
                self.tally.reject(rejected.reply.status)
            return rejected.reply
        if not upload.rows and not getattr(upload, "problem", None):
            with self.lock:
                self.tally.reject(400)
            return Reply.error(400, "invalid_request", "BAD_REQUEST", "the upload holds no rows")
        with self.lock:
            now = self.clock.now()
            self.board.advance(now)
            running = self.board.conflicting(obj)
            if running is not None:
                foreign = running.foreign
                self.tally.counts["conflicts_foreign" if foreign else "conflicts_own"] += 1
                return Reply.error(
                    409, "conflict", "JOB_IN_PROGRESS", "Another bulk job is in progress"
                )
            will_fail = self.dice.take_failed_job()
            if will_fail:
                self.tally.faults_injected["fail_job"] += 1
            job = self.board.accept(obj, upload, now, will_fail)
            self.tally.counts["uploads"] += 1
            self.tally.counts["import_records" if obj == IMPORTS else "rows_received"] += (
                job.total_rows
            )
            self.store.keep_upload(upload.data)
            # The submit answer is the job as accepted: always queued, even for instant jobs.
            view = self.board.view(job, now) | {"status": "queued", "completed_rows": 0}
            view["submitted_at"] = view["start_time"]
            return Reply.of_json(202, view)

    def _delete(self, obj: str, request: Request, faults: Faults) -> Reply:
        """Schedule deletions: stored in order, applied only by `run_deletions`."""
        try:
            ids = parse_deletion(
                obj, request.content_type, request.body, self.rules.max_delete_ids, faults.max_bytes
            )
        except Rejected as rejected:
            with self.lock:
                self.tally.reject(rejected.reply.status)
            return rejected.reply
        with self.lock:
            self.store.schedule_deletions(obj, ids)
            self.tally.counts["deletions_accepted"] += 1
            self.tally.counts["ids_scheduled"] += len(ids)
        # Userpilot's wording, plural whatever the count.
        return Reply.of_json(202, {"message": f"{len(ids)} {obj} scheduled for deletion"})

    def _track(self, request: Request, faults: Faults) -> Reply:
        """Store one event, stamped on receipt; its user must exist (unless told otherwise)."""
        try:
            event = parse_event(request.content_type, request.body, faults.max_bytes)
        except Rejected as rejected:
            with self.lock:
                self.tally.reject(rejected.reply.status)
            return rejected.reply
        with self.lock:
            now = self.clock.now()
            self.board.advance(now)
            if self.rules.track_requires_user and not self.store.has_profile(
                "users", event["user_id"]
            ):
                self.tally.reject(404)
                return Reply.error(
                    404,
                    "not_found",
                    "USER_NOT_FOUND",
                    "No user with this user_id: identify the user before tracking its events",
                )
            event["received_at"] = self.clock.iso(now)
            event["at"] = self.clock.since_start(now)
            self.store.add_event(event)
            self.tally.counts["events_received"] += 1
        return Reply.of_json(202, {"message": "Event received"})
