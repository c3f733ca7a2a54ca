"""The parts every subcommand builds the same way: the validation probe and the lookups.

The DNSSEC validation probe is made here once and handed to whoever needs it
(the DANE gate waits for it, the daemon runs it periodically and shows it in
STATUS=, ``query`` runs it once).  The daemon resolves in its resolver
processes (:mod:`mtasts_resolver.offload`); ``query`` resolves on its own
event loop, with the same :class:`~mtasts_resolver.net.network.Network`
the resolver processes run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mtasts_resolver.config import Config
from mtasts_resolver.net.dane_resolver import DaneResolver
from mtasts_resolver.net.dnssec_probe import ValidationProbe
from mtasts_resolver.net.network import Network, dns_on_reactor
from mtasts_resolver.offload.processes import ResolverProcesses
from mtasts_resolver.service import PolicyService, Resolution
from mtasts_resolver.store import PolicyStore


@dataclass(frozen=True)
class Lookups:
    policy: PolicyService
    probe: ValidationProbe | None               # None when DANE is off
    processes: ResolverProcesses | None = None  # None: resolutions run on this event loop


def build_lookups(config: Config, reactor, store: PolicyStore,
                  on_resolution: Callable[[Resolution], None] | None = None, *, offload: bool = False) -> Lookups:
    """The lookup service with its resolvers; ``offload`` puts them in ``daemon.resolver_processes`` children."""
    dns = dns_on_reactor(config, reactor)   # the probe's; and the query tool's whole network
    processes = None
    network: Network | ResolverProcesses
    if offload and config.daemon.resolver_processes > 0:
        network = processes = ResolverProcesses(reactor, config, config.daemon.resolver_processes)
    else:
        network = Network(reactor, config, dns)
    probe = dane = None
    if config.dane.enabled:
        probe = ValidationProbe(dns, config.dane)
        dane = DaneResolver(network.dane, probe)
    policy = PolicyService(reactor, network, store, config.mta_sts, config.tlsrpt.attribute_maps,
                           on_resolution, dane=dane, dane_settings=config.dane)
    return Lookups(policy, probe, processes)
