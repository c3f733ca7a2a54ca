"""HTTPS retrieval of ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (RFC 8461 §3.3).

Twisted's ``Agent`` speaks HTTP; this module supplies what RFC 8461 adds.
The host name resolves through the configured DNS resolver (the daemon
installs :class:`~mtasts_resolver.net.dns.ConfiguredResolver` on the reactor),
the certificate is checked against the WebPKI for exactly ``mta-sts.DOMAIN``
(:class:`~mtasts_resolver.net.tls.OneContextPolicy`: Twisted's TLS defaults +
service_identity, one OpenSSL context for every fetch), redirects
are not followed (a plain ``Agent`` never follows them), only ``200`` with
``text/plain`` is accepted, the headers (:mod:`~mtasts_resolver.net.limits`)
and the body are capped whatever the body's framing (``Content-Length``,
chunked or close-delimited), the whole exchange has one deadline, and the
fetch's connection is closed the moment the fetch ends, however it ends.
"""

from __future__ import annotations

from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.limits import LIMITS
from mtasts_resolver.net.dns import DnsClient
from mtasts_resolver.net.limits import CappedConnections, HeaderLimits
from mtasts_resolver.net.local import LocalFailure, exhaustion
from mtasts_resolver.net.tls import OneContextPolicy, tls_errors
from mtasts_resolver.policy.model import FailureType, StsFailure
from mtasts_resolver.policy.sts import media_type_ok

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3


class _FetchFailed(Exception):
    def __init__(self, failure: StsFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _too_large(limit: int, host: str) -> _FetchFailed:
    LIMITS.hit("mta_sts.max_policy_bytes", host)
    return _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"policy larger than {limit} bytes"))


class _CappedBody(Protocol):
    """Collects a response body, giving up as soon as it exceeds ``limit`` bytes.

    Twisted hands over the decoded body whatever its framing, so one count
    covers ``Content-Length``, chunked and close-delimited bodies alike.
    """

    def __init__(self, limit: int, host: str, done: Deferred) -> None:
        self._limit, self._host, self._done, self._chunks, self._size = limit, host, done, [], 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.transport.stopProducing()
            self._done.errback(_too_large(self._limit, self._host))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._done.called:
            return
        # PotentialDataLoss: a close-delimited body (no Content-Length, not
        # chunked) ends with the connection; RFC 9112 §6.3 makes that its end.
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(_FetchFailed(
                StsFailure(FailureType.FETCH_ERROR, f"body cut short: {reason.getErrorMessage()}")))


class PolicyFetcher:
    """Fetches and size-checks one domain's policy file; parsing is the caller's.

    ``header_limits`` defaults to the ``[mta_sts]`` defaults.  ``dns`` is
    the client the reactor resolves host names with: its exhaustion count
    tells a policy host without an address from a lookup we could not make.
    """

    def __init__(self, reactor: IReactorTime, dns: DnsClient, trust: ssl.IOpenSSLTrustRoot, timeout_s: float,
                 max_bytes: int, header_limits: HeaderLimits | None = None) -> None:
        self._reactor = reactor
        self._dns = dns
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._header_limits = header_limits or HeaderLimits.of(MtaStsConfig())
        self._tls = OneContextPolicy(trust)

    def fetch(self, domain: str) -> Deferred[bytes | StsFailure]:
        """The policy body, or the typed reason it could not be had.

        Fails only with :class:`~mtasts_resolver.net.local.LocalFailure`:
        what stopped the fetch was this host (out of file descriptors,
        memory), which says nothing about the policy.

        Each fetch has its own connections (:class:`CappedConnections`,
        never pooled: the policy host is asked once per refresh), aborted
        when the result is known.
        """
        host = f"mta-sts.{domain}"
        url = f"https://{host}{POLICY_PATH}"
        connections = CappedConnections(self._reactor, self._tls, self._timeout_s, self._header_limits, host)
        d = Deferred.fromCoroutine(self._fetch(Agent.usingEndpointFactory(self._reactor, connections), url, host))
        d.addTimeout(self._timeout_s, self._reactor)
        d.addErrback(self._classify, url, connections, self._dns.exhaustions)
        d.addBoth(self._closed, connections)
        return d

    async def _fetch(self, agent: Agent, url: str, host: str) -> bytes:
        response: IResponse = await agent.request(b"GET", url.encode("ascii"))
        if response.code != 200:
            kind = "redirect (not followed)" if 300 <= response.code < 400 else "status"
            raise _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"HTTP {response.code} {kind}"))
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        if not media_type_ok(content_type):
            raise _FetchFailed(StsFailure(FailureType.INVALID, f"content type {content_type or 'missing'!r}"))
        # response.length is UNKNOWN_LENGTH (not a number) for chunked and close-delimited bodies.
        if isinstance(response.length, int) and response.length > self._max_bytes:
            raise _too_large(self._max_bytes, host)
        body: Deferred[bytes] = Deferred()
        response.deliverBody(_CappedBody(self._max_bytes, host, body))
        return await body

    @staticmethod
    def _closed(result: bytes | StsFailure, connections: CappedConnections) -> bytes | StsFailure:
        connections.abort()   # whatever ended the fetch; the body, if any, is read
        return result

    def _classify(self, failure: Failure, url: str, connections: CappedConnections, exhaustions: int) -> StsFailure:
        if failure.check(_FetchFailed):
            return failure.value.failure
        if (exc := exhaustion(failure)) is not None:
            raise LocalFailure(f"{url}: {exc}")
        if failure.check(DNSLookupError) and self._dns.exhaustions != exhaustions:
            raise LocalFailure(f"{url}: the policy host's address lookup could not be sent (out of sockets)")
        if connections.exceeded:
            return StsFailure(FailureType.FETCH_ERROR, f"{url}: response over {connections.exceeded}")
        if failure.check(DeferredTimeout):
            return StsFailure(FailureType.FETCH_ERROR, f"{url}: no complete answer within {self._timeout_s:g} s")
        if errors := tls_errors(failure):
            return StsFailure(FailureType.WEBPKI_INVALID, f"{url}: certificate not valid: {errors[0]}")
        if failure.check(DNSLookupError):
            return StsFailure(FailureType.FETCH_ERROR, f"{url}: the policy host has no address")
        if failure.check(ConnectingCancelledError):
            return StsFailure(FailureType.FETCH_ERROR, f"{url}: connection timed out")
        return StsFailure(FailureType.FETCH_ERROR, f"{url}: {failure.getErrorMessage() or failure.type.__name__}")
