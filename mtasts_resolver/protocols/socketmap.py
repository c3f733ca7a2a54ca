"""Postfix socketmap_table(5) server protocol.

Each request is one netstring ``NAME SP KEY``; each reply is one netstring
``OK data``, ``NOTFOUND ``, ``TEMP reason`` or ``PERM reason``.  Postfix
sends the map name from ``socketmap:inet:host:port:NAME``, so one listener
serves several maps.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.basic import NetstringReceiver

from mtasts_resolver.lookup import Answer, AnswerKind

from ._ordered import OrderedReplyMixin, TableFactory

# Longest request payload accepted.  A request is a map name and a key that
# is a domain or next-hop (at most 255 octets, plus brackets and a port), so
# this is generous; it bounds what one connection can make us buffer.
SOCKETMAP_MAX_REQUEST = 10_000

# socketmap_table(5): "The Postfix socketmap client requires that replies are
# not longer than 100000 characters (not including the netstring
# encapsulation)."  Postfix treats a longer one as a lookup error, so we
# send a clear PERM instead.
SOCKETMAP_MAX_REPLY = 100_000

MALFORMED_REQUEST = Answer(AnswerKind.PERM, "malformed request")
NOT_UTF8 = Answer(AnswerKind.PERM, "request is not UTF-8")
_REPLY_TOO_LONG = b"PERM reply too long"


class SocketmapProtocol(OrderedReplyMixin, NetstringReceiver):
    """One Postfix socketmap client connection.

    A bad request inside a well-formed netstring gets a PERM reply and the
    connection stays up: framing is intact, so the next request is still
    found.  A framing error (bad length, missing comma, length over
    :data:`SOCKETMAP_MAX_REQUEST`) drops the connection, as
    ``NetstringReceiver`` does, because nothing after it can be trusted to
    start a netstring.
    """

    log = Logger()
    MAX_LENGTH = SOCKETMAP_MAX_REQUEST

    def dataReceived(self, data: bytes) -> None:
        was_broken = self.brokenPeer
        super().dataReceived(data)
        if self.brokenPeer and not was_broken:
            self.log.warn(
                "malformed netstring from {peer}; dropping connection",
                peer=self.transport.getPeer(),
            )
            self.closeConnection()   # NetstringReceiver's own close waits for our producer

    def stringReceived(self, string: bytes) -> None:
        name, _, key = string.partition(b" ")
        if not name or not key:
            self.log.debug("malformed request {request!r}", request=string)
            self.reply(MALFORMED_REQUEST)
            return
        try:
            map_name, key_text = name.decode(), key.decode()
        except UnicodeDecodeError:
            self.log.debug("non-UTF-8 request {request!r}", request=string)
            self.reply(NOT_UTF8)
            return
        self.ask(map_name, key_text)

    def sendAnswer(self, answer: Answer) -> None:
        if answer.kind is AnswerKind.NOTFOUND:
            # socketmap_table(5) defines "NOTFOUND <space>" with no text.
            payload = b"NOTFOUND "
        else:
            payload = f"{answer.kind.value} {answer.text}".encode()
        payload = self.withinLimit(payload, SOCKETMAP_MAX_REPLY, _REPLY_TOO_LONG, answer.kind)
        self.writeReply(b"%d:%s," % (len(payload), payload))

    def partialRequest(self) -> bool:
        return bool(self._remainingData) or self._state == self._PARSING_PAYLOAD


class SocketmapFactory(TableFactory):
    """Builds :class:`SocketmapProtocol` instances sharing one service."""

    protocol = SocketmapProtocol
