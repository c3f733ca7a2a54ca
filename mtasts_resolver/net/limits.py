"""What a policy host can make us read before the body: header caps under Twisted's HTTP client.

Twisted's HTTP/1.1 client (``HTTP11ClientProtocol`` and its ``HTTPParser``)
keeps every header line a server sends, however many, and skips any number
of ``1xx`` responses, logging each: a policy host that never ends its headers
grew the daemon by gigabytes within one fetch timeout, and a ``1xx`` storm
wrote megabytes of log.  Twisted offers no cap, from 22.4 (bookworm) to 26.

Where the cap sits, and why there:

- Not in a parser subclass: ``HTTP11ClientProtocol.request()`` builds its
  ``HTTPClientParser`` by name, so substituting one means replacing the
  private ``_parser`` attribute after the fact, on every Twisted version.
- Below the parser, on the connection: :class:`CappedConnections` is the
  public seam ``Agent.usingEndpointFactory`` (Twisted 15.0 onwards) takes,
  and the ``ProtocolWrapper`` it puts between TLS and the HTTP protocol sees
  every decrypted byte before the parser does.  :class:`HeaderScanner`
  follows ``HTTPParser``'s line rules (LF ends a line, a trailing CR is
  dropped, an empty line ends a header block, a ``1xx`` status starts a new
  one), so it counts exactly what the parser would buffer, and stops looking
  once the final response's headers are complete: the body has its own cap
  (``mta_sts.max_policy_bytes``, in :mod:`~mtasts_resolver.net.sts_fetch`).
- The same wrapper hands the fetch its connections, which the fetch aborts
  the moment it ends, whatever ended it (timeout, error, a cap): Twisted
  does not close a response's connection when the caller stops waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.limits import LIMITS


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """Caps on the part of an HTTP response before its body (config keys in ``[mta_sts]``)."""

    max_header_bytes: int        # status lines and header lines of every response, 1xx included
    max_headers: int             # header fields of one response
    max_informational: int       # 1xx responses before the final one

    @classmethod
    def of(cls, settings: MtaStsConfig) -> HeaderLimits:
        return cls(settings.max_header_bytes, settings.max_headers, settings.max_informational_responses)


_STATUS, _HEADER, _DONE = range(3)


class HeaderScanner:
    """Counts the header part of one HTTP response as bytes arrive; pure, no I/O.

    :meth:`feed` returns the config key of the first limit exceeded, or
    ``None``.  After the final response's empty line :attr:`done` is true
    and nothing more is looked at.
    """

    def __init__(self, limits: HeaderLimits) -> None:
        self._limits = limits
        self._state = _STATUS
        self._line = bytearray()      # the current line so far: never more than max_header_bytes
        self._bytes = 0
        self._headers = 0
        self._informational = 0
        self._is_informational = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> str | None:
        pos = 0
        while self._state != _DONE and pos < len(data):
            newline = data.find(b"\n", pos)
            end = len(data) if newline < 0 else newline + 1
            self._bytes += end - pos
            if self._bytes > self._limits.max_header_bytes:
                return "mta_sts.max_header_bytes"
            self._line += data[pos:end]
            pos = end
            if newline < 0:
                break
            line = bytes(self._line[:-1])
            self._line.clear()
            if exceeded := self._line_received(line[:-1] if line.endswith(b"\r") else line):
                return exceeded
        return None

    def _line_received(self, line: bytes) -> str | None:
        if self._state == _STATUS:
            parts = line.split(b" ", 2)
            code = parts[1] if len(parts) > 1 else b""
            # Twisted's parser fails the response for a code that is no number: not ours to judge.
            self._is_informational = code.isdigit() and 100 <= int(code) < 200
            self._state = _HEADER
            self._headers = 0
        elif not line:
            if not self._is_informational:
                self._state = _DONE
                return None
            self._informational += 1
            if self._informational > self._limits.max_informational:
                return "mta_sts.max_informational_responses"
            self._state = _STATUS
        elif line[0] not in b" \t":           # a continuation line adds to the header before it
            self._headers += 1
            if self._headers > self._limits.max_headers:
                return "mta_sts.max_headers"
        return None


class _CappedConnection(ProtocolWrapper):
    """Passes bytes to the HTTP protocol while the header caps hold; aborts the connection otherwise."""

    factory: _Wrapping

    def __init__(self, factory: _Wrapping, wrapped) -> None:
        super().__init__(factory, wrapped)
        self._scanner: HeaderScanner | None = HeaderScanner(factory.owner.limits)

    def dataReceived(self, data: bytes) -> None:
        if self._scanner is not None:
            exceeded = self._scanner.feed(data)
            if exceeded:
                self._scanner = None
                self.factory.owner.exceeded = exceeded
                LIMITS.hit(exceeded, self.factory.owner.host)
                self.transport.abortConnection()
                return
            if self._scanner.done:
                self._scanner = None
        super().dataReceived(data)


class _Wrapping(WrappingFactory):
    """Wraps the HTTP pool's factory; its connections are counted in the owner's ``open``."""

    protocol = _CappedConnection
    noisy = False

    def __init__(self, owner: CappedConnections, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)
        self.owner = owner
        wrapped.noisy = False   # the pool's per-connection factory: "Starting factory" twice per fetch says nothing

    def registerProtocol(self, p: _CappedConnection) -> None:
        super().registerProtocol(p)
        self.owner.open.add(p)

    def unregisterProtocol(self, p: _CappedConnection) -> None:
        super().unregisterProtocol(p)
        self.owner.open.discard(p)


@implementer(IStreamClientEndpoint)
class _CappedEndpoint:
    def __init__(self, owner: CappedConnections, inner: IStreamClientEndpoint) -> None:
        self._owner, self._inner = owner, inner

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        # The HTTP connection pool wants back the protocol it asked for, not our wrapper.
        return self._inner.connect(_Wrapping(self._owner, protocolFactory)).addCallback(
            lambda wrapper: wrapper.wrappedProtocol)


class CappedConnections:
    """The endpoint factory of one fetch: TLS to the URI's host, header caps, and every connection it opened.

    One per fetch, so that :meth:`abort` closes exactly that fetch's
    connections and :attr:`exceeded` names the cap that stopped it.
    """

    def __init__(self, reactor, tls_policy: IPolicyForHTTPS, connect_timeout_s: float, limits: HeaderLimits,
                 host: str) -> None:
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._connect_timeout_s = connect_timeout_s
        self.limits = limits
        self.host = host                       # for the limit log line
        self.open: set[_CappedConnection] = set()
        self.exceeded: str | None = None

    def endpointForURI(self, uri) -> IStreamClientEndpoint:
        """What ``Agent``'s own endpoint factory builds for https, wrapped (HostnameEndpoint + wrapClientTLS)."""
        # A native str, as Agent's own does: the host came from an A-label domain, so it is ASCII.
        tcp = HostnameEndpoint(self._reactor, uri.host.decode("ascii"), uri.port, timeout=self._connect_timeout_s)
        tls = wrapClientTLS(self._tls_policy.creatorForNetloc(uri.host, uri.port), tcp)
        return _CappedEndpoint(self, tls)

    def abort(self) -> None:
        """Drop every connection this fetch still has open (a no-op once all are closed)."""
        for connection in list(self.open):
            connection.transport.abortConnection()
