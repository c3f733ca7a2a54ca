"""Hypothesis properties of the three table framers: any bytes, any chunking, the same bounded behaviour.

For every input: feeding it in random pieces gives exactly what feeding it
whole gives (lookups made, bytes written, connection state); every reply is
well framed and within the protocol's reply limit; no more replies than
requests; and a well-formed request stream is answered in full, in order.
The budget fits CI: a few hundred examples per property.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mtasts_resolver.lookup import Answer, AnswerKind
from mtasts_resolver.protocols import (
    READSOCKET_MAX_REQUEST,
    SOCKETMAP_MAX_REPLY,
    TCP_TABLE_MAX_LINE,
    ReadsocketFactory,
    SocketmapFactory,
    TcpTableFactory,
    decode_tcp,
    encode_tcp,
)
from tests.unit.helpers import FakeService

CI = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
ANSWERS = {("postfix", "a.example"): Answer(AnswerKind.FOUND, "secure match=mx.a.example"),
           ("postfix", "t.example"): Answer(AnswerKind.TEMP, "later")}
FACTORIES = {
    "socketmap": lambda service: SocketmapFactory(service),
    "tcp_table": lambda service: TcpTableFactory(service, "postfix"),
    "readsocket": lambda service: ReadsocketFactory(service, "postfix"),
}


def run(protocol: str, data: bytes, cuts: list[int]) -> tuple[list, bytes, bool]:
    """Feed ``data`` split at ``cuts``: (lookups made, bytes written, whether the connection is closing)."""
    service = FakeService(ANSWERS)
    proto = FACTORIES[protocol](service).buildProtocol(PEER)
    clock = Clock()
    proto.callLater = clock.callLater
    transport = StringTransport()
    proto.makeConnection(transport)
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in zip(bounds, bounds[1:]):
        if start < end and not transport.disconnecting:
            proto.dataReceived(data[start:end])
            clock.advance(0)   # the reactor turns that handle what is past INPUT_PER_TURN
    return service.calls, transport.value(), transport.disconnecting


def netstrings(data: bytes) -> list[bytes] | None:
    """The payloads of a stream of complete netstrings, None if it is not one (a checker, not the framer)."""
    out = []
    while data:
        head, colon, rest = data.partition(b":")
        if not colon or not head.isdigit() or len(rest) < int(head) + 1 or rest[int(head)] != ord(","):
            return None
        out.append(rest[:int(head)])
        data = rest[int(head) + 1:]
    return out


keys = st.sampled_from(["a.example", "t.example", "n.example", "bücher.example", "[1.2.3.4]:25"])
noise = st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"0:,", b"5:", b":", b",", b"9:postfix a", b"get ", b"\n", b"%", b"%zz", b"\xff", b" ", b"99999:",
     b"x" * 3000]), max_size=30).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@CI
@given(st.sampled_from(sorted(FACTORIES)), noise, cuts)
def test_chunking_never_changes_what_happens(protocol: str, data: bytes, cut: list[int]) -> None:
    assert run(protocol, data, cut) == run(protocol, data, [])


@CI
@given(noise, cuts)
def test_socketmap_replies_are_netstrings_within_the_limit(data: bytes, cut: list[int]) -> None:
    calls, written, _ = run("socketmap", data, cut)
    replies = netstrings(written)
    assert replies is not None
    assert all(len(reply) <= SOCKETMAP_MAX_REPLY for reply in replies)
    assert len(calls) <= len(replies) <= data.count(b",")


@CI
@given(noise, cuts)
def test_tcp_table_replies_are_lines_within_the_limit(data: bytes, cut: list[int]) -> None:
    calls, written, _ = run("tcp_table", data, cut)
    lines = written.split(b"\n")
    assert lines[-1] == b""                                   # every reply ends its line
    assert all(len(line) + 1 <= TCP_TABLE_MAX_LINE and line[:4] in (b"200 ", b"400 ", b"500 ")
               for line in lines[:-1])
    assert len(calls) <= len(lines) - 1 <= data.count(b"\n")


@CI
@given(st.binary(max_size=2 * READSOCKET_MAX_REQUEST), cuts)
def test_readsocket_answers_at_most_once(data: bytes, cut: list[int]) -> None:
    calls, written, closing = run("readsocket", data, cut)
    assert written.count(b"\n") <= 1 and len(calls) <= 1
    if written:
        assert closing and written.endswith(b"\n")


@CI
@given(st.sampled_from(["socketmap", "tcp_table"]), st.lists(keys, max_size=20), cuts)
def test_well_formed_streams_are_answered_in_full_and_in_order(protocol: str, asked: list[str],
                                                               cut: list[int]) -> None:
    if protocol == "socketmap":
        data = b"".join(b"%d:postfix %s," % (len(b"postfix " + k.encode()), k.encode()) for k in asked)
    else:
        data = b"".join(b"get %s\n" % encode_tcp(k) for k in asked)
    calls, written, closing = run(protocol, data, cut)
    assert calls == [("postfix", key) for key in asked] and not closing
    replies = netstrings(written) if protocol == "socketmap" else written.split(b"\n")[:-1]
    assert len(replies) == len(asked)


@CI
@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=300))
def test_tcp_quoting_round_trips(text: str) -> None:
    encoded = encode_tcp(text)
    assert all(0x21 <= b < 0x7F for b in encoded)               # one line, no whitespace, printable
    assert decode_tcp(encoded) == text
