"""A small SMTP server for tests: an MX host with a good cert, a wrong-name cert or no STARTTLS.

It speaks just enough ESMTP for Postfix's smtp(8) client and for report
submission (EHLO, STARTTLS, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps every
message it accepted, and records whether each one arrived over TLS.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass

IO_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    tls: bool


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = IO_TIMEOUT_S

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        host = self.server.owner
        tls = False
        self._send(f"220 {host.name} ESMTP test")
        mail_from, rcpts = "", []
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                features = [host.name, "8BITMIME", "SIZE 10240000"]
                if host.starttls and not tls:
                    features.append("STARTTLS")
                for i, feature in enumerate(features):
                    self._send(f"250{'-' if i < len(features) - 1 else ' '}{feature}")
            elif verb == "STARTTLS" and host.starttls and not tls:
                self._send("220 go ahead")
                try:
                    conn = host.context.wrap_socket(self.connection, server_side=True)
                except (OSError, ssl.SSLError):
                    return  # the client rejected our certificate
                self.connection = conn
                self.rfile = conn.makefile("rb")
                self.wfile = conn.makefile("wb")
                tls = True
                mail_from, rcpts = "", []
            elif verb == "MAIL":
                mail_from, rcpts = line[10:].strip(), []
                self._send("250 ok")
            elif verb == "RCPT":
                rcpts.append(line[8:].strip())
                self._send("250 ok")
            elif verb == "DATA":
                self._send("354 end with .")
                data = bytearray()
                while True:
                    chunk = self.rfile.readline()
                    if not chunk:
                        return
                    if chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                host._store(Received(mail_from, tuple(rcpts), bytes(data), tls))
                self._send("250 queued")
            elif verb == "RSET":
                mail_from, rcpts = "", []
                self._send("250 ok")
            elif verb == "NOOP":
                self._send("250 ok")
            elif verb == "QUIT":
                self._send("221 bye")
                return
            else:
                self._send("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, owner: SmtpHost, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients dropping the connection mid-session are part of some tests."""


class SmtpHost:
    """One SMTP server on ``address:port``; ``context`` None means no STARTTLS."""

    def __init__(self, name: str, address: str, context: ssl.SSLContext | None, port: int = 25) -> None:
        self.name, self.address, self.port, self.context = name, address, port, context
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def starttls(self) -> bool:
        return self.context is not None

    def _store(self, message: Received) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def start(self) -> None:
        self._server = _Server(self, (self.address, self.port))
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True, name=f"smtp-{self.name}").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def wait_listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False
