"""Take a server's certificate chain in a TLS handshake, and judge it as a WebPKI client would.

The handshake itself never fails on a certificate problem: OpenSSL's
verification runs with a callback that records each error and carries on,
so the audit sees the chain of a server with an expired, untrusted or
misnamed certificate too, and can say which it is.  The host name is checked
by ``service_identity`` (RFC 6125, as Twisted's own TLS does for the policy
fetch); ``cryptography`` reads the certificates.  This module is the only
one of the audit that touches OpenSSL or ``cryptography``.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from mtasts_resolver.audit.facts import Certificate, TlsSession

#: OpenSSL's X509_V_ERR_* codes an audit meets, in words (others are shown by number).
_VERIFY_ERRORS = {
    9: "certificate not yet valid", 10: "certificate expired", 18: "self-signed certificate",
    19: "self-signed certificate in the chain", 20: "issuer not found (incomplete chain or untrusted CA)",
    21: "cannot verify the first certificate (incomplete chain?)", 62: "host name mismatch",
}


@implementer(IOpenSSLClientConnectionCreator)
class ChainCapture:
    """One client handshake to ``host`` (SNI) that records the chain and every verification error.

    ``ca_file`` is the trust store as in ``mta_sts.ca_file`` ("": the system's).
    """

    def __init__(self, host: str, ca_file: str) -> None:
        self._host = host
        self._errors: list[str] = []
        self._connection: SSL.Connection | None = None
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if ca_file:
            context.load_verify_locations(ca_file)
        else:
            context.set_default_verify_paths()
        context.set_verify(SSL.VERIFY_PEER, self._verified)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_tlsext_host_name(self._host.encode("idna"))
        connection.set_connect_state()
        self._connection = connection
        return connection

    def _verified(self, _connection: SSL.Connection, _cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if not ok:
            error = _VERIFY_ERRORS.get(errno, f"verification error {errno}")
            self._errors.append(f"{error} (depth {depth})" if depth else error)
        return True   # go on: the audit wants the chain whatever is wrong with it

    def session(self) -> TlsSession:
        """What the completed handshake showed."""
        connection = self._connection
        chain = connection.get_peer_cert_chain() if connection is not None else None
        if not chain:
            return TlsSession(error="the server sent no certificate")
        try:
            verify_hostname(connection, self._host)
            name_ok = True
        except VerificationError:
            name_ok = False
        return TlsSession(chain=tuple(_certificate(cert.to_cryptography()) for cert in chain),
                          verify_errors=tuple(dict.fromkeys(self._errors)), name_ok=name_ok)


def _certificate(cert: x509.Certificate) -> Certificate:
    try:
        names = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Certificate(cert.public_bytes(serialization.Encoding.DER), spki, names, _not_after(cert).timestamp())


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity, aware (``not_valid_after_utc`` from cryptography 42; bookworm's 38 has the naive one)."""
    aware = getattr(cert, "not_valid_after_utc", None)
    return aware if aware is not None else cert.not_valid_after.replace(tzinfo=datetime.UTC)
