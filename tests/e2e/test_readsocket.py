"""The readsocket protocol (Exim ``${readsocket}``): one request, one reply line, then close.

Framing is checked on a ``StringTransport`` fed byte by byte; the half-close
that Exim does by default (``shutdown=yes``) is checked over a real TCP
socket, since that is where Twisted would otherwise drop the reply.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.protocols import READSOCKET_MAX_REQUEST, ReadsocketFactory

MAP = "exim"
ANSWERS = {
    "found.example": Answer(AnswerKind.FOUND, "secure match=mx.found.example servername=hostname"),
    "none.example": NOT_FOUND,
    "temp.example": Answer(AnswerKind.TEMP, "dns timeout"),
}


class FakeService:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.pending: dict[str, Deferred[Answer]] = {}

    def lookup(self, map_name: str, key: str) -> Answer | Deferred[Answer]:
        self.calls.append((map_name, key))
        if key == "slow.example":
            return self.pending.setdefault(key, Deferred())
        return ANSWERS.get(key, NOT_FOUND)


def connect(service: FakeService):
    proto = ReadsocketFactory(service, MAP).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    return proto, transport


def feed(proto, data: bytes, chunk: int | None) -> None:
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        proto.dataReceived(data[i:i + step])


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7])
@pytest.mark.parametrize("request_bytes,reply", [
    (b"found.example\n", b"OK secure match=mx.found.example servername=hostname\n"),
    (b"found.example\r\n", b"OK secure match=mx.found.example servername=hostname\n"),
    (b"none.example\n", b"NOTFOUND\n"),
    (b"temp.example\n", b"TEMP dns timeout\n"),
    (b"\n", b"PERM malformed request\n"),
    (b"two words\n", b"PERM malformed request\n"),
    (b"\xff\xfe\n", b"PERM malformed request\n"),
])
def test_one_reply_line_then_close(request_bytes: bytes, reply: bytes, chunk: int | None) -> None:
    service = FakeService()
    proto, transport = connect(service)
    feed(proto, request_bytes, chunk)
    assert transport.value() == reply
    assert transport.disconnecting


def test_request_ended_by_half_close_without_newline() -> None:
    service = FakeService()
    proto, transport = connect(service)
    feed(proto, b"found.example", 1)
    assert transport.value() == b""
    proto.readConnectionLost()
    assert service.calls == [(MAP, "found.example")]
    assert transport.value().startswith(b"OK secure")
    assert transport.disconnecting


def test_half_close_before_a_slow_answer_keeps_the_reply() -> None:
    service = FakeService()
    proto, transport = connect(service)
    feed(proto, b"slow.example\n", None)
    proto.readConnectionLost()
    assert transport.value() == b"" and not transport.disconnecting
    service.pending["slow.example"].callback(ANSWERS["found.example"])
    assert transport.value().startswith(b"OK secure") and transport.disconnecting


def test_only_the_first_request_is_answered() -> None:
    service = FakeService()
    proto, transport = connect(service)
    feed(proto, b"found.example\nnone.example\n", None)
    assert service.calls == [(MAP, "found.example")]
    assert transport.value().count(b"\n") == 1


def test_empty_connection_is_closed_on_half_close() -> None:
    service = FakeService()
    proto, transport = connect(service)
    proto.readConnectionLost()
    assert service.calls == [] and transport.value() == b"" and transport.disconnecting


def test_overlong_request_drops_connection() -> None:
    service = FakeService()
    proto, transport = connect(service)
    feed(proto, b"a" * (READSOCKET_MAX_REQUEST + 1), None)
    assert service.calls == [] and transport.value() == b"" and transport.disconnecting


@pytest.fixture()
def daemon(tmp_path):
    from tests.world.daemon import DaemonProcess, free_port

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
