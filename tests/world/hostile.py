"""A hostile policy host, and what the tests measure on the daemon under attack.

:class:`HostileServer` is an HTTPS server for many ``mta-sts.<domain>`` names
on one address (127.60.N.2:443), each name bound to a :data:`BEHAVIOURS`
entry that writes raw HTTP bytes: valid policies in every framing
(Content-Length, chunked, close-delimited) and attacks (headers that never
end, a 1xx storm, a slow body, oversize bodies of each framing).  It counts
the connections it holds open per name, so a test can see when the daemon
hung up.  :func:`proc_usage` reads a process tree's RSS and open file
descriptors from /proc, :class:`SteadyClient` is the well-behaved client
that must keep being answered during an attack, and :func:`set_limits`
writes short limits into a test daemon's config so attacks end quickly.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .addresses import HOSTILE_POLICY_IP

if TYPE_CHECKING:
    from .daemon import DaemonProcess
from .pki import TestPKI

_HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


class _Stop(Exception):
    """The server is stopping or the client hung up: end the behaviour."""


@dataclass
class _Peer:
    sock: ssl.SSLSocket
    stopping: threading.Event

    def send(self, data: bytes) -> None:
        if self.stopping.is_set():
            raise _Stop
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            raise _Stop from None

    def pause(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise _Stop


Behaviour = Callable[[_Peer, bytes], None]   # (peer, policy body)


def content_length(peer: _Peer, body: bytes) -> None:
    peer.send(_HEAD_OK + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


def chunked(peer: _Peer, body: bytes) -> None:
    peer.send(_HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), 7):   # small chunks: framing the client must reassemble
        part = body[i:i + 7]
        peer.send(b"%x\r\n%s\r\n" % (len(part), part))
    peer.send(b"0\r\n\r\n")


def close_delimited(peer: _Peer, body: bytes) -> None:
    """HTTP/1.0 style: no length, the body ends when the connection does (RFC 9112 §6.3 item 8)."""
    peer.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)


def endless_headers(peer: _Peer, body: bytes) -> None:
    peer.send(_HEAD_OK)
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    while True:
        peer.send(line * 16)


def informational_storm(peer: _Peer, body: bytes) -> None:
    while True:
        peer.send(b"HTTP/1.1 100 Continue\r\n\r\n" * 256)


def slow_body(peer: _Peer, body: bytes) -> None:
    peer.send(_HEAD_OK + b"Content-Length: %d\r\n\r\n" % len(body))
    for byte in body:
        peer.send(bytes([byte]))
        peer.pause(0.5)


def _endless(peer: _Peer) -> None:
    block = b"# " + b"x" * 8189 + b"\n"
    while True:
        peer.send(block)


def oversize_content_length(peer: _Peer, body: bytes) -> None:
    peer.send(_HEAD_OK + b"Content-Length: %d\r\n\r\n" % (1 << 30) + body)
    _endless(peer)


def oversize_undeclared_content_length(peer: _Peer, body: bytes) -> None:
    """Announces a small body, which the client takes, then keeps sending: ignored after the length."""
    peer.send(_HEAD_OK + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    _endless(peer)


def oversize_chunked(peer: _Peer, body: bytes) -> None:
    peer.send(_HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n")
    block = b"x" * 8192
    while True:
        peer.send(b"%x\r\n%s\r\n" % (len(block), block))


def oversize_close_delimited(peer: _Peer, body: bytes) -> None:
    peer.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
    _endless(peer)


BEHAVIOURS: dict[str, Behaviour] = {f.__name__.replace("_", "-"): f for f in (
    content_length, chunked, close_delimited, endless_headers, informational_storm, slow_body,
    oversize_content_length, oversize_chunked, oversize_close_delimited)}


class HostileServer:
    """HTTPS on HOSTILE_POLICY_IP:443; ``set(host, behaviour, body)`` decides what ``host`` gets."""

    def __init__(self, pki: TestPKI, address: str = HOSTILE_POLICY_IP, port: int = 443) -> None:
        self.pki = pki
        self.address, self.port = address, port
        self._routes: dict[str, tuple[Behaviour, bytes]] = {}
        self._open: Counter[str] = Counter()
        self._served: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = pki.write_cert("hostile.invalid")
        self._context.load_cert_chain(str(cert), str(key))
        self._context.sni_callback = self._on_sni

    def set(self, host: str, behaviour: str, body: bytes = b"") -> None:
        self.pki.server_context(host)   # issue the certificate outside a handshake
        with self._lock:
            self._routes[host] = (BEHAVIOURS[behaviour], body)

    def open_connections(self, host: str) -> int:
        """Connections for ``host`` whose client has not hung up yet."""
        with self._lock:
            return self._open[host]

    def served(self, host: str) -> int:
        with self._lock:
            return self._served[host]

    def wait_closed(self, host: str, timeout_s: float) -> float | None:
        """Seconds until ``host`` has no open connection, None if that takes longer than ``timeout_s``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.open_connections(host) == 0:
                return time.monotonic() - start
            time.sleep(0.05)
        return None

    def _on_sni(self, sslsock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            sslsock.context = self.pki.server_context(name)
            sslsock.world_sni = name  # type: ignore[union-attr]   # server_hostname is None on a server

    def start(self) -> None:
        self._stopping.clear()
        self._listener = socket.create_server((self.address, self.port), reuse_port=False, backlog=256)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, name="hostile-accept", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> HostileServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        host = getattr(tls, "world_sni", "")
        with self._lock:
            self._open[host] += 1
            self._served[host] += 1
            route = self._routes.get(host)
        try:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                request += chunk
            if route is not None:
                route[0](_Peer(tls, self._stopping), route[1])   # then close: close-delimited needs it
        except (_Stop, OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                self._open[host] -= 1
            try:
                tls.close()
            except OSError:
                pass


def proc_usage(pid: int) -> tuple[int, int]:
    """(RSS in bytes, open file descriptors) of a process and its descendants, from /proc.

    The descendants are the daemon's resolver processes: the policy fetches'
    sockets and buffers live there, so a bound on the daemon alone would not
    be one.
    """
    rss, fds = 0, 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            fds += len(os.listdir(f"/proc/{member}/fd"))
        except FileNotFoundError:   # ended meanwhile
            continue
    return rss, fds


def child_pids(pid: int) -> list[int]:
    """The children of ``pid`` (the daemon's: its resolver processes), from /proc; [] once it is gone."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
    except FileNotFoundError:
        pass
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    found, pending = [], [pid]
    while pending:
        member = pending.pop()
        found.append(member)
        pending.extend(child_pids(member))
    return found


class SteadyClient(threading.Thread):
    """Calls ``ask()`` in a loop until stopped; records every latency and every answer not ``expected``."""

    def __init__(self, ask: Callable[[], bytes], expected: bytes, pause_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self._ask, self._expected, self._pause_s = ask, expected, pause_s
        self.latencies: list[float] = []
        self.wrong: list[bytes] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                answer = self._ask()
            except OSError as exc:
                answer = repr(exc).encode()
            self.latencies.append(time.monotonic() - start)
            if answer != self._expected:
                self.wrong.append(answer)
            self.stopping.wait(self._pause_s)

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def set_limits(proc: DaemonProcess, daemon: dict[str, object], listen: dict[str, object]) -> None:
    """Add keys to the ``[daemon]`` table and to every ``[[listen]]`` table of a DaemonProcess's config."""
    def toml(values: dict[str, object]) -> str:
        return "".join(f"{key} = {value!r}\n" for key, value in values.items())

    text = proc.config_path.read_text()
    text = text.replace("[daemon]\n", "[daemon]\n" + toml(daemon), 1)
    text = text.replace("[[listen]]\n", "[[listen]]\n" + toml(listen))
    proc.config_path.write_text(text)
