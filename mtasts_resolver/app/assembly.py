"""The parts every subcommand builds the same way: DNS on the reactor, the validation probe, the lookups.

The daemon, ``query`` and ``report`` resolve through the configured
nameservers only; :func:`dns_on_reactor` is the one place that points
Twisted's own host-name lookups (the policy fetch, report upload) at them.
The DNSSEC validation probe is made here once and handed to whoever needs it
(the DANE walk waits for it, the daemon runs it periodically and shows it in
STATUS=, ``query`` runs it once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mtasts_resolver.config import Config
from mtasts_resolver.net.dane_resolver import DaneResolver
from mtasts_resolver.net.dns import ConfiguredResolver, DnsClient
from mtasts_resolver.net.dnssec_probe import ValidationProbe
from mtasts_resolver.net.sts_fetch import PolicyFetcher
from mtasts_resolver.net.tls import trust_root
from mtasts_resolver.net.sts_resolver import StsResolver
from mtasts_resolver.service import PolicyService, Resolution
from mtasts_resolver.store import PolicyStore


def dns_on_reactor(config: Config, reactor) -> DnsClient:
    """The DNS client of ``config``, also installed as the reactor's name resolver."""
    dns = DnsClient(config.dns.nameservers, config.dns.port, config.dns.timeout_s)
    reactor.installNameResolver(ConfiguredResolver(dns))
    return dns


@dataclass(frozen=True)
class Lookups:
    policy: PolicyService
    probe: ValidationProbe | None   # None when DANE is off


def build_lookups(config: Config, reactor, store: PolicyStore,
                  on_resolution: Callable[[Resolution], None] | None = None) -> Lookups:
    """The lookup service with its resolvers, shared by the daemon and the query tool."""
    dns = dns_on_reactor(config, reactor)
    fetcher = PolicyFetcher(reactor, trust_root(config.mta_sts.ca_file),
                            config.mta_sts.http_timeout_s, config.mta_sts.max_policy_bytes)
    probe = dane = None
    if config.dane.enabled:
        probe = ValidationProbe(dns, config.dane)
        dane = DaneResolver(reactor, dns, config.dane, probe)
    policy = PolicyService(reactor, StsResolver(dns, fetcher), store, config.mta_sts, config.tlsrpt.attribute_maps,
                           on_resolution, dane=dane, dane_settings=config.dane)
    return Lookups(policy, probe)
