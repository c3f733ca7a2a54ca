"""An HTTPS server that impersonates many ``mta-sts.<domain>`` policy hosts.

All policy hosts of the world resolve to one loopback address; the server picks
the certificate from the TLS SNI name and the response from the Host header, so
each test scenario only needs one :class:`Route`.  Routes can be changed while
the server runs (policy rotation tests), can be slow (timeout tests) and can
present bad certificates (validation tests).
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .addresses import POLICY_IP, POLICY_PORT
from .pki import WRONG_NAME, TestPKI

WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"

#: Per-connection socket timeout: a vanished client must not pin a thread.
IO_TIMEOUT_S = 10.0


@dataclass
class Route:
    """What one policy host answers for ``GET /.well-known/mta-sts.txt``."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    delay_s: float = 0.0  # sleep before answering (slow server)
    location: str | None = None  # Location header (redirect tests)
    cert: str = "good"  # good | wrong-name | expired | self-signed


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer doing the TLS handshake in the per-request thread.

    Wrapping the listening socket would run handshakes in the accept loop,
    so one stuck client could stall every other test; here it cannot.
    """

    daemon_threads = True
    block_on_close = False  # stop() must not wait for sleeping handlers
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner: PolicyServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(IO_TIMEOUT_S)
        try:
            tls = self.owner._base_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # failed handshakes are the point of some tests
        try:
            _Handler(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = IO_TIMEOUT_S
    server_version = "mtasts-test-world"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging; pytest output stays readable."""

    def do_GET(self) -> None:
        owner = self.server.owner
        # Route like a virtual-hosting web server: by Host header, else SNI.
        host = self.headers.get("Host") or _sni_of(self.connection) or ""
        host = host.rsplit(":", 1)[0]
        route = owner._route(host)
        if self.path == WELL_KNOWN_PATH:
            owner._count(host)
        if self.path != WELL_KNOWN_PATH or route is None:
            self._reply(404, b"not found\n", "text/plain", None)
            return
        if route.delay_s and owner._stopping.wait(route.delay_s):
            return  # server is stopping: drop the connection
        self._reply(route.status, route.body, route.content_type, route.location)

    def _reply(self, status: int, body: bytes, ctype: str, location: str | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def sts_policy(*mx: str, mode: str = "enforce", max_age: int = 86400, eol: str = "\n") -> bytes:
    """A policy file (RFC 8461 §3.2) with one ``mx:`` line per pattern, each line ended by ``eol``."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {pattern}" for pattern in mx), f"max_age: {max_age}"]
    return (eol.join(lines) + eol).encode()


def _sni_of(conn: Any) -> str | None:
    return getattr(conn, "_world_sni", None)


class PolicyServer:
    """Many MTA-STS policy hosts behind one HTTPS address."""

    def __init__(self, pki: TestPKI, address: str = POLICY_IP, port: int = POLICY_PORT) -> None:
        self.pki = pki
        self.address = address
        self.port = port
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._hits: Counter[str] = Counter()
        self._handshakes: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Used when there is no SNI or no route: a cert that matches nothing.
        self._base_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = pki.write_cert(WRONG_NAME, "wrong-name")
        self._base_context.load_cert_chain(str(cert), str(key))
        self._base_context.sni_callback = self._on_sni

    # -- routes ---------------------------------------------------------
    def set(self, host: str, route: Route) -> None:
        """Serve ``route`` for ``host`` (e.g. ``mta-sts.x.test``) from now on."""
        host = _norm(host)
        self.pki.server_context(host, route.cert)  # issue certs outside handshakes
        with self._lock:
            self._routes[host] = route

    def remove(self, host: str) -> None:
        with self._lock:
            self._routes.pop(_norm(host), None)

    def hits(self, host: str) -> int:
        """Requests for the policy path received for host (routed or not)."""
        with self._lock:
            return self._hits[_norm(host)]

    def handshakes(self, host: str) -> int:
        """TLS ClientHellos naming host via SNI, even if validation failed."""
        with self._lock:
            return self._handshakes[_norm(host)]

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()
            self._handshakes.clear()

    def _route(self, host: str) -> Route | None:
        with self._lock:
            return self._routes.get(_norm(host))

    def _count(self, host: str) -> None:
        with self._lock:
            self._hits[_norm(host)] += 1

    def _on_sni(self, sslsock: ssl.SSLObject, server_name: str | None, _ctx: Any) -> None:
        """Swap in the certificate for the requested name and its route."""
        if not server_name:
            return
        host = _norm(server_name)
        sslsock._world_sni = host  # type: ignore[union-attr]
        with self._lock:
            self._handshakes[host] += 1
            route = self._routes.get(host)
        if route is not None:
            sslsock.context = self.pki.server_context(host, route.cert)

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        self._stopping.clear()
        self._server = _Server(self, (self.address, self.port))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"policy-server-{self.address}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on delay_s
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".")


__all__ = ["PolicyServer", "Route", "WELL_KNOWN_PATH", "sts_policy"]
