"""HTTPS retrieval of ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (RFC 8461 §3.3).

Twisted's ``Agent`` speaks HTTP; this module supplies what RFC 8461 adds:
the host name is resolved through the configured DNS resolver (not the
system's), the certificate is checked against the WebPKI for exactly
``mta-sts.DOMAIN`` (Twisted TLS + service_identity), redirects are not
followed (a plain ``Agent`` never follows them), only ``200`` with
``text/plain`` is accepted, the body is capped and the whole exchange has
one deadline.
"""

from __future__ import annotations

import ipaddress

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import IProtocolFactory, IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from mtasts_resolver.dns import DnsClient, DnsFailure
from mtasts_resolver.policy.model import FailureType, StsFailure
from mtasts_resolver.policy.sts import media_type_ok

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
HTTPS_PORT = 443


def trust_root(ca_file: str) -> ssl.IOpenSSLTrustRoot:
    """The system's trust store, or every certificate of a PEM bundle."""
    if not ca_file:
        return ssl.platformTrust()
    with open(ca_file, "rb") as handle:
        pem = handle.read()
    marker = b"-----END CERTIFICATE-----"
    blocks = [block + marker for block in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in block]
    if not blocks:
        raise ValueError(f"no certificate in {ca_file}")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(block) for block in blocks])


class _FetchFailed(Exception):
    def __init__(self, failure: StsFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@implementer(IStreamClientEndpoint)
class _PolicyHostEndpoint:
    """Connects to a policy host by the addresses our own resolver gives, with TLS for its name."""

    def __init__(self, reactor: IReactorTCP, dns: DnsClient, host: str, tls: ssl.IOpenSSLClientConnectionCreator,
                 timeout_s: float) -> None:
        self._reactor, self._dns, self._host, self._tls, self._timeout_s = reactor, dns, host, tls, timeout_s

    def connect(self, factory: IProtocolFactory) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory):
        try:
            addresses = await self._dns.addresses(self._host)
        except DnsFailure as exc:
            raise _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"policy host address: {exc}")) from None
        if not addresses:
            raise _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"{self._host} has no address"))
        last_error: Exception | None = None
        for address in addresses:
            tcp_class = TCP6ClientEndpoint if ipaddress.ip_address(address).version == 6 else TCP4ClientEndpoint
            tcp = tcp_class(self._reactor, address, HTTPS_PORT, timeout=self._timeout_s)
            try:
                return await wrapClientTLS(self._tls, tcp).connect(factory)
            except (ConnectError, DNSLookupError) as exc:
                last_error = exc
        raise _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"cannot connect to {self._host}: {last_error}"))


@implementer(IAgentEndpointFactory)
class _PolicyHostEndpoints:
    def __init__(self, reactor, dns: DnsClient, trust: ssl.IOpenSSLTrustRoot, timeout_s: float) -> None:
        self._reactor, self._dns, self._trust, self._timeout_s = reactor, dns, trust, timeout_s

    def endpointForURI(self, uri) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        tls = ssl.optionsForClientTLS(host, trustRoot=self._trust)
        return _PolicyHostEndpoint(self._reactor, self._dns, host, tls, self._timeout_s)


class _CappedBody(Protocol):
    """Collects a response body, giving up as soon as it exceeds ``limit`` bytes."""

    def __init__(self, limit: int, done: Deferred) -> None:
        self._limit, self._done, self._chunks, self._size = limit, done, [], 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.transport.stopProducing()
            self._done.errback(_FetchFailed(
                StsFailure(FailureType.FETCH_ERROR, f"policy larger than {self._limit} bytes")))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(_FetchFailed(
                StsFailure(FailureType.FETCH_ERROR, f"body cut short: {reason.getErrorMessage()}")))


class PolicyFetcher:
    """Fetches and size-checks one domain's policy file; parsing is the caller's."""

    def __init__(self, reactor: IReactorTime, dns: DnsClient, trust: ssl.IOpenSSLTrustRoot,
                 timeout_s: float, max_bytes: int) -> None:
        self._reactor = reactor
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._agent = Agent.usingEndpointFactory(reactor, _PolicyHostEndpoints(reactor, dns, trust, timeout_s))

    def fetch(self, domain: str) -> Deferred[bytes | StsFailure]:
        """The policy body, or the typed reason it could not be had. Never fails."""
        url = f"https://mta-sts.{domain}{POLICY_PATH}"
        d = Deferred.fromCoroutine(self._fetch(url))
        d.addTimeout(self._timeout_s, self._reactor)
        d.addErrback(self._classify, url)
        return d

    async def _fetch(self, url: str) -> bytes:
        response: IResponse = await self._agent.request(b"GET", url.encode("ascii"))
        if response.code != 200:
            kind = "redirect (not followed)" if 300 <= response.code < 400 else "status"
            response.deliverBody(_Discard())
            raise _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"HTTP {response.code} {kind}"))
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        if not media_type_ok(content_type):
            response.deliverBody(_Discard())
            raise _FetchFailed(StsFailure(FailureType.INVALID, f"content type {content_type or 'missing'!r}"))
        if response.length is not None and response.length > self._max_bytes:
            response.deliverBody(_Discard())
            raise _FetchFailed(StsFailure(FailureType.FETCH_ERROR, f"policy larger than {self._max_bytes} bytes"))
        body: Deferred[bytes] = Deferred()
        response.deliverBody(_CappedBody(self._max_bytes, body))
        return await body

    def _classify(self, failure: Failure, url: str) -> StsFailure:
        if failure.check(_FetchFailed):
            return failure.value.failure
        if failure.check(DeferredTimeout):
            return StsFailure(FailureType.FETCH_ERROR, f"{url}: no complete answer within {self._timeout_s:g} s")
        if _tls_errors(failure):
            return StsFailure(FailureType.WEBPKI_INVALID, f"{url}: certificate not valid: {_tls_reason(failure)}")
        if failure.check(ConnectingCancelledError):
            return StsFailure(FailureType.FETCH_ERROR, f"{url}: connection timed out")
        return StsFailure(FailureType.FETCH_ERROR, f"{url}: {failure.getErrorMessage() or failure.type.__name__}")


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.stopProducing()


def _tls_errors(failure: Failure) -> list[BaseException]:
    """The TLS errors inside a failure, unwrapping Agent's ResponseFailed/RequestNotSent lists."""
    found: list[BaseException] = []
    pending: list[BaseException] = [failure.value]
    while pending:
        exc = pending.pop()
        if isinstance(exc, SSL.Error) or type(exc).__name__ in ("VerificationError", "CertificateError"):
            found.append(exc)
        for inner in getattr(exc, "reasons", []) or []:
            pending.append(inner.value if isinstance(inner, Failure) else inner)
    return found


def _tls_reason(failure: Failure) -> str:
    errors = _tls_errors(failure)
    return str(errors[0]) if errors else failure.getErrorMessage()
