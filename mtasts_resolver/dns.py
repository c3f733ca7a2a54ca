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
import dns.rdatatype
import dns.resolver
from twisted.internet.defer import Deferred

EDNS_PAYLOAD_BYTES = 1232  # DNS flag day 2020: avoids IP fragmentation


class DnsFailure(Exception):
    """The answer is unknown (SERVFAIL, timeout, refused): not the same as 'no record'."""


@dataclass(frozen=True, slots=True)
class RRAnswer:
    """Records of one type at one name; empty when the name or type does not exist.

    ``secure`` is the AD flag of the response: only meaningful when the
    configured resolver validates DNSSEC and is reached over a trusted path.
    """

    records: tuple[Any, ...]
    secure: bool
    ttl: int


class DnsClient:
    """Queries the configured recursive resolver(s)."""

    def __init__(self, nameservers: tuple[str, ...], port: int, timeout_s: float) -> None:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = list(nameservers)
        resolver.port = port
        resolver.lifetime = timeout_s
        resolver.timeout = min(timeout_s, 2.0)  # per try: retry lost UDP quickly
        # DO bit, so a validating resolver reports the AD flag.
        resolver.use_edns(0, dns.flags.DO, EDNS_PAYLOAD_BYTES)
        resolver.cache = None
        self._resolver = resolver

    @property
    def nameservers(self) -> list[str]:
        return [str(ns) for ns in self._resolver.nameservers]

    def query(self, name: str, rdtype: str) -> Deferred[RRAnswer]:
        """Look up ``name``/``rdtype``; fails with :class:`DnsFailure` if the answer is unknown."""
        return _deferred(self._query(name, rdtype))

    async def _query(self, name: str, rdtype: str) -> RRAnswer:
        try:
            answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            response = exc.response(exc.qnames()[0]) if exc.qnames() else None
            secure = bool(response is not None and response.flags & dns.flags.AD)
            return RRAnswer((), secure, 0)
        except dns.resolver.NoNameservers as exc:
            raise DnsFailure(f"{name}/{rdtype}: no server answered (SERVFAIL or refused)") from exc
        except dns.exception.Timeout as exc:
            raise DnsFailure(f"{name}/{rdtype}: timed out") from exc
        except dns.exception.DNSException as exc:
            raise DnsFailure(f"{name}/{rdtype}: {exc}") from exc
        secure = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            return RRAnswer((), secure, 0)
        return RRAnswer(tuple(answer.rrset), secure, answer.rrset.ttl)

    async def txt(self, name: str) -> list[str]:
        """TXT records at ``name``, each with its character-strings joined (RFC 7208 §3.3 style)."""
        answer = await self.query(name, "TXT")
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.records]

    async def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``.

        Fails only when neither family could be looked up; one family
        failing while the other answers is not an error.
        """
        found: list[str] = []
        failures: list[DnsFailure] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.query(name, rdtype)
            except DnsFailure as exc:
                failures.append(exc)
                continue
            found.extend(rdata.address for rdata in answer.records)
        if not found and failures:
            raise failures[0]
        return found


def _deferred(coro: Coroutine[Any, Any, Any]) -> Deferred:
    return Deferred.fromFuture(asyncio.ensure_future(coro))
