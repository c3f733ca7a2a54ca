"""TLS helpers shared by the policy fetch (RFC 8461 §3.3) and the report upload (RFC 8460 §5.4).

Both speak HTTPS through Twisted's ``Agent`` with a WebPKI check
(``BrowserLikePolicyForHTTPS``), take their trust store from a config key
(``mta_sts.ca_file``, ``tlsrpt.ca_file``) and must tell a certificate failure
from any other failure: the fetch reports it as ``sts-webpki-invalid``, the
upload may retry without verification (RFC 8460 §3).
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.python.failure import Failure

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
