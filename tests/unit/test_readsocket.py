"""The readsocket protocol (Exim ``${readsocket}``): one request, one reply line, then close.

Framing is checked on a ``StringTransport`` fed byte by byte; the half-close
over a real TCP socket is in tests/e2e/test_readsocket.py.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.protocols import READSOCKET_MAX_REQUEST, ReadsocketFactory
from tests.unit.helpers import FakeService

MAP = "exim"
ANSWERS = {
    "found.example": Answer(AnswerKind.FOUND, "secure match=mx.found.example servername=hostname"),
    "none.example": NOT_FOUND,
    "temp.example": Answer(AnswerKind.TEMP, "dns timeout"),
}


def make_service() -> FakeService:
    """ANSWERS on MAP; ``slow.example`` waits for the test to fire its Deferred."""
    return FakeService({(MAP, key): answer for key, answer in ANSWERS.items()}, slow={"slow.example"})


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
    service = make_service()
    proto, transport = connect(service)
    feed(proto, request_bytes, chunk)
    assert transport.value() == reply
    assert transport.disconnecting


def test_request_ended_by_half_close_without_newline() -> None:
    service = make_service()
    proto, transport = connect(service)
    feed(proto, b"found.example", 1)
    assert transport.value() == b""
    proto.readConnectionLost()
    assert service.calls == [(MAP, "found.example")]
    assert transport.value().startswith(b"OK secure")
    assert transport.disconnecting


def test_half_close_before_a_slow_answer_keeps_the_reply() -> None:
    service = make_service()
    proto, transport = connect(service)
    feed(proto, b"slow.example\n", None)
    proto.readConnectionLost()
    assert transport.value() == b"" and not transport.disconnecting
    service.pending["slow.example"].callback(ANSWERS["found.example"])
    assert transport.value().startswith(b"OK secure") and transport.disconnecting


def test_only_the_first_request_is_answered() -> None:
    service = make_service()
    proto, transport = connect(service)
    feed(proto, b"found.example\nnone.example\n", None)
    assert service.calls == [(MAP, "found.example")]
    assert transport.value().count(b"\n") == 1


def test_empty_connection_is_closed_on_half_close() -> None:
    service = make_service()
    proto, transport = connect(service)
    proto.readConnectionLost()
    assert service.calls == [] and transport.value() == b"" and transport.disconnecting


def test_overlong_request_drops_connection() -> None:
    service = make_service()
    proto, transport = connect(service)
    feed(proto, b"a" * (READSOCKET_MAX_REQUEST + 1), None)
    assert service.calls == [] and transport.value() == b"" and transport.disconnecting
