"""Postfix tcp_table(5) server protocol.

A request is the line ``get SP key``; a reply is ``200 SP data``, ``500 SP
text`` or ``400 SP text``, newline-terminated.  Key and text are %XX-encoded.
The request carries no map name, so each listener is configured with the map
name it passes to the service.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from mtasts_resolver.lookup import Answer, AnswerKind, LookupService

from ._limits import ConnectionLimits
from ._ordered import DEFAULT_IDLE_TIMEOUT_S, MapTableFactory, OrderedReplyMixin

# tcp_table(5): "Replies must be no longer than 4096 characters including
# the newline terminator."  Postfix's client drops a longer reply and retries
# ten times, a second apart, so we send a short 400 instead.  The man page
# sets no request limit; we apply the same one.  Postfix only sends
# "get " and a %XX-encoded key, at most 3 x 255 bytes for a domain.
TCP_TABLE_MAX_LINE = 4096

# Bytes sent as they are: printable ASCII except "%".  tcp_table(5): "the
# character %, each non-printing character, and each whitespace character
# must be replaced by %XX".  This is what Postfix's hex_quote() does, with
# upper-case digits.
_LITERAL = frozenset(range(0x21, 0x7F)) - {ord("%")}
_ENCODED = [bytes([b]) if b in _LITERAL else b"%%%02X" % b for b in range(256)]
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")

_STATUS = {
    AnswerKind.FOUND: b"200",
    AnswerKind.NOTFOUND: b"500",
    AnswerKind.TEMP: b"400",
    # tcp_table has no permanent-error code: 400 is its only error.
    AnswerKind.PERM: b"400",
}

# Malformed requests get 400, not 500: to a lookup, 500 means "no such key",
# which Postfix would act on (a default TLS policy), where 400 makes it defer.
MALFORMED_REQUEST = Answer(AnswerKind.PERM, "malformed request")
UNKNOWN_COMMAND = Answer(AnswerKind.PERM, "unknown command")
# tcp_table(5): 500 means "In case of an update request, the request was
# rejected."  We never accept a put: the table is computed, not stored.
READ_ONLY = Answer(AnswerKind.NOTFOUND, "read-only table")
_REPLY_TOO_LONG = b"400 reply%20too%20long\n"


def encode_tcp(text: str) -> bytes:
    """Encode reply text for tcp_table: UTF-8, then %XX as Postfix quotes it.

    Postfix decodes every reply, so a policy such as ``secure match=a:b``
    goes out as ``secure%20match=a:b``.
    """
    return b"".join([_ENCODED[b] for b in text.encode()])


def decode_tcp(data: bytes) -> str:
    """Decode a %XX-encoded request key, as Postfix's hex_unquote() does.

    Hex digits may be in any case; other bytes stand for themselves.  Raises
    ``ValueError`` with a short reason for a malformed escape or a key that
    is not UTF-8.
    """
    head, *escaped = data.split(b"%")
    raw = bytearray(head)
    for chunk in escaped:
        if len(chunk) < 2 or chunk[0] not in _HEX_DIGITS or chunk[1] not in _HEX_DIGITS:
            raise ValueError("malformed %XX escape")
        raw.append(int(chunk[:2], 16))
        raw += chunk[2:]
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ValueError("key is not UTF-8") from None


class TcpTableProtocol(OrderedReplyMixin, LineReceiver):
    """One Postfix tcp_table client connection.

    A request that is a complete line but bad (unknown command, ``put``, bad
    escape, non-UTF-8 key) gets an error reply and the connection stays up.
    A line over :data:`TCP_TABLE_MAX_LINE` drops the connection, which is
    ``LineReceiver``'s default: Postfix never sends one, and answering it
    would mean discarding input up to a newline that may never come.
    """

    log = Logger()
    # tcp_table(5) counts the newline in the limit; LineReceiver does not.
    MAX_LENGTH = TCP_TABLE_MAX_LINE - 1
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

    def lineReceived(self, line: bytes) -> None:
        # Parameters are separated by whitespace (tcp_table(5)); splitting
        # on it also drops the CR of a CRLF line end.
        match line.split():
            case [b"get", quoted_key]:
                try:
                    key = decode_tcp(quoted_key)
                except ValueError as e:
                    self.log.debug("bad key {key!r}: {reason}", key=quoted_key, reason=e)
                    self.reply(Answer(AnswerKind.PERM, str(e)))
                    return
                self.ask(self.map_name, key)
            case [b"get", *_]:
                self.log.debug("malformed request {request!r}", request=line)
                self.reply(MALFORMED_REQUEST)
            case [b"put", *_]:
                self.reply(READ_ONLY)
            case _:
                self.log.debug("unknown command {request!r}", request=line)
                self.reply(UNKNOWN_COMMAND)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.warn(
            "request over {limit} bytes from {peer}; dropping connection",
            limit=TCP_TABLE_MAX_LINE,
            peer=self.transport.getPeer(),
        )
        self.closeConnection()

    def sendAnswer(self, answer: Answer) -> None:
        reply = b"%s %s\n" % (_STATUS[answer.kind], encode_tcp(answer.text))
        reply = self.withinLimit(reply, TCP_TABLE_MAX_LINE, _REPLY_TOO_LONG, answer.kind)
        self.writeReply(reply)

    def partialRequest(self) -> bool:
        return bool(self._buffer)


class TcpTableFactory(MapTableFactory):
    """Builds :class:`TcpTableProtocol` instances for one listener's map."""

    protocol = TcpTableProtocol
