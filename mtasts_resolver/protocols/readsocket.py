"""One lookup per connection, answered and closed: for Exim's ``${readsocket}``.

Exim's ``${readsocket{inet:host:port}{request}{options}{eol}{fail}}``
writes the request, by default shuts down its write side, and then reads
until end-of-file (Exim spec, "Expansion items", readsocket).  So the reply
must be followed by a close, and the client's half-close must not be taken
for a hang-up: Twisted reports a read EOF as a lost connection unless the
protocol provides :class:`IHalfCloseableProtocol`, and the queued reply
would be dropped.

Request: the key, ending with ``\\n`` or with the client's write shutdown
(so both ``{$domain}`` and ``{$domain\\n}`` work with Exim's default
``shutdown=yes``; with ``shutdown=no`` the newline is required).  Reply: one
line ``OK policy``, ``NOTFOUND``, ``TEMP reason`` or ``PERM reason`` (the
socketmap_table(5) words, without netstring framing), then the server
closes.  The request carries no map name: like tcp_table, the listener is
configured with the one its lookups use.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from mtasts_resolver.lookup import Answer, AnswerKind, LookupService

from ._limits import ConnectionLimits
from ._ordered import DEFAULT_IDLE_TIMEOUT_S, MapTableFactory, OrderedReplyMixin

# Longest request line accepted.  A key is a domain (at most 255 octets,
# RFC 1035 §2.3.4) or a next-hop form a little longer; the bound only limits
# what one connection can make us buffer.
READSOCKET_MAX_REQUEST = 1024

MALFORMED_REQUEST = Answer(AnswerKind.PERM, "malformed request")


@implementer(IHalfCloseableProtocol)
class ReadsocketProtocol(OrderedReplyMixin, LineReceiver):
    """One readsocket client connection: the first request only, then close."""

    log = Logger()
    MAX_LENGTH = READSOCKET_MAX_REQUEST
    delimiter = b"\n"

    def __init__(
        self,
        service: LookupService,
        map_name: str,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        super().__init__(service, idle_timeout_s, limits)
        self.map_name = map_name
        self._asked = False

    def lineReceived(self, line: bytes) -> None:
        if self._asked:
            return  # one lookup per connection: the reply closes it
        self._asked = True
        try:
            key = line.strip().decode()
        except UnicodeDecodeError:
            key = ""
        if not key or any(c.isspace() for c in key):
            self.log.debug("malformed request {request!r}", request=line)
            self.reply(MALFORMED_REQUEST)
            return
        self.ask(self.map_name, key)

    def readConnectionLost(self) -> None:
        """The client shut down its write side: what it sent is the request."""
        if not self._asked:
            pending, self._buffer = self._buffer, b""
            if pending.strip():
                self.lineReceived(pending)
            else:
                self.closeConnection()  # nothing asked, nothing to answer

    def writeConnectionLost(self) -> None:
        """The client no longer reads: nothing we could send would arrive."""
        self.transport.abortConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.warn(
            "request over {limit} bytes from {peer}; dropping connection",
            limit=READSOCKET_MAX_REQUEST,
            peer=self.transport.getPeer(),
        )
        self.closeConnection()

    def sendAnswer(self, answer: Answer) -> None:
        words = [answer.kind.value, answer.text] if answer.text else [answer.kind.value]
        self.transport.write(" ".join(words).encode() + b"\n")
        self.closeConnection()

    def partialRequest(self) -> bool:
        return not self._asked and bool(self._buffer)


class ReadsocketFactory(MapTableFactory):
    """Builds :class:`ReadsocketProtocol` instances for one listener's map."""

    protocol = ReadsocketProtocol
