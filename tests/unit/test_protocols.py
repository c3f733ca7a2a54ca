"""Framing tests for the socketmap_table(5) and tcp_table(5) protocols.

The service is faked: it answers from a table, synchronously, or with a
Deferred the test fires by hand.  Time is a ``Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from mtasts_resolver.config import DaemonConfig, ListenConfig
from mtasts_resolver.lookup import Answer, AnswerKind
from mtasts_resolver.protocols import (
    DEFAULT_IDLE_TIMEOUT_S,
    SOCKETMAP_MAX_REQUEST,
    TCP_TABLE_MAX_LINE,
    SocketmapFactory,
    SocketmapProtocol,
    TcpTableFactory,
    TcpTableProtocol,
    decode_tcp,
    encode_tcp,
)
from mtasts_resolver.protocols._limits import ConnectionBudget, ConnectionLimits
from mtasts_resolver.protocols._ordered import INPUT_PER_TURN
from tests.unit.helpers import FakeService
from tests.world.netstrings import netstring

FOUND, NOTFOUND, TEMP, PERM = (
    AnswerKind.FOUND,
    AnswerKind.NOTFOUND,
    AnswerKind.TEMP,
    AnswerKind.PERM,
)
MAP = "tlspolicy"
PEER = IPv4Address("TCP", "127.0.0.1", 40000)

ANSWERS = {
    (MAP, "found.example"): Answer(FOUND, "secure match=mx.found.example"),
    (MAP, "none.example"): Answer(NOTFOUND),
    (MAP, "notext.example"): Answer(NOTFOUND, "no policy"),
    (MAP, "temp.example"): Answer(TEMP, "dns timeout"),
    (MAP, "perm.example"): Answer(PERM, "bad policy"),
    (MAP, "bücher.example"): Answer(FOUND, "dane-only"),
    (MAP, "odd key"): Answer(FOUND, "odd"),
    ("other", "found.example"): Answer(FOUND, "other map"),
}

# None feeds the whole stream in one call; n feeds it n bytes at a time.
CHUNKINGS = [None, *range(1, 10)]


@dataclass
class Conn:
    proto: Protocol
    transport: StringTransport
    clock: Clock

    def feed(self, data: bytes, chunk: int | None = None) -> None:
        step = chunk or max(len(data), 1)
        for i in range(0, len(data), step):
            self.proto.dataReceived(data[i : i + step])
            self.clock.advance(0)   # the next reactor turns: input past INPUT_PER_TURN waits for them

    def take(self) -> bytes:
        """What was written since the last take."""
        written = self.transport.value()
        self.transport.clear()
        return written

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


def connect(factory: Factory) -> Conn:
    proto = factory.buildProtocol(PEER)
    clock = Clock()
    proto.callLater = clock.callLater
    transport = StringTransport()
    proto.makeConnection(transport)
    return Conn(proto, transport, clock)


@pytest.fixture
def capture_log(monkeypatch: pytest.MonkeyPatch) -> Callable[[type], list[dict]]:
    """Route a class's ``log`` to a list of events."""
    events: list[dict] = []

    def capture(cls: type) -> list[dict]:
        monkeypatch.setattr(cls, "log", Logger(observer=events.append))
        return events

    return capture


# --- Behaviour shared by both protocols ------------------------------------


@dataclass(frozen=True)
class Kit:
    """How to speak one protocol, for the tests that apply to both."""

    name: str
    factory: Callable[..., Factory]
    request: Callable[[str], bytes]  # key without spaces -> wire request
    found: Callable[[str], bytes]  # text without spaces -> wire FOUND reply
    notfound: bytes  # the NOTFOUND reply without text
    malformed: bytes  # a well-framed bad request
    malformed_reply: bytes
    internal_error: bytes
    half_request: bytes


SOCKETMAP = Kit(
    name="socketmap",
    factory=lambda service, **kw: SocketmapFactory(service, **kw),
    request=lambda key: netstring(f"{MAP} {key}".encode()),
    found=lambda text: netstring(b"OK " + text.encode()),
    notfound=b"9:NOTFOUND ,",
    malformed=b"0:,",
    malformed_reply=b"22:PERM malformed request,",
    internal_error=b"19:TEMP internal error,",
    half_request=b"23:tlspolicy fou",
)
TCP_TABLE = Kit(
    name="tcp_table",
    factory=lambda service, **kw: TcpTableFactory(service, MAP, **kw),
    request=lambda key: b"get %s\n" % key.encode(),
    found=lambda text: b"200 %s\n" % text.encode(),
    notfound=b"500 \n",
    malformed=b"get\n",
    malformed_reply=b"400 malformed%20request\n",
    internal_error=b"400 internal%20error\n",
    half_request=b"get fou",
)
each_protocol = pytest.mark.parametrize("kit", [SOCKETMAP, TCP_TABLE], ids=lambda k: k.name)


@each_protocol
@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_pending_answer_holds_back_later_replies(kit: Kit, chunk: int | None) -> None:
    slow: Deferred[Answer] = Deferred()
    service = FakeService({(MAP, "slow"): slow, (MAP, "fast"): Answer(FOUND, "B")})
    conn = connect(kit.factory(service))

    conn.feed(kit.request("slow") + kit.request("fast") + kit.malformed, chunk)

    assert service.calls == [(MAP, "slow"), (MAP, "fast")]
    assert conn.take() == b""
    slow.callback(Answer(FOUND, "A"))
    assert conn.take() == kit.found("A") + kit.found("B") + kit.malformed_reply


@each_protocol
def test_replies_follow_request_order_not_completion_order(kit: Kit) -> None:
    first: Deferred[Answer] = Deferred()
    third: Deferred[Answer] = Deferred()
    service = FakeService(
        {(MAP, "one"): first, (MAP, "two"): Answer(FOUND, "2"), (MAP, "three"): third}
    )
    conn = connect(kit.factory(service))
    conn.feed(kit.request("one") + kit.request("two") + kit.request("three"))

    third.callback(Answer(FOUND, "3"))
    assert conn.take() == b""
    first.callback(Answer(FOUND, "1"))
    assert conn.take() == kit.found("1") + kit.found("2") + kit.found("3")

    conn.feed(kit.request("two"))
    assert conn.take() == kit.found("2")


@each_protocol
def test_already_fired_deferred_is_answered_at_once(kit: Kit) -> None:
    conn = connect(kit.factory(FakeService({(MAP, "k"): succeed(Answer(FOUND, "v"))})))
    conn.feed(kit.request("k"))
    assert conn.take() == kit.found("v")


@each_protocol
def test_connection_lost_with_pending_lookup_writes_nothing_cancels_nothing(
    kit: Kit,
) -> None:
    cancelled: list[Deferred[Answer]] = []
    pending: Deferred[Answer] = Deferred(canceller=cancelled.append)
    conn = connect(kit.factory(FakeService({(MAP, "slow"): pending})))
    conn.feed(kit.request("slow") + kit.request("found.example"))

    conn.lose()
    answer = Answer(FOUND, "late")
    pending.callback(answer)  # must not raise

    assert conn.take() == b""
    assert cancelled == []
    seen: list[Answer] = []
    pending.addCallback(seen.append)
    assert seen == [answer]


@each_protocol
def test_shared_deferred_answers_every_connection(kit: Kit) -> None:
    shared: Deferred[Answer] = Deferred()
    service = FakeService({(MAP, "k"): shared})
    factory = kit.factory(service)
    gone, first, second = connect(factory), connect(factory), connect(factory)
    for conn in (gone, first, second):
        conn.feed(kit.request("k"))

    gone.lose()
    shared.callback(Answer(FOUND, "v"))

    assert gone.take() == b""
    assert first.take() == kit.found("v")
    assert second.take() == kit.found("v")


@each_protocol
def test_failed_lookup_replies_temp_and_logs(kit: Kit, capture_log) -> None:
    protocol_class = SocketmapProtocol if kit is SOCKETMAP else TcpTableProtocol
    events = capture_log(protocol_class)
    broken: Deferred[Answer] = Deferred()
    conn = connect(kit.factory(FakeService({(MAP, "bug"): broken})))
    conn.feed(kit.request("bug") + kit.request("none.example"))

    broken.errback(RuntimeError("service bug"))

    assert conn.take() == kit.internal_error + kit.notfound
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(RuntimeError)
    assert not conn.transport.disconnecting
    # The failure is left on the Deferred for any other observer.
    passed_on: list[Failure] = []
    broken.addErrback(passed_on.append)
    assert passed_on and passed_on[0].check(RuntimeError)


# --- Idle timeout ----------------------------------------------------------


@each_protocol
def test_stalled_half_request_is_dropped_after_idle_timeout(kit: Kit) -> None:
    conn = connect(kit.factory(FakeService(ANSWERS), limits=ConnectionLimits(request_timeout_s=1000)))
    conn.feed(kit.half_request)

    conn.clock.advance(DEFAULT_IDLE_TIMEOUT_S - 0.5)
    assert not conn.transport.disconnecting
    conn.clock.advance(0.5)
    # Aborted, not closed gracefully: a stalled peer may not read either.
    # (StringTransport.abortConnection records this as ``disconnected``.)
    assert conn.transport.disconnected
    assert conn.take() == b""


@each_protocol
def test_idle_timeout_is_configurable(kit: Kit) -> None:
    conn = connect(kit.factory(FakeService(ANSWERS), idle_timeout_s=5))
    conn.clock.advance(4.9)
    assert not conn.transport.disconnecting
    conn.clock.advance(0.1)
    assert conn.transport.disconnecting


@each_protocol
def test_traffic_resets_idle_timeout(kit: Kit) -> None:
    conn = connect(kit.factory(FakeService(ANSWERS), idle_timeout_s=10, limits=ConnectionLimits(request_timeout_s=1000)))
    for byte in kit.request("found.example"):
        conn.clock.advance(9)
        conn.feed(bytes([byte]))
    assert not conn.transport.disconnecting
    conn.clock.advance(10)
    assert conn.transport.disconnecting


@each_protocol
def test_late_reply_resets_idle_timeout(kit: Kit) -> None:
    slow: Deferred[Answer] = Deferred()
    conn = connect(kit.factory(FakeService({(MAP, "slow"): slow}), idle_timeout_s=10))
    conn.feed(kit.request("slow"))
    conn.clock.advance(9)
    slow.callback(Answer(FOUND, "v"))
    conn.clock.advance(9)
    assert not conn.transport.disconnecting
    conn.clock.advance(1)
    assert conn.transport.disconnecting


@each_protocol
def test_connection_lost_cancels_idle_timer(kit: Kit) -> None:
    conn = connect(kit.factory(FakeService(ANSWERS)))
    assert len(conn.clock.getDelayedCalls()) == 1
    conn.lose()
    assert conn.clock.getDelayedCalls() == []


# --- Per-client bounds (protocols/_limits.py) --------------------------------


class Hits:
    """An ``on_limit`` that remembers every hit."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, limit: str, detail: str) -> None:
        self.seen.append(limit)


@each_protocol
def test_request_must_complete_within_its_deadline_however_slowly_it_trickles(kit: Kit) -> None:
    hits = Hits()
    conn = connect(kit.factory(FakeService(ANSWERS), limits=ConnectionLimits(request_timeout_s=5), on_limit=hits))
    for byte in kit.half_request[:2]:            # one byte every 2 s: the idle timer never fires
        conn.feed(bytes([byte]))
        conn.clock.advance(2)
    assert not conn.transport.disconnected
    conn.clock.advance(1)                        # 5 s after the first byte
    assert conn.transport.disconnected           # aborted
    assert hits.seen == ["listen.request_timeout_s"]


@each_protocol
def test_each_request_gets_its_own_deadline(kit: Kit) -> None:
    conn = connect(kit.factory(FakeService({(MAP, "k"): Answer(FOUND, "v")}),
                               limits=ConnectionLimits(request_timeout_s=5)))
    request = kit.request("k")
    for _ in range(4):                           # 4 requests, each trickled over 4 s: 16 s in all
        for byte in request:
            conn.feed(bytes([byte]))
            conn.clock.advance(4 / len(request))
        assert conn.take() == kit.found("v")
    assert not conn.transport.disconnected
    assert len(conn.clock.getDelayedCalls()) == 1   # the idle timer only


@each_protocol
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_requests_past_max_in_flight_wait_with_reading_paused(kit: Kit, chunk: int | None) -> None:
    slow = {f"k{i}": Deferred() for i in range(5)}
    service = FakeService({(MAP, key): d for key, d in slow.items()})
    hits = Hits()
    conn = connect(kit.factory(service, limits=ConnectionLimits(max_in_flight=2), on_limit=hits))
    conn.feed(b"".join(kit.request(key) for key in slow) + kit.malformed + kit.request("k0"), chunk)
    assert [key for _, key in service.calls] == ["k0", "k1"]     # no lookup started past the cap
    assert conn.transport.producerState == "paused"
    assert hits.seen == ["listen.max_in_flight"]
    slow["k1"].callback(Answer(FOUND, "one"))
    assert conn.take() == b""                                   # k0 first, always
    slow["k0"].callback(Answer(FOUND, "zero"))
    assert conn.take() == kit.found("zero") + kit.found("one")
    assert [key for _, key in service.calls] == ["k0", "k1", "k2", "k3"]
    assert conn.transport.producerState == "paused"
    for key in ("k2", "k3", "k4"):
        slow[key].callback(Answer(FOUND, key))
    # the held error reply and the last (already answered) k0 come out in request order
    assert conn.take() == (kit.found("k2") + kit.found("k3") + kit.found("k4") + kit.malformed_reply
                           + kit.found("zero"))
    assert conn.transport.producerState == "producing"


@each_protocol
def test_unsent_replies_pause_reading_until_drained(kit: Kit) -> None:
    hits = Hits()
    conn = connect(kit.factory(FakeService(ANSWERS), on_limit=hits))
    producer = conn.transport.producer
    assert producer is not None and conn.transport.streaming
    producer.pauseProducing()                  # what a FileDescriptor does past bufferSize
    assert conn.transport.producerState == "paused"
    assert hits.seen == ["listen.max_unsent_bytes"]
    producer.resumeProducing()                 # and once its buffer is empty
    assert conn.transport.producerState == "producing"


@each_protocol
def test_a_big_read_is_handled_a_slice_per_reactor_turn(kit: Kit) -> None:
    """One read of thousands of pipelined requests must not hold the event loop (and everyone else) up."""
    service = FakeService({(MAP, "k"): Answer(FOUND, "v")})
    conn = connect(kit.factory(service))
    data = kit.request("k") * 5000
    conn.proto.dataReceived(data)
    first = len(service.calls)
    assert 0 < first <= INPUT_PER_TURN // len(kit.request("k")) + 1
    assert conn.transport.producerState == "paused"
    conn.clock.advance(0)
    assert len(service.calls) == 5000
    assert conn.take() == kit.found("v") * 5000
    assert conn.transport.producerState == "producing"


@each_protocol
def test_the_rest_of_a_read_waits_while_replies_are_unread(kit: Kit) -> None:
    service = FakeService({(MAP, "k"): Answer(FOUND, "v")})
    conn = connect(kit.factory(service))
    conn.proto.dataReceived(kit.request("k") * 5000)
    first = len(service.calls)
    conn.transport.producer.pauseProducing()      # the client does not read its replies
    conn.clock.advance(0)
    assert len(service.calls) == first            # nothing more is framed meanwhile
    conn.transport.producer.resumeProducing()     # it read them
    conn.clock.advance(0)
    assert len(service.calls) == 5000
    assert conn.transport.producerState == "producing"


def test_unsent_replies_threshold_is_the_transports_buffer_size() -> None:
    class Transport(StringTransport):
        bufferSize = 65536
    proto = SocketmapFactory(FakeService(ANSWERS), limits=ConnectionLimits(max_unsent_bytes=1234)).buildProtocol(PEER)
    transport = Transport()
    proto.makeConnection(transport)
    assert transport.bufferSize == 1234


def test_close_unregisters_the_producer_first() -> None:
    """FileDescriptor.loseConnection waits for a registered producer: it must be gone."""
    conn = connect(TcpTableFactory(FakeService(ANSWERS), MAP))
    conn.feed(b"x" * TCP_TABLE_MAX_LINE + b"\n")
    assert conn.transport.disconnecting and conn.transport.producer is None


def test_connections_are_capped_per_listener_and_in_total() -> None:
    budget = ConnectionBudget(3)
    hits = Hits()
    first = SocketmapFactory(FakeService(ANSWERS), limits=ConnectionLimits(max_connections=2), budget=budget, on_limit=hits)
    second = TcpTableFactory(FakeService(ANSWERS), MAP, budget=budget, on_limit=hits)
    a, b = connect(first), connect(first)
    assert first.buildProtocol(PEER) is None                       # listener full: closed at once
    c = connect(second)
    assert second.buildProtocol(PEER) is None                      # process full
    assert hits.seen == ["listen.max_connections", "daemon.max_connections"]
    a.lose()
    assert budget.open == 2 and len(first.live) == 1
    assert isinstance(second.buildProtocol(PEER), TcpTableProtocol)
    b.lose(), c.lose()
    assert budget.open == 0


def test_limit_defaults_are_the_config_defaults() -> None:
    listen, defaults = ListenConfig(), ConnectionLimits()
    assert (listen.max_connections, listen.max_in_flight, listen.request_timeout_s, listen.max_unsent_bytes) == (
        defaults.max_connections, defaults.max_in_flight, defaults.request_timeout_s, defaults.max_unsent_bytes)
    assert DaemonConfig().max_connections >= defaults.max_connections


# --- socketmap_table(5) ----------------------------------------------------

# (id, request stream, replies): each stream ends with a good request, to show
# the connection is still usable after a bad one.
SOCKETMAP_CASES = [
    ("found", b"23:tlspolicy found.example,", b"32:OK secure match=mx.found.example,"),
    ("notfound", b"22:tlspolicy none.example,", b"9:NOTFOUND ,"),
    ("notfound-text-dropped", b"24:tlspolicy notext.example,", b"9:NOTFOUND ,"),
    ("temp", b"22:tlspolicy temp.example,", b"16:TEMP dns timeout,"),
    ("perm", b"22:tlspolicy perm.example,", b"15:PERM bad policy,"),
    ("utf8-key", "25:tlspolicy bücher.example,".encode(), b"12:OK dane-only,"),
    ("key-with-space", b"17:tlspolicy odd key,", b"6:OK odd,"),
    ("map-name", b"19:other found.example,", b"12:OK other map,"),
    ("empty", b"0:,23:tlspolicy found.example,",
     b"22:PERM malformed request,32:OK secure match=mx.found.example,"),
    ("no-space", b"9:tlspolicy,23:tlspolicy found.example,",
     b"22:PERM malformed request,32:OK secure match=mx.found.example,"),
    ("empty-name", b"14: found.example,23:tlspolicy found.example,",
     b"22:PERM malformed request,32:OK secure match=mx.found.example,"),
    ("empty-key", b"10:tlspolicy ,23:tlspolicy found.example,",
     b"22:PERM malformed request,32:OK secure match=mx.found.example,"),
    ("non-utf8-key", b"20:tlspolicy \xff\xfe.example,23:tlspolicy found.example,",
     b"25:PERM request is not UTF-8,32:OK secure match=mx.found.example,"),
    ("non-utf8-name", b"18:\xffmap found.example,23:tlspolicy found.example,",
     b"25:PERM request is not UTF-8,32:OK secure match=mx.found.example,"),
]
socketmap_case = pytest.mark.parametrize(
    ("request_bytes", "replies"),
    [pytest.param(req, rep, id=name) for name, req, rep in SOCKETMAP_CASES],
)


@socketmap_case
@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_socketmap_replies(request_bytes: bytes, replies: bytes, chunk: int | None) -> None:
    conn = connect(SocketmapFactory(FakeService(ANSWERS)))
    conn.feed(request_bytes, chunk)
    assert conn.take() == replies
    assert not conn.transport.disconnecting


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_socketmap_pipelined_stream(chunk: int | None) -> None:
    conn = connect(SocketmapFactory(FakeService(ANSWERS)))
    conn.feed(b"".join(req for _, req, _ in SOCKETMAP_CASES), chunk)
    assert conn.take() == b"".join(rep for _, _, rep in SOCKETMAP_CASES)
    assert not conn.transport.disconnecting


def test_socketmap_passes_name_and_key_to_service() -> None:
    service = FakeService(ANSWERS)
    conn = connect(SocketmapFactory(service))
    conn.feed(b"19:other found.example,17:tlspolicy odd key,")
    assert service.calls == [("other", "found.example"), (MAP, "odd key")]


def test_socketmap_bad_requests_do_not_reach_service() -> None:
    service = FakeService(ANSWERS)
    conn = connect(SocketmapFactory(service))
    conn.feed(b"0:,9:tlspolicy,14: found.example,10:tlspolicy ,20:tlspolicy \xff\xfe.example,")
    assert service.calls == []
    assert conn.take().count(b"PERM") == 5


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"abc", id="no-length"),
        pytest.param(b"5:hello;", id="no-comma"),
        pytest.param(b"99999999999:", id="huge-length"),
        pytest.param(b"%d:" % (SOCKETMAP_MAX_REQUEST + 1), id="over-max-length"),
        pytest.param(b"007:tls,", id="leading-zero"),
        pytest.param(b"-1:", id="negative"),
        pytest.param(b":x,", id="empty-length"),
    ],
)
@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_socketmap_framing_error_drops_connection(garbage: bytes, chunk: int | None) -> None:
    conn = connect(SocketmapFactory(FakeService(ANSWERS)))
    conn.feed(b"23:tlspolicy found.example," + garbage + b"23:tlspolicy found.example,", chunk)
    # The reply before the error is sent; nothing after it is parsed.
    assert conn.take() == b"32:OK secure match=mx.found.example,"
    assert conn.transport.disconnecting


def test_socketmap_longest_request_is_accepted() -> None:
    service = FakeService(ANSWERS)
    conn = connect(SocketmapFactory(service))
    key = "k" * (SOCKETMAP_MAX_REQUEST - len(MAP) - 1)
    conn.feed(netstring(f"{MAP} {key}".encode()))
    assert service.calls == [(MAP, key)]
    assert conn.take() == b"9:NOTFOUND ,"
    assert not conn.transport.disconnecting


def test_socketmap_framing_error_logged_once(capture_log) -> None:
    events = capture_log(SocketmapProtocol)
    conn = connect(SocketmapFactory(FakeService(ANSWERS)))
    conn.feed(b"5:hello;")
    conn.feed(b"more:garbage")
    warnings = [e for e in events if e["log_level"] is LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0]["peer"] == conn.transport.getPeer()


@pytest.mark.parametrize(
    ("answer", "reply"),
    [
        pytest.param(
            Answer(FOUND, "x" * 99_997), b"100000:OK " + b"x" * 99_997 + b",", id="at-limit"
        ),
        pytest.param(Answer(FOUND, "x" * 99_998), b"19:PERM reply too long,", id="over"),
        pytest.param(Answer(FOUND, "é" * 50_000), b"19:PERM reply too long,", id="utf8-bytes"),
        pytest.param(Answer(TEMP, "x" * 200_000), b"19:PERM reply too long,", id="temp"),
    ],
)
def test_socketmap_reply_size_limit(answer: Answer, reply: bytes) -> None:
    conn = connect(SocketmapFactory(FakeService({(MAP, "big"): answer})))
    conn.feed(netstring(f"{MAP} big".encode()))
    assert conn.take() == reply
    assert not conn.transport.disconnecting


# --- tcp_table(5) ----------------------------------------------------------

TCP_CASES = [
    ("found", b"get found.example\n", b"200 secure%20match=mx.found.example\n"),
    ("notfound", b"get none.example\n", b"500 \n"),
    ("notfound-text", b"get notext.example\n", b"500 no%20policy\n"),
    ("temp", b"get temp.example\n", b"400 dns%20timeout\n"),
    ("perm", b"get perm.example\n", b"400 bad%20policy\n"),
    ("crlf", b"get found.example\r\n", b"200 secure%20match=mx.found.example\n"),
    ("tab-separator", b"get\tfound.example\n", b"200 secure%20match=mx.found.example\n"),
    ("xx-upper", b"get b%C3%BCcher.example\n", b"200 dane-only\n"),
    ("xx-lower", b"get b%c3%bccher.example\n", b"200 dane-only\n"),
    ("xx-space", b"get odd%20key\n", b"200 odd\n"),
    ("put", b"put found.example secure\nget none.example\n",
     b"500 read-only%20table\n500 \n"),
    ("unknown-command", b"del found.example\nget none.example\n",
     b"400 unknown%20command\n500 \n"),
    ("empty-line", b"\nget none.example\n", b"400 unknown%20command\n500 \n"),
    ("get-no-key", b"get\nget none.example\n", b"400 malformed%20request\n500 \n"),
    ("get-two-keys", b"get a b\nget none.example\n", b"400 malformed%20request\n500 \n"),
    ("bad-escape", b"get a%zz\nget none.example\n",
     b"400 malformed%20%25XX%20escape\n500 \n"),
    ("truncated-escape", b"get a%4\nget none.example\n",
     b"400 malformed%20%25XX%20escape\n500 \n"),
    ("escape-at-end", b"get a%\nget none.example\n",
     b"400 malformed%20%25XX%20escape\n500 \n"),
    ("non-utf8-escaped", b"get %FF\nget none.example\n",
     b"400 key%20is%20not%20UTF-8\n500 \n"),
    ("non-utf8-raw", b"get \xff\nget none.example\n", b"400 key%20is%20not%20UTF-8\n500 \n"),
]
tcp_case = pytest.mark.parametrize(
    ("request_bytes", "replies"),
    [pytest.param(req, rep, id=name) for name, req, rep in TCP_CASES],
)


@tcp_case
@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_tcp_replies(request_bytes: bytes, replies: bytes, chunk: int | None) -> None:
    conn = connect(TcpTableFactory(FakeService(ANSWERS), MAP))
    conn.feed(request_bytes, chunk)
    assert conn.take() == replies
    assert not conn.transport.disconnecting


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_tcp_pipelined_stream(chunk: int | None) -> None:
    conn = connect(TcpTableFactory(FakeService(ANSWERS), MAP))
    conn.feed(b"".join(req for _, req, _ in TCP_CASES), chunk)
    assert conn.take() == b"".join(rep for _, _, rep in TCP_CASES)
    assert not conn.transport.disconnecting


def test_tcp_uses_listener_map_name_and_decoded_key() -> None:
    service = FakeService(ANSWERS)
    conn = connect(TcpTableFactory(service, "sts"))
    conn.feed(b"get b%C3%BCcher.example\nget odd%20key\nget 100%25\n")
    assert service.calls == [("sts", "bücher.example"), ("sts", "odd key"), ("sts", "100%")]


def test_tcp_bad_requests_do_not_reach_service() -> None:
    service = FakeService(ANSWERS)
    conn = connect(TcpTableFactory(service, MAP))
    conn.feed(b"put k v\ndel k\n\nget\nget a b\nget %zz\nget %FF\n")
    assert service.calls == []
    assert len(conn.take().splitlines()) == 7


@pytest.mark.parametrize(
    ("data", "dropped"),
    [
        pytest.param(b"get " + b"k" * (TCP_TABLE_MAX_LINE - 5) + b"\n", False, id="at-limit"),
        pytest.param(b"get " + b"k" * (TCP_TABLE_MAX_LINE - 4) + b"\n", True, id="over"),
        pytest.param(b"get " + b"k" * TCP_TABLE_MAX_LINE, True, id="no-newline"),
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_tcp_request_line_limit(data: bytes, dropped: bool, chunk: int | None) -> None:
    conn = connect(TcpTableFactory(FakeService(ANSWERS), MAP))
    conn.feed(data, chunk)
    assert conn.transport.disconnecting is dropped
    assert conn.take() == (b"" if dropped else b"500 \n")


def test_tcp_request_over_limit_is_logged(capture_log) -> None:
    events = capture_log(TcpTableProtocol)
    conn = connect(TcpTableFactory(FakeService(ANSWERS), MAP))
    conn.feed(b"get " + b"k" * TCP_TABLE_MAX_LINE + b"\n")
    assert [e["log_level"] for e in events] == [LogLevel.warn]


@pytest.mark.parametrize(
    ("answer", "reply"),
    [
        pytest.param(Answer(FOUND, "x" * 4091), b"200 " + b"x" * 4091 + b"\n", id="at-limit"),
        pytest.param(Answer(FOUND, "x" * 4092), b"400 reply%20too%20long\n", id="over"),
        pytest.param(Answer(FOUND, " " * 1400), b"400 reply%20too%20long\n", id="encoded"),
        pytest.param(Answer(NOTFOUND, "x" * 5000), b"400 reply%20too%20long\n", id="notfound"),
    ],
)
def test_tcp_reply_size_limit(answer: Answer, reply: bytes) -> None:
    conn = connect(TcpTableFactory(FakeService({(MAP, "big"): answer}), MAP))
    conn.feed(b"get big\n")
    assert conn.take() == reply


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", b""),
        ("secure match=a:b servername=hostname", b"secure%20match=a:b%20servername=hostname"),
        ("100%", b"100%25"),
        ("\t\n\r\v\f", b"%09%0A%0D%0B%0C"),
        ("\x00\x1f\x7f", b"%00%1F%7F"),
        ("!~\"'", b"!~\"'"),
        ("é", b"%C3%A9"),
    ],
)
def test_encode_tcp(text: str, encoded: bytes) -> None:
    assert encode_tcp(text) == encoded
    assert decode_tcp(encoded) == text


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"plain.example", "plain.example"),
        (b"%41%4a%4A%6a%6A", "AJJjj"),
        (b"a%20b", "a b"),
        (b"%25%32%30", "%20"),
        (b"b%C3%BCcher", "bücher"),
        (b"raw%", None),
        (b"%4", None),
        (b"%g0", None),
        (b"%0g", None),
        (b"% 1", None),
        (b"%FF", None),
        (b"\xc3", None),
    ],
)
def test_decode_tcp(data: bytes, text: str | None) -> None:
    if text is None:
        with pytest.raises(ValueError):
            decode_tcp(data)
    else:
        assert decode_tcp(data) == text


def test_factories_build_configured_protocols() -> None:
    service = FakeService(ANSWERS)
    socketmap = SocketmapFactory(service, idle_timeout_s=7).buildProtocol(PEER)
    tcp = TcpTableFactory(service, "sts", idle_timeout_s=8).buildProtocol(PEER)
    assert isinstance(socketmap, SocketmapProtocol)
    assert (socketmap.service, socketmap.idle_timeout_s) == (service, 7)
    assert isinstance(tcp, TcpTableProtocol)
    assert (tcp.service, tcp.map_name, tcp.idle_timeout_s) == (service, "sts", 8)
