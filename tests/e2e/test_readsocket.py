"""The readsocket listener of the real daemon: Exim's half-close (``shutdown=yes``) over a real TCP socket.

That is where Twisted would otherwise drop the reply; the framing itself is
in tests/unit/test_readsocket.py.
"""

from __future__ import annotations

import socket

import pytest

from tests.world.daemon import DaemonProcess, free_port


@pytest.fixture()
def daemon(tmp_path):
    port = free_port()
    proc = DaemonProcess(tmp_path, f"""
[[listen]]
protocol = "readsocket"
tcp = "127.0.0.1:{port}"
""")
    proc.readsocket_port = port
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("request_bytes,shutdown", [
    (b".example.com\n", True),      # Exim's default: request, then shutdown(SHUT_WR)
    (b".example.com", True),        # no newline: the half-close ends the request
    (b".example.com\n", False),     # shutdown=no: the newline ends it
])
def test_real_socket_reply_then_eof(daemon, request_bytes: bytes, shutdown: bool) -> None:
    """A parent-domain probe answers NOTFOUND without DNS; the daemon then closes."""
    with socket.create_connection(("127.0.0.1", daemon.readsocket_port), timeout=10) as sock:
        sock.sendall(request_bytes)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(4096):   # Exim reads to EOF, so must we
            received += chunk
    assert received == b"NOTFOUND\n", daemon.log_tail()
