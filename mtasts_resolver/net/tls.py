"""TLS helpers shared by the policy fetch (RFC 8461 §3.3) and the report upload (RFC 8460 §5.4).

Both speak HTTPS through Twisted's ``Agent`` with a WebPKI check
(``BrowserLikePolicyForHTTPS``), take their trust store from a config key
(``mta_sts.ca_file``, ``tlsrpt.ca_file``) and must tell a certificate failure
from any other failure: the fetch reports it as ``sts-webpki-invalid``, the
upload may retry without verification (RFC 8460 §3).
"""

from __future__ import annotations

import weakref

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"


def trust_root(ca_file: str) -> ssl.IOpenSSLTrustRoot:
    """The system's trust store, or every certificate of a PEM bundle."""
    if not ca_file:
        return ssl.platformTrust()
    with open(ca_file, "rb") as handle:
        pem = handle.read()
    blocks = [block + PEM_END for block in pem.split(PEM_END) if PEM_BEGIN in block]
    if not blocks:
        raise ValueError(f"no certificate in {ca_file}")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(block) for block in blocks])


def tls_errors(failure: Failure) -> list[BaseException]:
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


@implementer(IPolicyForHTTPS)
class OneContextPolicy:
    """The WebPKI check of Twisted's ``BrowserLikePolicyForHTTPS``, with one OpenSSL context for every connection.

    Twisted's policy builds a fresh context per connection
    (``optionsForClientTLS``), and with the system trust store
    (``ca_file = ""``) each context loads the whole CA bundle: 7 ms of CPU
    per policy fetch, more than the rest of a cold resolution.  Here one
    context, made once with Twisted's own TLS defaults
    (``CertificateOptions``), checks the chain against the trust root; the
    host name is sent as SNI and checked with ``service_identity`` once the
    handshake is done, as Twisted's own code does, and a mismatch fails the
    connection through the TLS protocol's ``failVerification`` with a
    ``VerificationError`` (what :func:`tls_errors` finds).  Names are ASCII
    here: the policy host comes from an A-label domain.
    """

    def __init__(self, trust: ssl.IOpenSSLTrustRoot) -> None:
        self._context = ssl.CertificateOptions(trustRoot=trust).getContext()
        self._context.set_info_callback(self._handshake_state)
        self._hosts: weakref.WeakKeyDictionary[SSL.Connection, str] = weakref.WeakKeyDictionary()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _ClientConnections(self, hostname)

    def connection(self, protocol, hostname: bytes) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(protocol)
        connection.set_tlsext_host_name(hostname)
        self._hosts[connection] = hostname.decode("ascii")
        return connection

    def _handshake_state(self, connection: SSL.Connection, where: int, _ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        host = self._hosts.pop(connection, None)
        if host is None:   # a second HANDSHAKE_DONE (TLS 1.3 tickets): checked already
            return
        try:
            verify_hostname(connection, host)
        except VerificationError:
            connection.get_app_data().failVerification(Failure())


@implementer(IOpenSSLClientConnectionCreator)
class _ClientConnections:
    def __init__(self, policy: OneContextPolicy, hostname: bytes) -> None:
        self._policy, self._hostname = policy, hostname

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return self._policy.connection(tlsProtocol, self._hostname)
