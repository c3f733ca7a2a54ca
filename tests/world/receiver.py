"""A tiny HTTPS report receiver (stdlib http.server + ssl) for RFC 8460 §5.4 POSTs.

``answers`` is consumed one status per request (then 200 for ever); a
``hang_s`` > 0 makes the next request wait that long before answering, so a
test can kill the reporter mid-request.  Every request body is kept.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Post:
    path: str
    content_type: str
    body: bytes
    status: int


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, hang_s = owner._next()
        owner._record(Post(self.path, self.headers.get("Content-Type", ""), body, status))
        if hang_s and owner._stopping.wait(hang_s):
            return
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, owner: ReportReceiver, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address) -> None:
        request.settimeout(10)
        try:
            tls = self.owner.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            _Handler(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request, client_address) -> None:
        """Clients that vanish (a killed reporter) are part of the tests."""


class ReportReceiver:
    def __init__(self, address: str, context: ssl.SSLContext, port: int = 443) -> None:
        self.address, self.port, self.context = address, port, context
        self.answers: list[int] = []
        self.hang_s = 0.0
        self.posts: list[Post] = []
        self.request_seen = threading.Event()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None

    def _next(self) -> tuple[int, float]:
        with self._lock:
            status = self.answers.pop(0) if self.answers else 200
            hang, self.hang_s = self.hang_s, 0.0
            return status, hang

    def _record(self, post: Post) -> None:
        with self._lock:
            self.posts.append(post)
        self.request_seen.set()

    def received(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def start(self) -> None:
        self._server = _Server(self, (self.address, self.port))
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
