"""Gather what a sender sees of a domain, with the daemon's own resolvers (the I/O half of the audit).

The MTA-STS discovery and fetch and the DANE walk are the daemon's own
(:class:`~mtasts_resolver.net.network.Network`: the DANE walk un-gated, the
shell checks the resolver validates first), the ``_smtp._tls``
record is parsed by the reporter's parser.  On top the audit looks at what
a sender's MTA looks at when it connects: each MX's STARTTLS and
certificate chain, the policy host's certificate, and the raw TLSA answers
(the DANE walk never asks for TLSA records in an insecure zone, which is
the mistake to point out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

from mtasts_resolver.audit.facts import (
    DomainFacts,
    MxHost,
    Spool,
    TlsaAnswer,
)
from mtasts_resolver.audit.handshakes import smtp_session, tls_session
from mtasts_resolver.net.dane_resolver import mx_exchanges
from mtasts_resolver.net.dns import DnsFailure
from mtasts_resolver.net.network import Network
from mtasts_resolver.policy import dane
from mtasts_resolver.policy.model import CachedPolicy, NoStsTxt, StsTxt
from mtasts_resolver.store import ReportStore
from mtasts_resolver.tlsrpt.model import CountKind
from mtasts_resolver.tlsrpt.report.record import parse_tlsrpt_records

#: Addresses of one MX host connected to (a sender may use any of them; more is rarely more setups).
MAX_ADDRESSES_PROBED = 4


@dataclass(frozen=True)
class Auditor:
    """Everything the audit asks through, and how."""

    reactor: object
    network: Network
    dane: bool                # walk DANE (the resolver validates DNSSEC)
    ca_file: str              # mta_sts.ca_file: the trust store of WebPKI checks
    timeout_s: float          # per connection (mta_sts.http_timeout_s)
    helo: str                 # the name given in EHLO
    concurrency: int          # MX hosts looked at at once (dane.host_concurrency)
    cached: Callable[[str], CachedPolicy | None] = lambda domain: None
    spool: Callable[[str], Spool | None] = lambda domain: None

    async def facts(self, domain: str) -> DomainFacts:
        mx, mx_error = await self._mx(domain)
        txt = await self.network.discover(domain)
        records: tuple[str, ...] = ()
        if isinstance(txt, NoStsTxt):   # how many v=STSv1 records, for the finding that says which mistake
            records = tuple(await self._txt(f"_mta-sts.{domain}"))
        policy = policy_tls = None
        if isinstance(txt, StsTxt):
            policy = await self.network.fetch(domain)
            policy_tls = await tls_session(self.reactor, f"mta-sts.{domain}", self.ca_file, self.timeout_s)
        tlsrpt, tlsrpt_error = None, ""
        try:
            tlsrpt = parse_tlsrpt_records(await self.network.dns.txt(f"_smtp._tls.{domain}"))
        except DnsFailure as exc:
            tlsrpt_error = str(exc)
        verdict = await self.network.dane(domain) if self.dane else None
        return DomainFacts(domain, mx, mx_error, records, txt, policy, policy_tls, tlsrpt, tlsrpt_error, verdict,
                           self.spool(domain), self.cached(domain))

    async def _txt(self, name: str) -> list[str]:
        try:
            return await self.network.dns.txt(name)
        except DnsFailure:
            return []

    async def _mx(self, domain: str) -> tuple[tuple[MxHost, ...], str]:
        try:
            answer = await self.network.dns.query(domain, "MX")
        except DnsFailure as exc:
            return (), str(exc)
        exchanges = mx_exchanges(answer)
        if dane.null_mx(exchanges):
            return (), ""
        preference = {host: pref for pref, host in sorted(exchanges, reverse=True)}
        # No MX records: the domain itself is the implicit MX (RFC 5321 §5.1), as the DANE walk has it.
        hosts = dane.mx_hosts(exchanges) if exchanges else (domain,)
        limit = DeferredSemaphore(self.concurrency)
        found = await gatherResults(
            [limit.run(lambda h: Deferred.fromCoroutine(self._host(h, preference.get(h, 0))), host) for host in hosts],
            consumeErrors=True)
        return tuple(found), ""

    async def _host(self, host: str, preference: int) -> MxHost:
        tlsa = await self._tlsa(dane.tlsa_name(host))
        try:
            addresses = tuple(await self.network.dns.addresses(host))
        except DnsFailure as exc:
            return MxHost(host, preference, address_error=str(exc), tlsa=tlsa)
        sessions = [await smtp_session(self.reactor, address, host, self.helo, self.ca_file, self.timeout_s)
                    for address in addresses[:MAX_ADDRESSES_PROBED]]
        return MxHost(host, preference, addresses, "", tuple(sessions), tlsa)

    async def _tlsa(self, name: str) -> TlsaAnswer:
        try:
            answer = await self.network.dns.query(name, "TLSA")
        except DnsFailure as exc:
            return TlsaAnswer(name, error=str(exc))
        return TlsaAnswer(name, answer.records, answer.secure)


def spool_facts(store: ReportStore, domain: str) -> Spool:
    """Days with TLS-RPT outcomes for ``domain`` as a policy domain, and their session counts."""
    days = sessions = failed = 0
    for day in store.spooled_days():
        counts = store.outcome_counts(day, domain)
        days += bool(counts)
        for _policy, kind, _failure, count in counts:
            if kind == CountKind.FAILURE.value:
                failed += count
            if kind in (CountKind.FAILURE.value, CountKind.SUCCESS.value):
                sessions += count
    return Spool(days, sessions, failed)
