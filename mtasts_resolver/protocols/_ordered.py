"""What the table protocols share: in-order replies, the idle timeout, and the per-client bounds.

Postfix may pipeline lookups on one connection, and the service answers a
cached key at once but a cold one only later, so a later request can be
answered before an earlier one.  Neither socketmap_table(5) nor tcp_table(5)
tags replies with the request they answer: the client pairs them by order
alone.  :class:`OrderedReplyMixin` therefore holds back every answer until all
earlier ones have been sent.

The bounds of :mod:`._limits` are enforced here too, so each protocol only
frames: connections per listener and in total (:class:`TableFactory`),
requests in flight and unsent reply bytes per connection (reading paused),
and a deadline for a request once its first byte is in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from mtasts_resolver.lookup import Answer, AnswerKind, LookupService

from ._limits import ConnectionBudget, ConnectionLimits, LimitHit, ignore_limit
from ._write import write_now

# Close a connection after this many seconds without traffic either way.
# Postfix never leaves a healthy connection idle this long: its socketmap
# client closes a connection after 10 s idle or 100 s age, and both its
# socketmap and tcp_table clients give up on a reply after 100 s
# (dict_sockmap.c, dict_tcp.c; tcp_table(5): "Send and receive operations
# must complete in 100 seconds").  A connection quiet for longer is a dead or
# stalled peer, such as one that sent half a request and stopped.  If we do
# close first, no lookup fails: the socketmap client silently reconnects on
# EOF, and the tcp_table client (which never hangs up an idle connection,
# tcp_table(5) BUGS) logs "unexpected EOF", waits 1 s and reconnects.
DEFAULT_IDLE_TIMEOUT_S = 110.0

# Input handled per connection per reactor turn.  One 64 KiB read of tiny
# pipelined requests is ~3,000 lookups: parsed and answered in one go, it held
# every other connection up for ~50 ms.  4 KiB (a hundred requests, well over
# anything Postfix sends at once) is about a millisecond; the rest of the read
# waits for the next turn, with reading paused meanwhile.
INPUT_PER_TURN = 4096
_NEXT_TURN = "input per turn"   # a pause reason that is no limit: nothing is refused or logged
# While paused for one of these, what is left of a read waits too.
_HOLD_INPUT = frozenset({"listen.max_in_flight", "listen.max_unsent_bytes"})

# The reply when the service breaks its promise that the Deferred never
# fails.  TEMP makes Postfix defer the mail rather than send it with a
# weaker TLS policy than the domain asked for.
INTERNAL_ERROR = Answer(AnswerKind.TEMP, "internal error")


@dataclass(slots=True)
class _Slot:
    """The place in the reply order of a request that has no answer yet."""

    answer: Answer | None = None


class LiveConnections:
    """The open connections of one listener: counted for ``STATUS=`` and the caps, drained on stop.

    A factory that has one as ``live`` gets every connection it builds
    registered here for as long as the connection is open.  ``limit`` caps
    this listener, ``budget`` every listener of the process together.
    """

    def __init__(self, limit: int | None = None, budget: ConnectionBudget | None = None) -> None:
        self._live: set[OrderedReplyMixin] = set()
        self._limit = limit
        self._budget = budget

    def __len__(self) -> int:
        return len(self._live)

    def refusal(self) -> str | None:
        """The config key of the cap one more connection would pass, or None."""
        if self._limit is not None and len(self._live) >= self._limit:
            return "listen.max_connections"
        if self._budget is not None and self._budget.open >= self._budget.limit:
            return "daemon.max_connections"
        return None

    def add(self, connection: OrderedReplyMixin) -> None:
        if connection not in self._live and self._budget is not None:
            self._budget.open += 1
        self._live.add(connection)

    def discard(self, connection: OrderedReplyMixin) -> None:
        if connection in self._live and self._budget is not None:
            self._budget.open -= 1
        self._live.discard(connection)

    def close_when_answered(self) -> Deferred[None]:
        """Let every connection send the replies it owes, then close it.

        Fires once all are closed.  Postfix's clients reconnect on EOF, so a
        restart costs no lookup, where dropping a connection with a lookup
        in flight would make that lookup fail.
        """
        closing = [connection.closeWhenAnswered() for connection in list(self._live)]
        return gatherResults(closing).addCallback(lambda _: None)

    def abort(self) -> None:
        """Drop every connection now (the drain took too long)."""
        for connection in list(self._live):
            connection.transport.abortConnection()


@implementer(IPushProducer)
class _UnsentReplies:
    """Registered with the transport, which pauses it once unsent replies pass its ``bufferSize``.

    The transport resumes it when its buffer has drained: Twisted's own
    flow control, with the connection's reading as what it pauses.
    """

    def __init__(self, connection: OrderedReplyMixin) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection.on_limit("listen.max_unsent_bytes", self._connection.peer())
        self._connection.pauseReading("listen.max_unsent_bytes")

    def resumeProducing(self) -> None:
        self._connection.resumeReading("listen.max_unsent_bytes")

    def stopProducing(self) -> None:
        """The connection is going away: connectionLost does the rest."""


class OrderedReplyMixin(TimeoutMixin):
    """Replies in request order, the idle timeout and the per-connection bounds, for a table protocol.

    Mix in before the framing receiver (``NetstringReceiver``,
    ``LineReceiver``).  The protocol parses a request, calls :meth:`ask`
    with its map name and key (or :meth:`reply` with its own error answer),
    encodes answers in :meth:`sendAnswer`, closes with
    :meth:`closeConnection` and says in :meth:`partialRequest` whether its
    framer holds part of a request.
    """

    log: ClassVar[Logger]
    on_limit: LimitHit = staticmethod(ignore_limit)   # the factory's, set when it builds us

    def __init__(
        self,
        service: LookupService,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        super().__init__()
        self.service = service
        self.idle_timeout_s = idle_timeout_s
        self.limits = limits
        # Requests read while max_in_flight were pending: run once replies
        # drain, in order.  At most one read's worth: reading is paused.
        self._held: deque[Callable[[], Answer | Deferred[Answer]]] = deque()
        self._releasing = False
        self._paused: set[str] = set()   # why reading is paused (config keys)
        self._requests = 0               # requests parsed so far
        self._deadline: IDelayedCall | None = None   # for the partial request
        self._deadline_for = -1          # _requests when it was armed
        self._unfed = b""                # the part of a read left for later turns
        self._turn: IDelayedCall | None = None
        # Requests whose replies are held back, oldest first.  Empty on the
        # hot path: a synchronous answer with nothing pending is sent at once.
        self._pending: deque[_Slot] = deque()
        self._batch: list[bytes] | None = None  # replies to send together, while handling input
        self._live: LiveConnections | None = None
        self._closing = False  # closeWhenAnswered() was called
        self._lost: list[Deferred[None]] = []  # fired by connectionLost

    def sendAnswer(self, answer: Answer) -> None:
        """Encode one reply and pass it to :meth:`writeReply`; protocols implement this."""
        raise NotImplementedError

    def partialRequest(self) -> bool:
        """Whether the framer holds the start of a request; protocols implement this."""
        raise NotImplementedError

    def peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{peer.host}:{peer.port}" if hasattr(peer, "port") else str(getattr(peer, "name", "") or "unix")

    def withinLimit(self, reply: bytes, limit: int, too_long: bytes, kind: AnswerKind) -> bytes:
        """``reply``, or ``too_long`` (logged) when it exceeds the protocol's reply limit.

        An over-long reply would be cut or refused by Postfix, which then
        retries; a short error reply makes the problem visible at once.
        """
        if len(reply) <= limit:
            return reply
        self.log.warn("{kind} reply of {length} bytes exceeds the protocol limit of {limit}; replying {instead!r}",
                      kind=kind.value, length=len(reply), limit=limit, instead=too_long)
        return too_long

    def writeReply(self, data: bytes) -> None:
        """Queue an encoded reply for the current batch, or send it now if there is none.

        Replies made while one read or one Deferred is handled go out in a
        single send (see :meth:`_batched`), so pipelined requests cost one
        segment, not one each.
        """
        if self._batch is not None:
            self._batch.append(data)
        else:
            write_now(self.transport, data)

    def _batched(self, handle: Callable[[], None]) -> None:
        """Run ``handle`` collecting every reply it makes, then send them together."""
        if self._batch is not None:  # already inside a batch
            handle()
            return
        self._batch = []
        try:
            handle()
        finally:
            batch, self._batch = self._batch, None
            if batch:
                write_now(self.transport, b"".join(batch))

    def ask(self, map_name: str, key: str) -> None:
        """Look ``key`` up and reply in order; past ``max_in_flight`` held back, reading paused."""
        self._requests += 1
        if not self._held and len(self._pending) < self.limits.max_in_flight:
            self._place(self.service.lookup(map_name, key))
            return
        if not self._held:
            self.on_limit("listen.max_in_flight", self.peer())
            self.pauseReading("listen.max_in_flight")
        self._held.append(lambda: self.service.lookup(map_name, key))

    def reply(self, answer: Answer) -> None:
        """Send the protocol's own ``answer`` (an error) once every earlier request has had its reply."""
        self._requests += 1
        if self._held:
            self._held.append(lambda: answer)
        else:
            self._place(answer)

    def _release_held(self) -> None:
        """Look up held requests while under ``max_in_flight``; resume reading once none is left."""
        if self._releasing:   # an answer already known re-enters through _flush
            return
        self._releasing = True
        try:
            while self._held and len(self._pending) < self.limits.max_in_flight:
                self._place(self._held.popleft()())
        finally:
            self._releasing = False
        if not self._held:
            self.resumeReading("listen.max_in_flight")

    def pauseReading(self, reason: str) -> None:
        if not self._paused:
            self.transport.pauseProducing()
        self._paused.add(reason)

    def resumeReading(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if (reason != _NEXT_TURN and self._unfed and self._turn is None and not self._paused & _HOLD_INPUT
                and not self.transport.disconnecting):
            self._turn = self.callLater(0, self._next_turn)   # what is left of the read goes first
        elif not self._paused and not self._closing and not self.transport.disconnecting:
            self.transport.resumeProducing()

    def closeConnection(self) -> None:
        """``loseConnection``, once our producer is unregistered: Twisted waits for a registered one."""
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _place(self, result: Answer | Deferred[Answer]) -> None:
        """Send ``result`` once every earlier request has had its reply."""
        if isinstance(result, Answer):
            if self._pending:
                self._pending.append(_Slot(result))
            else:
                self.sendAnswer(result)
            return
        slot = _Slot()
        self._pending.append(slot)
        result.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(slot,),
            errbackArgs=(slot,),
        )

    def _answered(self, answer: Answer, slot: _Slot) -> Answer:
        """Fill the slot, and pass the answer on unchanged.

        The Deferred belongs to the service, which may hand the same one to
        several connections: we observe it and must not alter what the next
        observer receives.
        """
        slot.answer = answer
        self._flush()
        return answer

    def _failed(self, failure: Failure, slot: _Slot) -> Failure:
        """Reply TEMP for a failed lookup, and pass the failure on unchanged.

        A failure is a bug in the service.  It stays on the Deferred for the
        same reason as in :meth:`_answered`: other connections may be waiting
        on it and must see it too.
        """
        self.log.failure("lookup failed; replying TEMP", failure)
        slot.answer = INTERNAL_ERROR
        self._flush()
        return failure

    def _flush(self) -> None:
        """Send the replies at the head of the queue that are answered."""
        self._batched(self._send_answered)

    def _send_answered(self) -> None:
        sent = False
        while self._pending and (answer := self._pending[0].answer) is not None:
            self._pending.popleft()
            self.sendAnswer(answer)
            sent = True
        if sent:
            self.resetTimeout()
        if self._held:
            self._release_held()
        if self._closing and not self._pending and not self._held:
            self.closeConnection()

    def closeWhenAnswered(self) -> Deferred[None]:
        """Read no more requests, close once every reply owed is sent.

        The returned Deferred fires when the connection is closed.
        ``loseConnection`` itself waits until written replies are flushed.
        """
        lost: Deferred[None] = Deferred()
        self._lost.append(lost)
        if not self._closing:
            self._closing = True
            self.transport.pauseProducing()
            if not self._pending and not self._held:
                self.closeConnection()
        return lost

    def connectionMade(self) -> None:
        super().connectionMade()
        # A reply is complete when written: Nagle's algorithm would only hold
        # the next one back until the client's delayed ACK (up to 40 ms).
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.idle_timeout_s)
        self.transport.registerProducer(_UnsentReplies(self), True)
        if hasattr(self.transport, "bufferSize"):   # FileDescriptor: where it pauses its producer
            self.transport.bufferSize = self.limits.max_unsent_bytes
        self._live = getattr(getattr(self, "factory", None), "live", None)
        if self._live is not None:
            self._live.add(self)

    def dataReceived(self, data: bytes) -> None:
        # Once closing (framing error, over-long line, idle timeout), ignore
        # input: the framers keep their buffers and would parse what is left
        # as new requests, or report the same error again.
        if self.transport.disconnecting:
            return
        self.resetTimeout()
        if self._unfed:                  # a read that came with the pause: after what waits
            self._unfed += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Frame at most :data:`INPUT_PER_TURN` bytes now; keep the rest for the next turn."""
        now, self._unfed = data[:INPUT_PER_TURN], data[INPUT_PER_TURN:]
        self._batched(lambda: super(OrderedReplyMixin, self).dataReceived(now))
        if self.transport.disconnecting:
            self._unfed = b""
            return
        if self._unfed:
            self.pauseReading(_NEXT_TURN)
            if not self._paused & _HOLD_INPUT:
                self._turn = self.callLater(0, self._next_turn)
        self._watch_request()

    def _next_turn(self) -> None:
        self._turn = None
        if self._closing:                # closeWhenAnswered: no more requests are read
            self._unfed = b""
            return
        if self._paused & _HOLD_INPUT or self.transport.disconnecting:
            return                       # resumeReading schedules us again
        data, self._unfed = self._unfed, b""
        self._feed(data)
        if not self._unfed:
            self.resumeReading(_NEXT_TURN)

    def _watch_request(self) -> None:
        """A request begun must be complete ``request_timeout_s`` after its first byte.

        The idle timeout alone lets a client that sends one byte every few
        seconds keep a connection, and our buffers, forever.
        """
        if not self.partialRequest():
            self._cancel_deadline()
        elif self._deadline is None or self._deadline_for != self._requests:
            self._cancel_deadline()   # a new request began since the deadline was set
            self._deadline = self.callLater(self.limits.request_timeout_s, self._request_timed_out)
            self._deadline_for = self._requests

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _request_timed_out(self) -> None:
        self._deadline = None
        if self._paused:   # we stopped reading: the rest of the request may be waiting on us
            self._deadline = self.callLater(self.limits.request_timeout_s, self._request_timed_out)
            return
        self.on_limit("listen.request_timeout_s", self.peer())
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget held-back replies; do not cancel their Deferreds.

        The service may share a Deferred between connections, so cancelling
        it here would fail other clients' lookups.  When it fires, the
        forgotten slot is filled and nothing is written.
        """
        self.setTimeout(None)
        self._cancel_deadline()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._unfed = b""
        self._pending.clear()
        self._held.clear()
        if self._live is not None:
            self._live.discard(self)
        super().connectionLost(reason)
        lost, self._lost = self._lost, []
        for waiter in lost:
            waiter.callback(None)

    def timeoutConnection(self) -> None:
        """Abort, not close: a stalled peer may not read either, and a
        graceful close would wait for it to drain our replies."""
        self.log.debug(
            "closing connection from {peer} after {timeout} s idle",
            peer=self.transport.getPeer(),
            timeout=self.timeOut,
        )
        self.transport.abortConnection()


class TableFactory(Factory):
    """Builds a listener's connections, refusing one over ``max_connections`` (or the process's budget).

    A refused connection is closed by the listening port at once
    (``buildProtocol`` returns None): nothing is read from it, so it holds
    no buffer, and Postfix's client takes the lost connection as a failed
    lookup and defers, never as "no policy".  ``protocol`` is set by the
    subclass.
    """

    noisy = False  # the listener logs where it listens; "Starting factory" says nothing more

    def __init__(self, service: LookupService, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 limits: ConnectionLimits = ConnectionLimits(), budget: ConnectionBudget | None = None,
                 on_limit: LimitHit = ignore_limit) -> None:
        self.service = service
        self.idle_timeout_s = idle_timeout_s
        self.limits = limits
        self.live = LiveConnections(limits.max_connections, budget)
        self.on_limit = on_limit

    def buildProtocol(self, addr: IAddress) -> OrderedReplyMixin | None:
        if refused := self.live.refusal():
            self.on_limit(refused, f"connection from {getattr(addr, 'host', None) or 'unix'} refused")
            return None
        proto = self.makeProtocol()
        proto.factory = self
        proto.on_limit = self.on_limit
        return proto

    def makeProtocol(self) -> OrderedReplyMixin:
        return self.protocol(self.service, self.idle_timeout_s, self.limits)


class MapTableFactory(TableFactory):
    """Builds the connections of a listener whose protocol carries no map name.

    tcp_table and readsocket requests hold only a key, so every lookup on
    the listener uses its configured ``map_name``; ``protocol`` is set by
    the subclass.
    """

    def __init__(self, service: LookupService, map_name: str, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 limits: ConnectionLimits = ConnectionLimits(), budget: ConnectionBudget | None = None,
                 on_limit: LimitHit = ignore_limit) -> None:
        super().__init__(service, idle_timeout_s, limits, budget, on_limit)
        self.map_name = map_name

    def makeProtocol(self) -> OrderedReplyMixin:
        return self.protocol(self.service, self.map_name, self.idle_timeout_s, self.limits)
