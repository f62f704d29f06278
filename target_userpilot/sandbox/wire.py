"""What passes between the HTTP layer and the emulated API: a request, a reply, and
Userpilot's error envelope. The API never touches sockets; the HTTP layer never decides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def errors_body(
    error: str, code: str, message: str, details: dict[str, Any] | None = None
) -> bytes:
    """Userpilot's error envelope, so clients exercise the same error parsing as in production."""
    errors = [{"error": error, "error_code": code, "message": message, "details": details or {}}]
    return json.dumps({"errors": errors}).encode()


def retry_after_header(seconds: float) -> str:
    """HTTP sends whole seconds; keep a fractional value only when the test asked for one."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


@dataclass
class Request:
    """What the API needs from an HTTP request, so the API never touches sockets."""

    method: str
    path: str
    authorization: str | None
    content_type: str
    body: bytes | None  # None when it was larger than allowed and was drained unread
    api_version: str | None = None  # the X-API-Version header, required by the real-time API


@dataclass
class Reply:
    """What the handler should send; `drop` means close the connection without answering."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @classmethod
    def of_json(cls, status: int, document: Any) -> Reply:
        """A JSON answer."""
        return cls(status, json.dumps(document).encode())

    @classmethod
    def error(cls, status: int, error: str, code: str, message: str) -> Reply:
        """An answer in Userpilot's error envelope."""
        return cls(status, errors_body(error, code, message))

    def retry_after(self, seconds: float) -> Reply:
        """Add a Retry-After header (for 429s) and return the reply."""
        self.headers["Retry-After"] = retry_after_header(seconds)
        return self


class Rejected(Exception):
    """A request Userpilot would refuse; carries the HTTP answer to give."""

    def __init__(self, status: int, error: str, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = Reply.error(status, error, code, message)


def server_error(status: int) -> Reply:
    """A 500 from the API itself is JSON; 502/503 come from a proxy in front of it, as HTML."""
    if status == 500:
        return Reply.error(500, "internal_error", "INTERNAL_SERVER_ERROR", "Internal error")
    text = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(
        status, "Server Error"
    )
    body = f"<html><body><h1>{status} {text}</h1></body></html>".encode()
    return Reply(status, body, "text/html")
