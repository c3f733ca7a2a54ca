"""MTA-STS discovery over the network: the ``_mta-sts`` TXT lookup and the policy fetch.

Each step returns a typed result (a record, a policy, or an
:class:`StsFailure`) and never raises, so the service can hand the result
straight to the pure rules in :mod:`mtasts_resolver.policy.refresh`.
"""

from __future__ import annotations

from mtasts_resolver.net.dns import DnsClient, DnsFailure
from mtasts_resolver.net.sts_fetch import PolicyFetcher
from mtasts_resolver.policy.model import FailureType, NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.sts import parse_policy, parse_txt_records


class StsResolver:
    def __init__(self, dns: DnsClient, fetcher: PolicyFetcher) -> None:
        self._dns = dns
        self._fetcher = fetcher

    async def discover(self, domain: str) -> StsTxt | NoStsTxt | StsFailure:
        """The domain's policy announcement (RFC 8461 §3.1)."""
        try:
            records = await self._dns.txt(f"_mta-sts.{domain}")
        except DnsFailure as exc:
            return StsFailure(FailureType.FETCH_ERROR, f"TXT lookup failed: {exc}")
        if not records:
            return NoStsTxt("no _mta-sts TXT record")
        return parse_txt_records(records)

    async def fetch(self, domain: str) -> StsPolicy | StsFailure:
        """Fetch and parse the policy file (RFC 8461 §3.3)."""
        body = await self._fetcher.fetch(domain)
        if isinstance(body, StsFailure):
            return body
        return parse_policy(body)
