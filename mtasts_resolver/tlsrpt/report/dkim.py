"""DKIM-signing report mail (RFC 8460 §3: reports by mail MUST carry a valid DKIM signature).

dkimpy (Debian: python3-dkim, 1.1.4 in bookworm; PyPI: dkimpy) rather than
our own RFC 6376 code on ``cryptography``: it is the reference Python DKIM
implementation, pure Python on dnspython (already a dependency), and knows
RFC 8460 itself (``tlsrpt=True`` never emits ``l=``; its verifier checks the
``s=tlsrpt`` service type), while canonicalisation is easy to get subtly
wrong.  The signature covers TLS-Report-Domain and TLS-Report-Submitter as
RFC 8460 §5.3 requires.
"""

from __future__ import annotations

import dkim

SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
                  b"tls-report-domain", b"tls-report-submitter", b"tls-required")


class DkimKey:
    """A selector, signing domain and private key (PEM, RSA or Ed25519 as dkimpy reads it)."""

    def __init__(self, selector: str, domain: str, key_file: str) -> None:
        with open(key_file, "rb") as handle:
            self._key = handle.read()
        self.selector, self.domain = selector, domain

    def sign(self, message: bytes) -> bytes:
        """``message`` (CRLF line ends) with a DKIM-Signature header in front."""
        signature = dkim.sign(message, self.selector.encode(), self.domain.encode(), self._key,
                              canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED_HEADERS),
                              tlsrpt=True)
        return signature + message
