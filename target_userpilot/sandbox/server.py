"""`Sandbox`: a Userpilot-compatible API served on loopback, behind one small facade.

The real API cannot be used for tests: it runs one bulk job per account at 1,800 rows a
minute, and the failures a loader must survive (409 while another client's job runs, 413, 429,
dropped connections, timeouts after the upload already took effect, failed jobs) cannot be
provoked on demand. The sandbox serves the same endpoints, answers in the same shapes and can
inject each of those failures, repeatably, from a seeded random generator.

The facade's `/_sandbox/` endpoints (`serve_admin`, at the end) let a test or a demo in another
process read and set the same things over HTTP, with no auth and no faults. Where the rest lives:
the package's docstring.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from target_userpilot.clock import REAL_CLOCK
from target_userpilot.clock import Clock as Source
from target_userpilot.sandbox.api import Account
from target_userpilot.sandbox.clock import Clock
from target_userpilot.sandbox.faults import Faults
from target_userpilot.sandbox.httpd import (
    SandboxServer,
    make_server,
    require_loopback,
    tls_context,
)
from target_userpilot.sandbox.wire import Reply, Request

__all__ = ["Faults", "Sandbox", "require_loopback"]


class Sandbox:
    """A Userpilot-compatible API on loopback, with faults and inspection for tests.

    `rows_per_minute=0` (or None) makes jobs complete at once: they are final at the next
    request or call at the latest. Otherwise a job of N rows takes N / rows_per_minute minutes,
    of which the first 5% (at most 0.5 s) is `queued` and the next 5% `validating`.

    Deletion requests (`DELETE /v1/users`, `/v1/companies`) are admitted at most one per
    `delete_interval` seconds (Userpilot's 2; 0 or None: no limit), else 429 with Retry-After;
    more than `max_delete_ids` ids in one request (None: no limit) get 413.

    Track requests (`POST /v1/track`) are admitted up to `events_per_minute` in any sliding
    60 seconds (Userpilot's 600; 0 or None: no limit), else 429 with Retry-After; an event for
    a user without a profile gets 404 unless `track_requires_user=False`.

    Import API files (`POST /v1/imports`, NDJSON in the multipart field `file`) become jobs
    like bulk uploads, at the same rate and limits (`Faults.max_rows`, `max_bytes`: 413); a
    malformed line fails the job. Userpilot does not say two things, so both readings are
    served: with `imports_share_lane` (the default) an import job and a bulk job never run at
    once (409), without it each kind waits only for its own; `import_status_at` says where an
    import job's status is read, and where import jobs are listed: "background_jobs" (default,
    like bulk jobs), "imports" (`GET /v1/imports/{id}`, listed at `GET /v1/imports`) or "nowhere"
    (404 everywhere, listed nowhere). `imported_events` shows what
    completed import jobs brought in, with each record's `inserted_at`.

    Job status answers give `elapsed_time` in seconds and `start_time` / `end_time` to the
    millisecond; `elapsed_time` and `job_times` choose other readings Userpilot might use (see
    `set_job_figures`).

    `tls=(certfile, keyfile)` serves HTTPS (PEM files; the key unencrypted) and `url` starts
    with https://, for clients that must verify a certificate or go through a proxy.

    `clock` tells the sandbox's time (the real clock by default): a test hands it the
    simulated clock its lanes wait on (`target_userpilot.clock.SimulatedClock`), and jobs, rate
    limits and request times all run in simulated seconds. Injected slow answers stay real:
    they are about the client's socket timeouts.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "sandbox-key",
        rows_per_minute: float | None = 0.0,
        keep_uploads: bool = False,
        *,
        delete_interval: float | None = 2.0,
        max_delete_ids: int | None = None,
        events_per_minute: float | None = 600,
        track_requires_user: bool = True,
        imports_share_lane: bool = True,
        import_status_at: str = "background_jobs",
        tls: tuple[str, str] | None = None,
        elapsed_time: str = "seconds",
        job_times: str = "exact",
        clock: Source = REAL_CLOCK,
    ) -> None:
        require_loopback(host)
        self.host = host
        self.port = port
        self._tls = tls_context(*tls) if tls is not None else None
        self._account = Account(
            api_key,
            rows_per_minute,
            keep_uploads,
            delete_interval=delete_interval,
            max_delete_ids=max_delete_ids,
            events_per_minute=events_per_minute,
            track_requires_user=track_requires_user,
            clock=Clock(clock),
        )
        self._account.set_import_rules(imports_share_lane, import_status_at)
        self._account.set_job_figures(elapsed_time, job_times)
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        """Listen and serve in a daemon thread; port 0 picks a free port (see `url`)."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._account.stopping.clear()
        self._account.clock.restart()
        self._server = make_server(
            self.host,
            self.port,
            self._account,
            lambda request: serve_admin(self, request),
            self._tls,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop
            name=f"userpilot-sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        """Base URL to use as the target's `api_url`."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving, cut injected slow answers short and close kept-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._account.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def profiles(self, obj: str) -> dict[str, dict[str, Any]]:
        """Stored profiles of 'users' or 'companies', by id (deep copies, safe to modify)."""
        return self._account.profiles_copy(obj)

    def uploads(self) -> list[bytes]:
        """The file of every accepted upload, byte for byte, oldest first (the JSON body for
        JSON uploads). Needs `Sandbox(keep_uploads=True)`: uploads are not kept by default."""
        return self._account.uploads_copy()

    def set_faults(self, **faults: Any) -> None:
        """Replace the fault set (see `Faults`); with no arguments, clear it."""
        self._account.set_faults(Faults(**faults))

    def answer_next(
        self, endpoint: str, status: int, times: int = 1, retry_after: float | None = None
    ) -> None:
        """Answer the next `times` calls of an endpoint family ("bulk", "status", "list",
        "delete", "track") with HTTP `status` and nothing else: the call has no effect.

        5xx come as the API or a proxy sends them (with Retry-After only when `retry_after` is
        given), 429 with `retry_after` seconds (1 s by default), 4xx in
        Userpilot's error envelope. Scripted answers queue up in order, come before the random
        faults, survive `set_faults` and are cleared by `reset`.
        """
        self._account.answer_next(endpoint, status, times, retry_after)

    def set_limits(self, **limits: Any) -> None:
        """Change some of `delete_interval`, `max_delete_ids`, `events_per_minute` and
        `track_requires_user` (the constructor's meanings) while running; the others stay, and
        requests already admitted count against the new limits."""
        self._account.set_limits(**limits)

    def limits(self) -> dict[str, Any]:
        """The deletion and track limits in force, by the names `set_limits` takes."""
        return self._account.limits()

    def set_rows_per_minute(self, rows_per_minute: float | None) -> None:
        """Change the processing rate (0 or None: instant); a running job adopts it too."""
        self._account.set_rows_per_minute(rows_per_minute)

    def set_job_figures(
        self, elapsed_time: str | None = None, job_times: str | None = None
    ) -> None:
        """Change how job status answers read their times; None leaves a reading as it is.

        Userpilot does not document `elapsed_time`: `elapsed_time` is "seconds" (from
        acceptance to the end, or to now while running), "milliseconds", "rounded" (whole
        seconds, so a short job says 0) or "since_creation" (seconds from acceptance to the
        moment of asking, growing even after the end). `job_times` is "exact" (milliseconds)
        or "whole_seconds" for `start_time` and `end_time`. `reset` keeps them.
        """
        self._account.set_job_figures(elapsed_time, job_times)

    def hold_foreign_job(self, seconds: float, at_upload: int | None = None) -> None:
        """Let another client's job occupy the account for `seconds`: uploads get 409.

        With `at_upload=n` the hold starts when the n-th upload attempt arrives, so a test can
        put it in the middle of a run whatever the client's start-up time.
        """
        self._account.hold_foreign_job(seconds, at_upload)

    def reset(self) -> None:
        """Forget profiles, jobs, deletions, events, statistics, faults and any foreign hold."""
        self._account.reset()

    def stats(self) -> dict[str, Any]:
        """Counters and per-job timings, so tests and benchmarks can judge a client.

        Counters: `requests` (all /v1 calls), `upload_attempts`, `uploads` (accepted),
        `status_polls`, `conflicts_foreign` / `conflicts_own` (409s while another client's or one
        of our own jobs ran; a correct client causes no own conflicts), `jobs`, `rows_received`,
        `rejected` (per HTTP status) and `faults_injected` (per kind). Deletions:
        `deletion_requests` (every DELETE call), `deletions_accepted` (202s), `ids_scheduled`;
        events: `track_requests` (every track call) and `events_received` (202s).
        `by_endpoint` gives per endpoint family `requests` and `rate_limited` (429s given,
        whatever the cause). `job_timings` lists per job `accepted_at`, `completed_at` (by the
        clock), `first_seen_final_at` (first status call that showed it final) and `polls`, in
        seconds since start. Derived: `busy_share`, `notice_delay_avg` / `notice_delay_max` and
        `polls_per_job_avg`; None until a job ended.
        """
        return self._account.stats()

    def deletions(self, obj: str) -> list[str]:
        """Ids of 'users' or 'companies' scheduled for deletion since the start or the last
        reset, in request order (repeats included). Scheduling removes nothing: see
        `run_deletions`."""
        return self._account.deletions_copy(obj)

    def run_deletions(self) -> dict[str, int]:
        """Run the deletions scheduled since the last run, as Userpilot does daily at 02:00 UTC:
        each profile goes, a user's events with it. Returns the profiles removed per object."""
        return self._account.run_deletions()

    def events(self) -> list[dict[str, Any]]:
        """Every event received since the start or the last reset, oldest first: `user_id`,
        `event_name`, `metadata`, `received_at` (ISO 8601 UTC, as Userpilot stamps events) and
        `at` (seconds since start). A deletion run removes a deleted user's events."""
        return self._account.events_copy()

    def imported_events(self) -> list[dict[str, Any]]:
        """Every track and page_view record of a completed import job, oldest job first, as
        sent (`event_type`, `user_id`, `event_name`, `inserted_at`, `source`, `metadata`...)
        plus `imported_at` (when its job completed) and `job_id`. Identify records of an import
        update the profiles instead."""
        return self._account.imported_copy()

    def set_import_rules(
        self, share_lane: bool | None = None, status_at: str | None = None
    ) -> None:
        """Change the constructor's `imports_share_lane` and `import_status_at` while running."""
        self._account.set_import_rules(share_lane, status_at)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job, newest first, shaped as `GET /v1/background_jobs` shows them."""
        return self._account.job_views()

    def request_log(self) -> list[dict[str, Any]]:
        """Every `/v1` call, oldest first: `at` (seconds since start, on arrival), `method`,
        `path`, `endpoint` (its family: bulk, status, list, delete, track or other), `status`
        (None for a dropped connection) and the injected `fault`, if any.

        Lets a test judge a client's timing, e.g. that a retry after a 429 waited Retry-After.
        """
        return self._account.requests_copy()

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until no job runs (ours or a foreign hold); False if `timeout` passes first
        (both on the sandbox's clock)."""
        clock = self._account.clock.source
        deadline = clock.now() + timeout
        while True:
            idle, next_end = self._account.is_idle()
            if idle:
                return True
            now = clock.now()
            if now >= deadline:
                return False
            # Wait toward the next job's end, in short steps: the rate may change meanwhile.
            target = min(next_end if next_end is not None else now, deadline, now + 0.05)
            clock.wait(self._account.stopping, max(target - now, 0.001))


def serve_admin(sandbox: Sandbox, request: Request) -> Reply:
    """Answer one `/_sandbox/` call by calling the facade, as a test would in Python."""
    path = request.path.rstrip("/")
    routes_get: dict[str, Callable[[], object]] = {
        "/_sandbox/profiles/users": lambda: sandbox.profiles("users"),
        "/_sandbox/profiles/companies": lambda: sandbox.profiles("companies"),
        "/_sandbox/stats": sandbox.stats,
        "/_sandbox/jobs": sandbox.jobs,
        "/_sandbox/requests": sandbox.request_log,
        "/_sandbox/deletions": lambda: {
            "users": sandbox.deletions("users"),
            "companies": sandbox.deletions("companies"),
        },
        "/_sandbox/events": sandbox.events,
        "/_sandbox/imports": sandbox.imported_events,
        "/_sandbox/limits": sandbox.limits,
        "/_sandbox/deletions/users": lambda: sandbox.deletions("users"),
        "/_sandbox/deletions/companies": lambda: sandbox.deletions("companies"),
    }
    if request.method == "GET" and path in routes_get:
        return Reply.of_json(200, routes_get[path]())
    if request.method != "POST" or path not in (
        "/_sandbox/faults",
        "/_sandbox/reset",
        "/_sandbox/hold",
        "/_sandbox/rows_per_minute",
        "/_sandbox/run_deletions",
        "/_sandbox/answer_next",
        "/_sandbox/limits",
        "/_sandbox/import_rules",
        "/_sandbox/job_figures",
    ):
        return Reply.error(
            404, "not_found", "NOT_FOUND", f"No sandbox route {request.method} {path}"
        )
    try:
        document = json.loads(request.body or b"{}") if request.body is not None else None
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")
        if path == "/_sandbox/faults":
            sandbox.set_faults(**document)
        elif path == "/_sandbox/reset":
            sandbox.reset()
        elif path == "/_sandbox/limits":
            sandbox.set_limits(**document)
        elif path == "/_sandbox/import_rules":
            sandbox.set_import_rules(**document)
        elif path == "/_sandbox/job_figures":
            sandbox.set_job_figures(**document)
        elif path == "/_sandbox/answer_next":
            sandbox.answer_next(**document)
        elif path == "/_sandbox/run_deletions":
            return Reply.of_json(200, sandbox.run_deletions())
        elif path == "/_sandbox/hold":
            sandbox.hold_foreign_job(float(document["seconds"]), document.get("at_upload"))
        else:
            sandbox.set_rows_per_minute(document["rows_per_minute"])
    except (ValueError, TypeError, KeyError) as exc:
        return Reply.error(400, "invalid_request", "BAD_REQUEST", f"{path}: {exc}")
    return Reply.of_json(200, {"ok": True})
