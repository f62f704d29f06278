"""Loopback stand-ins for what sits between the target and Userpilot, for the client's tests.

- `ScriptedServer`: answers each route from a script (any status, body or header), to try
  answers Userpilot's docs do not promise, and records every request it got.
- `TlsFront`: HTTPS in front of a plain loopback server (the sandbox), with a certificate from
  `make_certificates`, which signs it with a test CA through the openssl command.
- `TimedSession`: a requests session with a default timeout, for calling a server directly.
- `ConnectProxy`: a forward proxy that tunnels CONNECT and records every byte it sees, so a
  test can prove what a corporate proxy would (not) see in clear.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override


class TimedSession(requests.Session):
    """A session with a default timeout, so a server's bug fails a test instead of hanging it."""

    @override
    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return super().request(*args, **kwargs)


@dataclass
class Answer:
    """One scripted HTTP answer; ``drop`` closes the connection instead of answering; ``delay``
    seconds pass before the answer (the request is recorded, as taken, on arrival)."""

    status: int = 200
    body: bytes | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


@dataclass
class Seen:
    """One request as the scripted server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Answers ``(method, path)`` from a list, the last answer repeating once the rest are used.

    Unscripted routes get 404. Every request is recorded in ``seen``, in arrival order.
    """

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Answer]] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = outer._next(self.command, self.path, dict(self.headers.items()), body)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.drop:
                    self.close_connection = True
                    return
                payload = answer.encoded()
                self.send_response(answer.status)
                headers = {"Content-Type": "application/json", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

            @override
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read what was recorded."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, method: str, path: str, *answers: Answer) -> None:
        """Script the answers to ``method path``, in order."""
        with self._lock:
            self.script[(method, path)] = list(answers)

    def requests_to(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (s.method, s.path) == (method, path)]

    def _next(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            self.seen.append(Seen(method, path, headers, body))
            answers = self.script.get((method, path))
            if not answers:
                return Answer(404, {"errors": [{"message": f"no route {path}"}]})
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Certificates:
    """A test CA and a server certificate it signed, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path, hostnames: list[str]) -> Certificates:
    """A CA and a server certificate for ``hostnames`` (plus 127.0.0.1), made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=" + hostnames[0])
    names = ",".join([*(f"DNS:{name}" for name in hostnames), "IP:127.0.0.1"])
    (folder / "ext.cnf").write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
    )  # fmt: skip
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")


def _pipe(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
    """Copy bytes until either side closes; keep a copy in ``record`` if given."""
    with contextlib.suppress(OSError):
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            if record is not None:
                record.extend(chunk)
            sink.sendall(chunk)
    for side in (source, sink):
        with contextlib.suppress(OSError):
            side.shutdown(socket.SHUT_RDWR)


class _Listener:
    """A loopback listening socket whose connections are handled each in a thread."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._socket.getsockname()[1]
        return port

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


class TlsFront(_Listener):
    """Terminates TLS with ``certificates`` and passes the clear bytes to ``backend_port``."""

    def __init__(self, certificates: Certificates, backend_port: int) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificates.cert, certificates.key)
        self._backend_port = backend_port
        self.handshake_failures = 0
        super().__init__()

    @override
    def handle(self, connection: socket.socket) -> None:
        try:
            secure = self._context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            connection.close()
            return
        backend = socket.create_connection(("127.0.0.1", self._backend_port))
        threading.Thread(target=_pipe, args=(backend, secure, None), daemon=True).start()
        _pipe(secure, backend, None)


class ConnectProxy(_Listener):
    """A forward proxy: tunnels ``CONNECT host:port`` (``hosts`` maps names to loopback) and
    refuses plain proxied requests with 502. ``heads`` holds each request head it read and
    ``clear`` every byte that crossed it, both ways: all a proxy operator could see."""

    def __init__(self, hosts: dict[str, str] | None = None) -> None:
        self.hosts = hosts or {}
        self.heads: list[str] = []
        self.clear = bytearray()
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @override
    def handle(self, connection: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            if not chunk:
                connection.close()
                return
            head += chunk
        self.clear.extend(head)
        text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        self.heads.append(text)
        method, target, _ = text.split("\r\n", 1)[0].split(" ", 2)
        if method != "CONNECT":
            connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            connection.close()
            return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((self.hosts.get(host, host), int(port)))
        connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=_pipe, args=(upstream, connection, self.clear), daemon=True).start()
        _pipe(connection, upstream, self.clear)


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    """Close the given servers on the way out."""
    try:
        yield
    finally:
        for server in servers:
            server.close()
