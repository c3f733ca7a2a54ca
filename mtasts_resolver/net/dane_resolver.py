"""DANE discovery over the network (RFC 7672 §2.2): MX, then per MX host A/AAAA and TLSA.

The walk only asks questions and hands the answers to the pure rules of
:mod:`mtasts_resolver.policy.dane`; it trusts nothing but the AD bit of the
configured validating resolver, never raises (but for a
:class:`~mtasts_resolver.net.local.LocalFailure`), and has one deadline for the
whole domain (``dane.timeout_s``).  MX hosts are looked up concurrently,
at most ``dane.host_concurrency`` at a time.

The walk (:class:`DaneWalk`) and the gate in front of it
(:class:`DaneResolver`) are apart because they may run in different
processes: the walk, which reads strangers' DNS answers, runs in a resolver
process (:mod:`mtasts_resolver.offload`); the gate, which knows whether the
resolver validates, runs where the answers are decided.  When the
:class:`~mtasts_resolver.net.dnssec_probe.ValidationProbe` says the resolver
does not validate, no lookup is made and the result is DISABLED; before its
first check, the gate waits for it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredSemaphore,
    FirstError,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorTime

from mtasts_resolver.config import DaneConfig
from mtasts_resolver.net.dns import DnsClient, DnsFailure, RRAnswer
from mtasts_resolver.net.dnssec_probe import ValidationProbe
from mtasts_resolver.policy import dane
from mtasts_resolver.policy.dane import (
    DaneResult,
    HostResult,
    HostStatus,
    Lookup,
)


class DaneResolver:
    """DANE for a domain, but only while the resolver is known to validate DNSSEC."""

    def __init__(self, walk: Callable[[str], Deferred[DaneResult]], probe: ValidationProbe) -> None:
        self._walk = walk
        self.probe = probe

    def resolve(self, domain: str) -> Deferred[DaneResult]:
        """The DANE verdict for ``domain``; never fails (failures are TEMP results) but for LocalFailure."""
        if not self.probe.checked:
            # Start-up: not known yet whether the resolver validates; wait for the first probe.
            return self.probe.when_checked().addCallback(lambda _: self.resolve(domain))
        if not self.probe.validating:
            return succeed(dane.disabled(self.probe.status))
        return self._walk(domain)


class DaneWalk:
    """The lookups of RFC 7672 §2.2 for one domain, under one deadline (``dane.timeout_s``)."""

    def __init__(self, clock: IReactorTime, dns: DnsClient, settings: DaneConfig) -> None:
        self._clock = clock
        self._dns = dns
        self._settings = settings

    def resolve(self, domain: str) -> Deferred[DaneResult]:
        """The DANE verdict for ``domain``; never fails (failures are TEMP results) but for LocalFailure."""
        d = Deferred.fromCoroutine(self._walk(domain))
        d.addTimeout(self._settings.timeout_s, self._clock,
                     onTimeoutCancel=lambda _result, timeout: dane.temp(f"DANE lookups took longer than {timeout:g} s"))
        return d

    # -- the domain: its MX RRset ---------------------------------------------

    async def _walk(self, domain: str) -> DaneResult:
        try:
            mx = await self._dns.query(domain, "MX")
        except DnsFailure as exc:
            return dane.temp(f"MX lookup failed: {exc}", _failed(domain, "MX", exc))
        exchanges = mx_exchanges(mx)
        lookup = _lookup(domain, "MX", mx, [f"{pref} {host}" for pref, host in sorted(exchanges)])
        if not mx.secure:
            return dane.absent("the MX RRset is not DNSSEC-validated (insecure): DANE does not apply "
                               "(RFC 7672 §2.2.1)", lookup, mx.ttl)
        if mx.nxdomain:
            return dane.absent("the domain does not exist (validated NXDOMAIN)", lookup, mx.ttl)
        if dane.null_mx(exchanges):
            return dane.absent("null MX (RFC 7505): the domain accepts no mail", lookup, mx.ttl)
        # No MX records: the domain itself is the implicit MX (RFC 5321 §5.1, RFC 7672 §2.2.1).
        hosts = dane.mx_hosts(exchanges) if exchanges else (domain,)
        if not hosts:
            return dane.absent("only null MX records: the domain accepts no mail", lookup, mx.ttl)
        limit = DeferredSemaphore(self._settings.host_concurrency)
        try:
            results = await gatherResults(
                [limit.run(lambda h: Deferred.fromCoroutine(self._host(h)), host) for host in hosts],
                consumeErrors=True)
        except FirstError as exc:   # a LocalFailure (or a bug) of one host: raise it as itself
            exc.subFailure.raiseException()
        return dane.combine(lookup, tuple(results), mx.ttl)

    # -- one MX host: addresses, then TLSA ------------------------------------

    async def _host(self, host: str) -> HostResult:
        lookups: list[Lookup] = []
        answers: list[RRAnswer] = []
        failures: list[str] = []
        families = ("A", "AAAA")
        outcomes = await DeferredList([self._dns.query(host, rdtype) for rdtype in families], consumeErrors=True)
        for rdtype, (succeeded, outcome) in zip(families, outcomes):
            if not succeeded:
                exc = outcome.trap(DnsFailure) and outcome.value   # anything else is a bug: let it raise
                failures.append(str(exc))
                lookups.append(_failed(host, rdtype, exc))
                continue
            answers.append(outcome)
            lookups.append(_lookup(host, rdtype, outcome, [r.address for r in outcome.records]))
        ttl = dane.min_ttl(a.ttl for a in answers)
        found = any(a.records for a in answers)
        secure = bool(answers) and all(a.secure for a in answers)
        if failures and not (found and secure):
            return HostResult(host, HostStatus.FAILED, "address lookup failed: " + "; ".join(failures),
                              tuple(lookups), ttl=ttl)
        if not found:
            return HostResult(host, HostStatus.NO_ADDRESS, "no A or AAAA records", tuple(lookups), ttl=ttl)
        if not secure:
            return HostResult(host, HostStatus.INSECURE,
                              "address records are not DNSSEC-validated: no TLSA lookup (RFC 7672 §2.2.2)",
                              tuple(lookups), ttl=ttl)
        canonical = next((a.canonical_name for a in answers if a.canonical_name), host)
        for base in dane.tlsa_bases(host, canonical, chain_secure=True):
            name = dane.tlsa_name(base)
            try:
                tlsa = await self._dns.query(name, "TLSA")
            except DnsFailure as exc:
                lookups.append(_failed(name, "TLSA", exc))
                return HostResult(host, HostStatus.FAILED, f"TLSA lookup failed: {exc}", tuple(lookups),
                                  tlsa_base=base, ttl=ttl)
            records = tlsa.records
            lookups.append(_lookup(name, "TLSA", tlsa, [str(r) for r in records]))
            ttl = dane.min_ttl([ttl, tlsa.ttl])
            if not tlsa.secure:
                return HostResult(host, HostStatus.INSECURE, f"the TLSA answer for {name} is not DNSSEC-validated",
                                  tuple(lookups), tlsa_base=base, ttl=ttl)
            if records:
                status = dane.tlsa_status(records)
                usable = sum(dane.tlsa_problem(r) is None for r in records)
                return HostResult(host, status, f"{usable} of {len(records)} TLSA records at {name} usable",
                                  tuple(lookups), base, records, ttl)
        return HostResult(host, HostStatus.NO_TLSA, "validated denial of TLSA records", tuple(lookups), ttl=ttl)


def mx_exchanges(mx: RRAnswer) -> list[tuple[int, str]]:
    """(preference, host) of each MX record, the host lower case without its final dot ("." for a null MX)."""
    return [(r.preference, r.exchange) for r in mx.records]


def _lookup(name: str, rdtype: str, answer: RRAnswer, records: list[str]) -> Lookup:
    notes = [f"CNAME {alias} → {target}" for alias, target in answer.cnames]
    if not records:
        notes.append("NXDOMAIN" if answer.nxdomain else "NODATA")
    return Lookup(name, rdtype, tuple(records), answer.secure, "; ".join(notes))


def _failed(name: str, rdtype: str, exc: Exception) -> Lookup:
    return Lookup(name, rdtype, note=f"failed: {exc}", failed=True)
