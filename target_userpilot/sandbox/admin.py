"""The `/_sandbox/` endpoints: no auth and no faults, so tests can always see the truth."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from target_userpilot.sandbox.wire import Reply, Request

if TYPE_CHECKING:
    from target_userpilot.sandbox.server import Sandbox


def serve_admin(sandbox: Sandbox, request: Request) -> Reply:
    """Answer one `/_sandbox/` call by calling the facade, as a test would in Python."""
    path = request.path.rstrip("/")
    routes_get = {
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
