"""DNS lookups with dnspython's asyncio resolver, bridged to Twisted Deferreds.

The daemon runs Twisted on the asyncio reactor, so dnspython's
``dns.asyncresolver`` does the queries (retries, TCP fallback on truncation,
EDNS) and this module only turns its answers and exceptions into the small
typed results the resolvers need.  dnspython's own cache stays off: the
policy cache decides how long anything is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.immutable
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.ttl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from mtasts_resolver.net.local import LocalFailure, exhaustion

EDNS_PAYLOAD_BYTES = 1232  # DNS flag day 2020: avoids IP fragmentation


def _keep_misfit_tlsa_records() -> None:
    """Parse TLSA records whose data length does not suit their matching type.

    RFC 7672 §3.1 makes such a record merely unusable: the other records of
    its RRset still count, and an RRset of only such records still means
    "DANE present, no usable record" (mandatory TLS).  dnspython ≥ 2.8
    rejects the record, which fails the whole answer (a needless TEMP), or,
    when errors are skipped, hides it (a downgrade).  So TLSA rdata is read
    by a subclass without that check, and
    :func:`mtasts_resolver.policy.dane.tlsa_problem` judges the length.
    """
    base = dns.rdata.get_rdata_class(dns.rdataclass.IN, dns.rdatatype.TLSA)

    @dns.immutable.immutable
    class TLSA(base):  # type: ignore[valid-type,misc]
        def __init__(self, rdclass, rdtype, usage, selector, mtype, cert):  # noqa: ANN001
            dns.rdata.Rdata.__init__(self, rdclass, rdtype)
            self.usage = self._as_uint8(usage)
            self.selector = self._as_uint8(selector)
            self.mtype = self._as_uint8(mtype)
            self.cert = self._as_bytes(cert)

    for rdclass in (dns.rdataclass.IN, dns.rdataclass.ANY):
        dns.rdata._rdata_classes[(rdclass, dns.rdatatype.TLSA)] = TLSA  # no public way to replace a type


_keep_misfit_tlsa_records()


class DnsFailure(Exception):
    """The answer is unknown (SERVFAIL, timeout, refused): not the same as 'no record'."""


def _local(name: str, rdtype: str, exc: OSError) -> LocalFailure:
    return LocalFailure(f"{name}/{rdtype}: no socket for the query: {exc}")


@dataclass(frozen=True, slots=True)
class RRAnswer:
    """Records of one type at one name; empty when the name or type does not exist.

    ``secure`` is the AD flag of the response: only meaningful when the
    configured resolver validates DNSSEC and is reached over a trusted path.
    A validating resolver sets it only when every RRset of the answer
    (CNAMEs included) and, for an empty answer, the proof of non-existence
    validated.

    ``ttl`` is the smallest TTL of the answer and its CNAME chain; for an
    empty answer it is the negative-caching TTL (RFC 2308 §5: SOA TTL and
    MINIMUM), 0 when unknown.  ``cnames`` lists the ``(alias, target)`` links
    followed from the query name, and ``canonical_name`` is where they end
    (both absolute, lower case, without the trailing dot); ``nxdomain``
    tells "no such name" apart from "no record of this type".
    """

    records: tuple[Any, ...]
    secure: bool
    ttl: int
    nxdomain: bool = False
    canonical_name: str = ""
    cnames: tuple[tuple[str, str], ...] = ()


class DnsClient:
    """Queries the configured recursive resolver(s).

    A query this host cannot even send (out of file descriptors or buffers)
    fails with :class:`~mtasts_resolver.net.local.LocalFailure`, not
    :class:`DnsFailure`, and is counted in :attr:`exhaustions`: Twisted's
    host-name lookups (the policy fetch) see only "no address", so the fetch
    compares the count to tell our failure from the domain's.
    """

    def __init__(self, nameservers: tuple[str, ...], port: int, timeout_s: float) -> None:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = list(nameservers)
        resolver.port = port
        resolver.lifetime = timeout_s
        resolver.timeout = min(timeout_s, 2.0)  # per try: retry lost UDP quickly
        # The AD bit in the query asks a validating resolver to report
        # validation in the answer's AD flag (RFC 6840 §5.7).  Not the DO bit:
        # it would add every RRSIG and NSEC record, which nothing here checks
        # (trust is the resolver's AD flag) and which made parsing answers
        # the largest cost of a cold lookup (py-spy: 40% of the daemon's CPU).
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.use_edns(0, 0, EDNS_PAYLOAD_BYTES)
        resolver.cache = None
        self._resolver = resolver
        self.exhaustions = 0

    @property
    def nameservers(self) -> list[str]:
        return [str(ns) for ns in self._resolver.nameservers]

    def query(self, name: str, rdtype: str) -> Deferred[RRAnswer]:
        """Look up ``name``/``rdtype``; fails with :class:`DnsFailure` if the answer is unknown."""
        return _deferred(self._query(name, rdtype))

    async def _query(self, name: str, rdtype: str) -> RRAnswer:
        qname = dns.name.from_text(name)  # absolute: no search-list expansion
        try:
            answer = await self._resolver.resolve(qname, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            response = exc.response(exc.qnames()[0]) if exc.qnames() else None
            if response is None:
                return RRAnswer((), False, 0, nxdomain=True, canonical_name=_text(qname))
            secure = bool(response.flags & dns.flags.AD)
            return _from_chain(_chaining(response), (), secure, nxdomain=True)
        except dns.resolver.NoNameservers as exc:
            raise DnsFailure(f"{name}/{rdtype}: no server answered (SERVFAIL or refused)") from exc
        except dns.exception.Timeout as exc:
            raise DnsFailure(f"{name}/{rdtype}: timed out") from exc
        except dns.exception.DNSException as exc:
            raise DnsFailure(f"{name}/{rdtype}: {exc}") from exc
        except OSError as exc:
            if exhaustion(exc) is None:
                raise
            self.exhaustions += 1
            raise _local(name, rdtype, exc) from exc
        secure = bool(answer.response.flags & dns.flags.AD)
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        # dnspython's Answer has followed the chain already (dnspython >= 2.1): not twice per answer.
        return _from_chain(answer.chaining_result, records, secure, nxdomain=False)

    async def txt(self, name: str) -> list[str]:
        """TXT records at ``name``, each with its character-strings joined (RFC 7208 §3.3 style)."""
        answer = await self.query(name, "TXT")
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.records]

    async def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``, both asked at once.

        Fails only when neither family could be looked up; one family
        failing while the other answers is not an error.
        """
        found: list[str] = []
        failures: list[Failure] = []
        outcomes = await DeferredList([self.query(name, rdtype) for rdtype in ("A", "AAAA")], consumeErrors=True)
        for succeeded, outcome in outcomes:
            if succeeded:
                found.extend(rdata.address for rdata in outcome.records)
            else:
                failures.append(outcome)
        if not found and failures:
            for failure in failures:   # our own trouble first: it must not read as "no address"
                if failure.check(LocalFailure):
                    failure.raiseException()
            failures[0].trap(DnsFailure)   # anything else is a bug: let it raise
            failures[0].raiseException()
        return found


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() or "."


def _chaining(response: dns.message.Message) -> dns.message.ChainingResult | None:
    try:
        return response.resolve_chaining()
    except dns.exception.DNSException:  # chain too long, or NXDOMAIN with an answer
        return None


def _from_chain(chain: dns.message.ChainingResult | None, records: tuple[Any, ...], secure: bool, *,
                nxdomain: bool) -> RRAnswer:
    """An RRAnswer with the CNAME chain, canonical name and TTL of a response's ``chain`` (None: unknown)."""
    if chain is None:
        return RRAnswer(records, secure, 0, nxdomain=nxdomain)
    links = tuple((_text(rrset.name), _text(rrset[0].target)) for rrset in chain.cnames)
    ttl = chain.minimum_ttl if chain.minimum_ttl < dns.ttl.MAX_TTL else 0
    return RRAnswer(records, secure, int(ttl), nxdomain=nxdomain,
                    canonical_name=_text(chain.canonical_name), cnames=links)


def _deferred(coro: Coroutine[Any, Any, Any]) -> Deferred:
    return Deferred.fromFuture(asyncio.ensure_future(coro))


@implementer(IHostnameResolver)
class ConfiguredResolver:
    """Twisted's name-resolver interface on a :class:`DnsClient`.

    Installed on the reactor (``reactor.installNameResolver``), it makes
    Twisted's own connections by host name (the policy fetch, report
    uploads) resolve through the configured resolver like every other lookup.
    """

    def __init__(self, dns: DnsClient) -> None:
        self._dns = dns

    def resolveHostName(self, receiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes=None, transportSemantics: str = "TCP") -> IHostResolution:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)

        def found(addresses: list[str]) -> None:
            for address in addresses:
                kind = IPv6Address if ":" in address else IPv4Address
                receiver.addressResolved(kind("TCP", address, portNumber))

        d = Deferred.fromCoroutine(self._dns.addresses(hostName))
        # No address, whatever the reason: a LocalFailure is counted in DnsClient.exhaustions for the fetch.
        d.addCallbacks(found, lambda failure: failure.trap(DnsFailure, LocalFailure))
        d.addBoth(lambda _: receiver.resolutionComplete())
        return resolution


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Resolutions are short (DnsClient has its own timeout): nothing to cancel."""
