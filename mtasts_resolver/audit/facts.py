"""What a sender sees of one domain, as typed data: the input of :func:`~.findings.findings`.

Everything here is gathered by :mod:`.gather` and judged by the pure rules
of :mod:`.findings`; keeping the two apart lets the rules be tested with a
table of made-up facts and no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtasts_resolver.policy.dane import DaneResult, TlsaRecord
from mtasts_resolver.policy.model import (
    CachedPolicy,
    NoStsTxt,
    StsFailure,
    StsPolicy,
    StsTxt,
)
from mtasts_resolver.tlsrpt.report.record import NoTlsrpt, TlsrptRecord


@dataclass(frozen=True, slots=True)
class Certificate:
    """One certificate of a presented chain, reduced to what the rules look at."""

    der: bytes
    spki: bytes            # SubjectPublicKeyInfo DER (TLSA selector 1)
    names: tuple[str, ...]  # DNS subjectAltNames (the common name when there are none)
    not_after: float       # seconds since the epoch


@dataclass(frozen=True, slots=True)
class TlsSession:
    """The outcome of one TLS handshake (to the policy host, or after STARTTLS).

    ``error`` is "" when the handshake completed; ``chain`` is the server's
    chain as sent (its own certificate first), ``verify_errors`` what WebPKI
    validation against the configured trust store found (empty: valid), and
    ``name_ok`` whether the server's certificate is valid for the name the
    sender connects to (RFC 6125 rules, wildcards included).
    """

    error: str = ""
    chain: tuple[Certificate, ...] = ()
    verify_errors: tuple[str, ...] = ()
    name_ok: bool = False

    @property
    def pairs(self) -> tuple[tuple[bytes, bytes], ...]:
        """``(certificate DER, SPKI DER)`` per certificate, for TLSA matching."""
        return tuple((cert.der, cert.spki) for cert in self.chain)


@dataclass(frozen=True, slots=True)
class SmtpSession:
    """Port 25 of one MX address: ``error`` when no SMTP dialogue took place, else STARTTLS and its TLS."""

    address: str
    error: str = ""
    starttls: bool = False
    tls: TlsSession | None = None


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """The raw ``_25._tcp.HOST`` TLSA answer, whatever its DNSSEC state (the DANE walk skips insecure zones)."""

    name: str
    records: tuple[TlsaRecord, ...] = ()
    secure: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class MxHost:
    host: str
    preference: int
    addresses: tuple[str, ...] = ()
    address_error: str = ""
    smtp: tuple[SmtpSession, ...] = ()  # one per address probed
    tlsa: TlsaAnswer | None = None


@dataclass(frozen=True, slots=True)
class Spool:
    """The daemon's TLS-RPT spool about this domain (as a sender to it)."""

    days: int
    sessions: int
    failed_sessions: int


@dataclass(frozen=True, slots=True)
class DomainFacts:
    domain: str
    mx: tuple[MxHost, ...] = ()
    mx_error: str = ""                                   # the MX lookup failed
    sts_records: tuple[str, ...] = ()                   # the _mta-sts TXT RRset, strings joined
    sts_txt: StsTxt | NoStsTxt | StsFailure | None = None
    policy: StsPolicy | StsFailure | None = None        # None: not fetched (no valid TXT)
    policy_tls: TlsSession | None = None                # mta-sts.DOMAIN:443
    tlsrpt: TlsrptRecord | NoTlsrpt | None = None
    tlsrpt_error: str = ""                               # the _smtp._tls lookup failed
    dane: DaneResult | None = None
    spool: Spool | None = None                           # None: no spool configured or readable
    cached: CachedPolicy | None = None                   # the daemon's cached policy for the domain

    @property
    def policy_host(self) -> str:
        return f"mta-sts.{self.domain}"
