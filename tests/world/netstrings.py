"""Netstrings (socketmap's framing) for tests, written independently of the daemon's protocols/.

A test encodes requests and decodes replies with this code, not with the
daemon's own framing, so a framing bug cannot hide by agreeing with itself.
"""

from __future__ import annotations

import socket


def netstring(payload: bytes) -> bytes:
    """``LEN:PAYLOAD,`` (socketmap_table(5))."""
    return b"%d:%s," % (len(payload), payload)


def read_netstring(sock: socket.socket) -> bytes:
    """The payload of the next netstring on ``sock``; what arrived so far if the peer closes first."""
    head = b""
    while not head.endswith(b":"):
        chunk = sock.recv(1)
        if not chunk:
            return head
        head += chunk
    length = int(head[:-1])
    body = b""
    while len(body) < length + 1:
        chunk = sock.recv(length + 1 - len(body))
        if not chunk:
            return head + body
        body += chunk
    return body[:-1]   # without the trailing ","


def socketmap_call(port: int, payload: bytes, host: str = "127.0.0.1", timeout_s: float = 10) -> bytes:
    """Send raw bytes (usually one netstring) on a new connection; the payload of the first reply."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        return read_netstring(sock)
