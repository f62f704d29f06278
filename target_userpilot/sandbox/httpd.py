"""HTTP serving: a threading HTTP/1.1 server on loopback (HTTPS with a certificate) that turns
each request into a `Request` for the API or the admin endpoints, and sends back their `Reply`."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from target_userpilot.sandbox.api import Account
from target_userpilot.sandbox.wire import Reply, Request, server_error

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover
    from typing_extensions import override

log = logging.getLogger("target_userpilot.sandbox")

_ADMIN_BODY_LIMIT = 1024 * 1024
_IDLE_CONNECTION_SECONDS = 300
# A client that connects and never completes the TLS handshake holds only its own thread.
_HANDSHAKE_SECONDS = 10


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side TLS context for the certificate and its key; ValueError if they do not
    load, in a sentence that says which files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the TLS certificate {certfile!r} with the key {keyfile!r} ({exc}). "
            f"Give a PEM certificate and its unencrypted PEM private key."
        ) from None
    return context


def require_loopback(host: str) -> None:
    """Refuse any host that is not loopback: the emulator accepts any upload and must never be
    reachable from another machine."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"userpilot-sandbox only listens on loopback (127.0.0.1, ::1 or localhost), "
            f"not on {host!r}. It accepts any upload without real security, so it must not be "
            f"reachable from other machines."
        )


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer carries Content-Length so connections are reused."""

    protocol_version = "HTTP/1.1"
    server_version = "userpilot-sandbox"
    sys_version = ""
    timeout = _IDLE_CONNECTION_SECONDS
    server: SandboxServer

    @override
    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake here, in the connection's own thread, not in the accept loop.
            self.request.settimeout(_HANDSHAKE_SECONDS)
            self.request.do_handshake()
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and
        # the client's delayed ACK add about 40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    @override
    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        is_api = path == "/v1" or path.startswith("/v1/")
        account = self.server.account
        try:
            body = self._read_body(account.body_limit() if is_api else _ADMIN_BODY_LIMIT)
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Reply.error(400, "invalid_request", "BAD_REQUEST", "unreadable body"))
            return
        request = Request(
            method=self.command,
            path=path,
            authorization=self.headers.get("Authorization"),
            content_type=self.headers.get("Content-Type", ""),
            body=body,
            api_version=self.headers.get("X-API-Version"),
        )
        try:
            if is_api:
                reply = account.serve_v1(request)
            elif path.startswith("/_sandbox/"):
                reply = self.server.admin(request)
            else:
                reply = Reply.error(404, "not_found", "NOT_FOUND", f"No route for {path}")
        except Exception:  # a sandbox bug must answer 500, not leave the client hanging
            log.exception("userpilot-sandbox failed on %s %s", self.command, path)
            reply = server_error(500)
        self._send(reply)

    def _read_body(self, limit: int) -> bytes | None:
        """Read the whole body (keep-alive needs it consumed); drop it unstored past `limit`."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length <= limit:
            data = self.rfile.read(length)
            if len(data) < length:
                raise ValueError("body shorter than Content-Length")
            return data
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                raise ValueError("body shorter than Content-Length")
            remaining -= len(chunk)
        return None

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing the sandbox needs
                break
            chunk = self.rfile.read(size)
            self.rfile.readline(16)
            total += size
            if total <= limit:
                parts.append(chunk)
            else:
                parts = []
        return b"".join(parts) if total <= limit else None

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            # Request read, nothing answered: the client sees the connection close under it.
            self.close_connection = True
            log.info('%s "%s" dropped on purpose', self.client_address[0], self.requestline)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (for example a read timeout)

    @override
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One INFO line per request: method, path and status only, never any header."""
        log.info('%s "%s" %s', self.client_address[0], self.requestline, code)

    @override
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class SandboxServer(ThreadingHTTPServer):
    """A threading server that knows its open connections, so `stop` can close idle ones."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        account: Account,
        admin: Callable[[Request], Reply],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.account = account
        self.admin = admin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    @override
    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup the sandbox neither needs nor
        # should make; bind the plain TCP way and record the address ourselves.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection."""
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a closed connection."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection, so kept-alive clients do not hold `stop` up."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    @override
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are routine here (timeouts are tested on purpose).
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class SandboxServer6(SandboxServer):
    """The same on an IPv6 loopback address."""

    address_family = socket.AF_INET6


def make_server(
    host: str,
    port: int,
    account: Account,
    admin: Callable[[Request], Reply],
    tls: ssl.SSLContext | None = None,
) -> SandboxServer:
    """Bind a server on `host:port` (port 0 picks a free one), serving HTTPS with `tls`."""
    server_class = SandboxServer6 if ":" in host else SandboxServer
    return server_class((host.strip("[]"), port), account, admin, tls)
