"""DANE for SMTP (RFC 7672) as pure rules: which TLSA records are usable, what each MX host
and the whole domain amount to.

The DNS walk (``mtasts_resolver.net.dane_resolver``) feeds these functions the
answers of a validating resolver; nothing here does I/O, so every rule is
tested with a table of made-up answers.

The outcome for a domain is one of:

- ``DANE_ONLY``: the MX RRset is secure and every MX host that has addresses
  has secure addresses and a secure TLSA RRset with at least one usable
  record.  Postfix is told ``dane-only``: no fallback for any host.
- ``DANE``: DANE applies to some MX hosts only (others have no TLSA records,
  are in unsigned zones, have only unusable TLSA records or could not be
  looked up).  Postfix is told ``dane`` and applies DANE per host, exactly
  the partial deployment RFC 7672 allows (§2.2: hosts without TLSA get
  opportunistic TLS, hosts with only unusable TLSA records get mandatory
  unauthenticated TLS, hosts whose TLSA lookup fails are skipped by Postfix
  itself).  One broken or unsigned MX host therefore weakens only that host
  and never defers the domain.
- ``ABSENT``: DANE is proven not to apply (insecure MX RRset, no MX host
  with TLSA records, null MX, no such domain): MTA-STS may apply.
- ``TEMP``: the data that decides between DANE and no DANE could not be
  obtained (SERVFAIL, bogus, timeout): Postfix must defer, never downgrade.
- ``DISABLED``: the resolver is not (known to be) validating; DANE answers
  are off and MTA-STS alone applies (logged loudly by the probe).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SMTP_PORT = 25  # RFC 7672 §2.2.2: TLSA records at _25._tcp.HOST

#: RFC 6698 §2.1.3 / RFC 7672 §3.1: matching types 1 and 2 are SHA2-256 / SHA2-512 digests.
DIGEST_OCTETS = {1: 32, 2: 64}


class DaneOutcome(enum.Enum):
    DANE_ONLY = "dane-only"
    DANE = "dane"
    ABSENT = "absent"
    TEMP = "temp-failure"
    DISABLED = "disabled"


class HostStatus(enum.Enum):
    """What one MX host contributes (RFC 7672 §2.2.2)."""

    USABLE = "usable TLSA records"
    UNUSABLE = "TLSA records, none usable"
    NO_TLSA = "no TLSA records"
    INSECURE = "not DNSSEC-validated"
    NO_ADDRESS = "no address records"
    FAILED = "lookup failed"


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        data = self.data.hex()
        if len(data) > 72:
            data = f"{data[:64]}…({len(self.data)} octets)"
        return f"{self.usage} {self.selector} {self.mtype} {data}"


@dataclass(frozen=True, slots=True)
class Lookup:
    """One DNS answer as the walk saw it, kept for ``mtasts-resolver query``."""

    name: str
    rdtype: str
    records: tuple[str, ...] = ()
    secure: bool = False
    note: str = ""          # "NXDOMAIN", "NODATA", "CNAME a -> b", "failed: ..."
    failed: bool = False

    def __str__(self) -> str:
        flag = "AD" if self.secure else "no AD"
        if self.failed:
            return f"{self.name} {self.rdtype}: {self.note}"
        what = ", ".join(self.records) if self.records else self.note
        extra = f" ({self.note})" if self.records and self.note else ""
        return f"{self.name} {self.rdtype} [{flag}]: {what}{extra}"


@dataclass(frozen=True, slots=True)
class HostResult:
    """The DANE status of one MX host, with the lookups that decided it."""

    name: str
    status: HostStatus
    detail: str
    lookups: tuple[Lookup, ...] = ()
    tlsa_base: str = ""                       # where the TLSA records were found
    tlsa: tuple[TlsaRecord, ...] = ()
    ttl: int | None = None                    # smallest TTL of the data that decided it

    @property
    def dane(self) -> bool:
        """DANE applies to this host (RFC 7672 §2.2: it has a secure, non-empty TLSA RRset)."""
        return self.status in (HostStatus.USABLE, HostStatus.UNUSABLE)


@dataclass(frozen=True, slots=True)
class DaneResult:
    """The DANE verdict for one domain."""

    outcome: DaneOutcome
    reason: str
    mx: Lookup | None = None
    hosts: tuple[HostResult, ...] = ()
    ttl: int | None = None      # smallest TTL of the records that decided; None: no DNS data

    @property
    def applies(self) -> bool:
        return self.outcome in (DaneOutcome.DANE_ONLY, DaneOutcome.DANE)


def tlsa_problem(record: TlsaRecord) -> str | None:
    """Why ``record`` is unusable for SMTP (RFC 7672 §3.1), or None when it is usable."""
    if record.usage in (0, 1):
        return (f"usage {record.usage} (PKIX-{'TA' if record.usage == 0 else 'EE'}) is not used for SMTP "
                "(RFC 7672 §3.1.3)")
    if record.usage not in (2, 3):
        return f"unknown certificate usage {record.usage}"
    if record.selector not in (0, 1):
        return f"unknown selector {record.selector}"
    if record.mtype == 0:
        if not _der_sequence(record.data):
            what = "certificate" if record.selector == 0 else "SubjectPublicKeyInfo"
            return f"matching type 0 data is not a DER {what}"
        return None
    if record.mtype not in DIGEST_OCTETS:
        return f"unknown matching type {record.mtype}"
    if len(record.data) != DIGEST_OCTETS[record.mtype]:
        return (f"matching type {record.mtype} needs a {DIGEST_OCTETS[record.mtype]}-octet digest, "
                f"got {len(record.data)} octets")
    return None


def _der_sequence(data: bytes) -> bool:
    """Is ``data`` exactly one DER SEQUENCE (as certificates and SPKIs are)?"""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        return len(data) == 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return False
    length = int.from_bytes(data[2:2 + count], "big")
    return len(data) == 2 + count + length


#: RFC 6698 §2.1.3: the digest of each matching type (0: the data itself).
_DIGESTS = {0: lambda data: data, 1: lambda data: hashlib.sha256(data).digest(),
            2: lambda data: hashlib.sha512(data).digest()}


def tlsa_matches(record: TlsaRecord, chain: Sequence[tuple[bytes, bytes]]) -> bool:
    """Does usable ``record`` match the chain a server presented (RFC 7672 §3.1)?

    ``chain`` is ``(certificate DER, SubjectPublicKeyInfo DER)`` per
    certificate, the server's own first.  DANE-EE (3) matches the server's
    certificate only; DANE-TA (2) matches a certificate the server sent to
    chain up to (RFC 7672 §3.1.1: the trust anchor must be in the chain).
    """
    if tlsa_problem(record) is not None:
        return False
    candidates = chain[:1] if record.usage == 3 else chain[1:]
    digest = _DIGESTS[record.mtype]
    return any(digest(spki if record.selector == 1 else cert) == record.data for cert, spki in candidates)


def tlsa_status(records: Iterable[TlsaRecord]) -> HostStatus:
    """USABLE when at least one record is usable, else UNUSABLE (the RRset is non-empty)."""
    return HostStatus.USABLE if any(tlsa_problem(r) is None for r in records) else HostStatus.UNUSABLE


def tlsa_name(base: str) -> str:
    return f"_{SMTP_PORT}._tcp.{base}"


def tlsa_bases(host: str, canonical: str, chain_secure: bool) -> tuple[str, ...]:
    """TLSA base domains to try, in order (RFC 7672 §2.2.2).

    When the host's addresses came through a secure CNAME chain, the fully
    expanded name is tried first and the original MX host name second;
    otherwise only the MX host name.  (Postfix does the same.)
    """
    if chain_secure and canonical and canonical != host:
        return (canonical, host)
    return (host,)


def null_mx(exchanges: Iterable[tuple[int, str]]) -> bool:
    """RFC 7505: a single MX record with preference 0 and exchange "." means "no mail"."""
    records = list(exchanges)
    return len(records) == 1 and records[0] == (0, ".")


def mx_hosts(exchanges: Iterable[tuple[int, str]]) -> tuple[str, ...]:
    """MX host names by preference, duplicates and "." removed."""
    ordered = sorted(exchanges, key=lambda pair: (pair[0], pair[1]))
    return tuple(dict.fromkeys(host for _, host in ordered if host != "."))


def min_ttl(ttls: Iterable[int | None]) -> int | None:
    known = [t for t in ttls if t is not None]
    return min(known) if known else None


def combine(mx: Lookup, hosts: tuple[HostResult, ...], mx_ttl: int | None) -> DaneResult:
    """The domain's verdict from its (secure) MX RRset and the result for each MX host."""
    ttl = min_ttl([mx_ttl, *(h.ttl for h in hosts)])
    reachable = [h for h in hosts if h.status is not HostStatus.NO_ADDRESS]
    failed = [h for h in hosts if h.status is HostStatus.FAILED]
    with_dane = [h for h in hosts if h.dane]
    if with_dane:
        if all(h.status is HostStatus.USABLE for h in reachable):
            return DaneResult(DaneOutcome.DANE_ONLY, _every(reachable), mx, hosts, ttl)
        return DaneResult(DaneOutcome.DANE, _partial(reachable), mx, hosts, ttl)
    if failed:
        return DaneResult(DaneOutcome.TEMP, "; ".join(f"{h.name}: {h.detail}" for h in failed), mx, hosts, ttl)
    if not reachable:
        return DaneResult(DaneOutcome.ABSENT, "no MX host has address records", mx, hosts, ttl)
    return DaneResult(DaneOutcome.ABSENT, "no MX host has DNSSEC-validated TLSA records", mx, hosts, ttl)


def _every(hosts: list[HostResult]) -> str:
    return (f"every MX host ({len(hosts)}) has DNSSEC-validated addresses and usable TLSA records"
            if len(hosts) > 1 else f"the MX host {hosts[0].name} has usable DNSSEC-validated TLSA records")


def _partial(hosts: list[HostResult]) -> str:
    parts = [f"{h.name}: {h.status.value}" for h in hosts]
    return "DANE applies to some MX hosts only (" + "; ".join(parts) + ")"


def absent(reason: str, mx: Lookup | None = None, ttl: int | None = None) -> DaneResult:
    return DaneResult(DaneOutcome.ABSENT, reason, mx, (), ttl)


def temp(reason: str, mx: Lookup | None = None, hosts: tuple[HostResult, ...] = ()) -> DaneResult:
    return DaneResult(DaneOutcome.TEMP, reason, mx, hosts, None)


def disabled(reason: str) -> DaneResult:
    return DaneResult(DaneOutcome.DISABLED, reason)
