"""The metrics listener: ``GET /metrics`` over HTTP/1.1, and nothing a stranger can make large.

Anyone who can connect to it can talk to it, so what a connection can make
us hold is bounded: connections at once (``metrics.max_connections``; one
more is closed at once and counted as a limit hit), idle time
(``metrics.timeout_s``, twisted.web's own timeout), the request line and
headers (twisted.web's ``HTTPChannel.totalHeadersSize``, 16 KiB, and
``maxHeaders``) and a request body, which nothing here needs: it is read
and dropped, and past :data:`MAX_BODY_BYTES` the connection is aborted.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mtasts_resolver.metrics.exposition import CONTENT_TYPE

MAX_BODY_BYTES = 4096
PATH = b"/metrics"
CONNECTIONS_LIMIT = "metrics.max_connections"


class MetricsResource(Resource):
    """``GET /metrics``: the text ``render()`` returns; other paths 404, other methods 405 (twisted.web)."""

    isLeaf = True

    def __init__(self, render: Callable[[], bytes]) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: Request) -> bytes:
        if request.path != PATH:
            request.setResponseCode(404)
            return b"only /metrics is here\n"
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self._render()


class _DroppingRequest(Request):
    """A request whose body is counted and dropped: a body is never needed, so none is kept."""

    def gotLength(self, length: int | None) -> None:
        super().gotLength(0)
        self._body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._body_bytes > MAX_BODY_BYTES:
            self.channel.transport.abortConnection()


class _CountedChannel(HTTPChannel):
    def connectionLost(self, reason) -> None:
        self.site.open -= 1
        super().connectionLost(reason)


class MetricsSite(Site):
    """A Site that closes connections past ``limit`` at once, telling ``on_limit(key, detail)``."""

    protocol = _CountedChannel
    requestFactory = _DroppingRequest

    def __init__(self, resource: Resource, limit: int, timeout_s: float,
                 on_limit: Callable[[str, str], None]) -> None:
        super().__init__(resource, timeout=timeout_s)
        self.limit = limit
        self.open = 0
        self._on_limit = on_limit

    def buildProtocol(self, addr):
        if self.open >= self.limit:
            self._on_limit(CONNECTIONS_LIMIT, f"connection from {getattr(addr, 'host', addr)} closed")
            return None
        channel = super().buildProtocol(addr)
        self.open += 1
        return channel

    def log(self, request) -> None:
        """No access log: a scrape every 15 s would be most of the daemon's log."""
