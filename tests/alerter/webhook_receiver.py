"""A real HTTPS webhook receiver on 127.0.0.1 for tests: records every request and answers from
a script (status, headers, reason phrase), 200 when the script is empty."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opspor_shared.devstack.certs import CertPaths


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class Received:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that refuses our certificate aborts the handshake: expected in some tests.
        self.receiver.handshake_failures += 1


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        reply = receiver.record(
            Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        self.send_response(reply.status, reply.reason)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WebhookReceiver:
    def __init__(self, certs: CertPaths, script: list[Reply] | None = None) -> None:
        self.script = list(script or [])
        self.handshake_failures = 0
        self._received: list[Received] = []
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert_file, certs.key_file)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        # The handshake happens in the request's thread, so a refused one blocks nothing.
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, target: str = "/hooks") -> str:
        return f"https://127.0.0.1:{self.port}{target}"

    def record(self, request: Received) -> Reply:
        with self._lock:
            self._received.append(request)
            return self.script.pop(0) if self.script else Reply()

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
