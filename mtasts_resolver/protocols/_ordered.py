"""What both table protocols share: in-order replies and the idle timeout.

Postfix may pipeline lookups on one connection, and the service answers a
cached key at once but a cold one only later, so a later request can be
answered before an earlier one.  Neither socketmap_table(5) nor tcp_table(5)
tags replies with the request they answer: the client pairs them by order
alone.  :class:`OrderedReplyMixin` therefore holds back every answer until all
earlier ones have been sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mtasts_resolver.lookup import Answer, AnswerKind, LookupService

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

# The reply when the service breaks its promise that the Deferred never
# fails.  TEMP makes Postfix defer the mail rather than send it with a
# weaker TLS policy than the domain asked for.
INTERNAL_ERROR = Answer(AnswerKind.TEMP, "internal error")


@dataclass(slots=True)
class _Slot:
    """The place in the reply order of a request that has no answer yet."""

    answer: Answer | None = None


class LiveConnections:
    """The open connections of one listener: counted for ``STATUS=``, drained on stop.

    A factory that has one as ``live`` gets every connection it builds
    registered here for as long as the connection is open.
    """

    def __init__(self) -> None:
        self._live: set[OrderedReplyMixin] = set()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, connection: OrderedReplyMixin) -> None:
        self._live.add(connection)

    def discard(self, connection: OrderedReplyMixin) -> None:
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


class OrderedReplyMixin(TimeoutMixin):
    """Replies in request order, and the idle timeout, for a table protocol.

    Mix in before the framing receiver (``NetstringReceiver``,
    ``LineReceiver``).  The protocol parses a request, passes what the
    service returns (or its own error answer) to :meth:`reply`, and encodes
    answers in :meth:`sendAnswer`.
    """

    log: ClassVar[Logger]

    def __init__(
        self,
        service: LookupService,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.service = service
        self.idle_timeout_s = idle_timeout_s
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

    def reply(self, result: Answer | Deferred[Answer]) -> None:
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
        if self._closing and not self._pending:
            self.transport.loseConnection()

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
            if not self._pending:
                self.transport.loseConnection()
        return lost

    def connectionMade(self) -> None:
        super().connectionMade()
        # A reply is complete when written: Nagle's algorithm would only hold
        # the next one back until the client's delayed ACK (up to 40 ms).
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.idle_timeout_s)
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
        self._batched(lambda: super(OrderedReplyMixin, self).dataReceived(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget held-back replies; do not cancel their Deferreds.

        The service may share a Deferred between connections, so cancelling
        it here would fail other clients' lookups.  When it fires, the
        forgotten slot is filled and nothing is written.
        """
        self.setTimeout(None)
        self._pending.clear()
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


class MapTableFactory(Factory):
    """Builds the connections of a listener whose protocol carries no map name.

    tcp_table and readsocket requests hold only a key, so every lookup on
    the listener uses its configured ``map_name``; ``protocol`` is set by
    the subclass.
    """

    noisy = False  # the listener logs where it listens; "Starting factory" says nothing more

    def __init__(self, service: LookupService, map_name: str,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.service = service
        self.map_name = map_name
        self.idle_timeout_s = idle_timeout_s
        self.live = LiveConnections()

    def buildProtocol(self, addr: IAddress) -> OrderedReplyMixin:
        proto = self.protocol(self.service, self.map_name, self.idle_timeout_s)
        proto.factory = self
        return proto
