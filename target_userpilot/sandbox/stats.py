"""What the sandbox counts, so tests and benchmarks can judge a client: request counters, the
request log, refusals, injected faults and per-job timings."""

from __future__ import annotations

from typing import Any

from target_userpilot.sandbox.clock import Clock
from target_userpilot.sandbox.faults import ENDPOINTS, FAULT_KINDS
from target_userpilot.sandbox.jobs import JobBoard
from target_userpilot.sandbox.wire import Reply, Request

# Requests remembered by `request_log`, oldest dropped first: enough for any test or benchmark
# run, bounded for a sandbox left running for days.
_REQUEST_LOG_LIMIT = 100_000
_COUNTERS = (
    "requests",
    "uploads",
    "upload_attempts",
    "status_polls",
    "conflicts_foreign",
    "conflicts_own",
    "rows_received",
    "import_records",
    "deletion_requests",
    "deletions_accepted",
    "ids_scheduled",
    "track_requests",
    "events_received",
)
# The endpoint families counted in `by_endpoint` ("other": unknown routes and methods).
_ENDPOINTS = (*ENDPOINTS, "other")


class Tally:
    """Counters and the request log. Plain data: the account calls it under its lock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.clear()

    def clear(self) -> None:
        """Start counting from zero."""
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.rejected: dict[str, int] = {}
        self.faults_injected = dict.fromkeys(FAULT_KINDS, 0)
        self.request_log: list[dict[str, Any]] = []
        self.by_endpoint = {name: {"requests": 0, "rate_limited": 0} for name in _ENDPOINTS}

    def reject(self, status: int) -> None:
        """Count a request refused for what it carried (per HTTP status)."""
        key = str(status)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def log_request(
        self, arrived: float, request: Request, endpoint: str, fault: str | None, reply: Reply
    ) -> None:
        """Remember and count one /v1 call: when, what, the answer, the fault."""
        counts = self.by_endpoint[endpoint]
        counts["requests"] += 1
        if reply.status == 429 and not reply.drop:
            counts["rate_limited"] += 1
        if len(self.request_log) >= _REQUEST_LOG_LIMIT:
            del self.request_log[: _REQUEST_LOG_LIMIT // 10]
        self.request_log.append(
            {
                "at": round(arrived - self.clock.origin, 4),
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "status": None if reply.drop else reply.status,
                "fault": fault,
            }
        )

    def requests_copy(self) -> list[dict[str, Any]]:
        """The request log, entries copied."""
        return [dict(entry) for entry in self.request_log]

    def report(self, board: JobBoard, now: float) -> dict[str, Any]:
        """Counters plus per-job timings, relative to the sandbox's start in monotonic seconds."""
        rel = self.clock.since_start
        own = [job for job in board.jobs if not job.foreign]
        finished = [job for job in own if job.status is not None]
        timings = [
            {
                "job_id": job.job_id,
                "rows": job.total_rows,
                "status": job.status or job.phase(now),
                "accepted_at": rel(job.accepted),
                "completed_at": rel(job.end) if job.status else None,
                "first_seen_final_at": rel(job.first_seen_final),
                "polls": job.polls,
            }
            for job in own
        ]
        busy_share = None
        if finished:
            span = max(job.end for job in finished) - min(job.accepted for job in finished)
            busy = sum(job.end - job.accepted for job in finished)
            busy_share = round(min(busy / span, 1.0), 4) if span > 0 else None
        delays = [
            job.first_seen_final - job.end for job in finished if job.first_seen_final is not None
        ]
        return {
            **self.counts,
            "jobs": len(own),
            "rows_per_minute": board.rows_per_minute,
            "rejected": dict(self.rejected),
            "faults_injected": dict(self.faults_injected),
            "by_endpoint": {name: dict(counts) for name, counts in self.by_endpoint.items()},
            "job_timings": timings,
            "busy_share": busy_share,
            "notice_delay_avg": round(sum(delays) / len(delays), 4) if delays else None,
            "notice_delay_max": round(max(delays), 4) if delays else None,
            "polls_per_job_avg": (
                round(sum(job.polls for job in finished) / len(finished), 3) if finished else None
            ),
        }
