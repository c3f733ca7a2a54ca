"""The network half of a resolution, built one way for the daemon's resolver processes and the query tool.

Every subcommand resolves through the configured nameservers only:
:func:`dns_on_reactor` is the one place that points Twisted's own host-name
lookups (the policy fetch, report uploads) at them.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mtasts_resolver.config import Config
from mtasts_resolver.net.dane_resolver import DaneWalk
from mtasts_resolver.net.dns import ConfiguredResolver, DnsClient
from mtasts_resolver.net.sts_fetch import PolicyFetcher
from mtasts_resolver.net.sts_resolver import StsResolver
from mtasts_resolver.net.tls import trust_root
from mtasts_resolver.policy.dane import DaneResult
from mtasts_resolver.policy.model import NoStsTxt, StsFailure, StsPolicy, StsTxt


def dns_on_reactor(config: Config, reactor) -> DnsClient:
    """The DNS client of ``config``, also installed as the reactor's name resolver."""
    dns = DnsClient(config.dns.nameservers, config.dns.port, config.dns.timeout_s, reactor)
    reactor.installNameResolver(ConfiguredResolver(dns))
    return dns


class Network:
    """MTA-STS discovery and fetch and the DANE walk, each a call taking a domain: what a resolver process serves."""

    def __init__(self, reactor, config: Config, dns: DnsClient) -> None:
        fetcher = PolicyFetcher(reactor, dns, trust_root(config.mta_sts.ca_file), config.mta_sts.http_timeout_s,
                                config.mta_sts.max_policy_bytes)
        self.dns = dns
        self._sts = StsResolver(dns, fetcher)
        self._dane = DaneWalk(reactor, dns, config.dane) if config.dane.enabled else None

    def discover(self, domain: str) -> Deferred[StsTxt | NoStsTxt | StsFailure]:
        return Deferred.fromCoroutine(self._sts.discover(domain))

    def fetch(self, domain: str) -> Deferred[StsPolicy | StsFailure]:
        return Deferred.fromCoroutine(self._sts.fetch(domain))

    def dane(self, domain: str) -> Deferred[DaneResult]:
        if self._dane is None:
            raise RuntimeError("DANE is off (dane.enabled = false): nothing should ask for it")
        return self._dane.resolve(domain)


def build_network(config: Config, reactor) -> Network:
    """A resolver process's whole network."""
    return Network(reactor, config, dns_on_reactor(config, reactor))
