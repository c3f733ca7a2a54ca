"""Wiring: build the service tree from a Config and run it under systemd supervision.

``make_service`` returns a ``MultiService`` whose children start in order
(store and policy service first, listeners last) and stop in reverse, so the
daemon stops answering before it closes the cache.  Readiness (``READY=1``)
is sent only once every listener is bound.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field

from collections.abc import Callable

import sdnotify
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mtasts_resolver.config import Config, ListenConfig, parse_host_port
from mtasts_resolver.dane_resolver import DaneResolver
from mtasts_resolver.dns import DnsClient
from mtasts_resolver.dnssec_probe import ValidationProbe
from mtasts_resolver.fetch import PolicyFetcher, trust_root
from mtasts_resolver.protocols.readsocket import ReadsocketFactory
from mtasts_resolver.protocols.socketmap import SocketmapFactory
from mtasts_resolver.protocols.tcptable import TcpTableFactory
from mtasts_resolver.service import PolicyService, Resolution
from mtasts_resolver.store import PolicyStore, open_store
from mtasts_resolver.sts_resolver import StsResolver
from mtasts_resolver.tlsrpt.feeds import SpoolService, feed_services, policy_lookup
from mtasts_resolver.tlsrpt.resolution_feed import resolution_sink
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

log = Logger()


def build_policy_service(config: Config, reactor, store: PolicyStore,
                         on_resolution: Callable[[Resolution], None] | None = None) -> PolicyService:
    """The lookup service with its resolvers, shared by the daemon and the query tool."""
    dns = DnsClient(config.dns.nameservers, config.dns.port, config.dns.timeout_s)
    fetcher = PolicyFetcher(reactor, dns, trust_root(config.mta_sts.ca_file),
                            config.mta_sts.http_timeout_s, config.mta_sts.max_policy_bytes)
    dane = None
    if config.dane.enabled:
        dane = DaneResolver(reactor, dns, config.dane, ValidationProbe(dns, config.dane))
    return PolicyService(reactor, StsResolver(dns, fetcher), store, config.mta_sts, config.tlsrpt.attribute_maps,
                         on_resolution, dane=dane, dane_settings=config.dane)


class ListenerService(Service):
    """Listens on one endpoint; ``ready`` fires once bound (or fails with the reason)."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Factory, listen: ListenConfig) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._listen = listen
        self._port: IListeningPort | None = None
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        if self._listen.unix:
            _remove_stale_socket(self._listen.unix)
        self._endpoint.listen(self._factory).addCallbacks(self._bound, self.ready.errback)

    def _bound(self, port: IListeningPort) -> None:
        self._port = port
        if self._listen.unix and (self._listen.owner or self._listen.group):
            uid = pwd.getpwnam(self._listen.owner).pw_uid if self._listen.owner else -1
            gid = grp.getgrnam(self._listen.group).gr_gid if self._listen.group else -1
            os.chown(self._listen.unix, uid, gid)
        log.info("listening for {protocol} on {where}", protocol=self._listen.protocol,
                 where=self._listen.tcp or self._listen.unix)
        self.ready.callback(None)

    def stopService(self) -> Deferred | None:
        super().stopService()
        return self._port.stopListening() if self._port is not None else None


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a killed daemon would make bind() fail."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _endpoint(reactor, listen: ListenConfig) -> IStreamServerEndpoint:
    if listen.unix:
        return UNIXServerEndpoint(reactor, listen.unix, mode=int(listen.mode, 8), wantPID=False)
    host, port = parse_host_port(listen.tcp)
    endpoint_class = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
    return endpoint_class(reactor, port, interface=host)


def _factory(listen: ListenConfig, policy: PolicyService) -> Factory:
    if listen.protocol == "socketmap":
        return SocketmapFactory(policy, idle_timeout_s=listen.idle_timeout_s)
    if listen.protocol == "readsocket":
        return ReadsocketFactory(policy, listen.map_name, idle_timeout_s=listen.idle_timeout_s)
    return TcpTableFactory(policy, listen.map_name, idle_timeout_s=listen.idle_timeout_s)


class _StoreService(Service):
    """Closes the store last, after every listener has stopped."""

    def __init__(self, store: PolicyStore) -> None:
        self._store = store

    def stopService(self) -> None:
        super().stopService()
        self._store.close()


@dataclass
class Daemon:
    service: MultiService
    policy: PolicyService
    listeners: list[ListenerService] = field(default_factory=list)

    probe: ValidationProbe | None = None

    def ready(self) -> Deferred:
        return gatherResults([listener.ready for listener in self.listeners], consumeErrors=True)


def make_service(config: Config, reactor) -> Daemon:
    store = open_store(config.cache.backend, str(config.cache_path))
    spool = OutcomeSpool(reactor, store.outcome_writer(), config.tlsrpt.spool_flush_interval_s)
    policy = build_policy_service(config, reactor, store, resolution_sink(spool.add, reactor.seconds))
    loaded = policy.load()
    log.info("loaded {count} cached policies from {path}", count=loaded, path=config.cache_path)
    root = MultiService()
    _StoreService(store).setServiceParent(root)
    SpoolService(spool).setServiceParent(root)  # stops after the feeds: commits what they gave it
    for feed in feed_services(config.tlsrpt, reactor, spool, store, policy_lookup(policy.cached_policy)):
        feed.setServiceParent(root)
    refresher = TimerService(config.mta_sts.refresh_interval_s, policy.refresh_due)
    refresher.clock = reactor
    refresher.setServiceParent(root)
    daemon = Daemon(root, policy)
    if policy.dane_probe is not None:
        # DNSSEC validation probe: at start-up (DANE lookups wait for it) and periodically.
        prober = TimerService(config.dane.probe_interval_s, policy.dane_probe.check)
        prober.clock = reactor
        prober.setServiceParent(root)
        daemon.probe = policy.dane_probe
    for listen in config.listen:
        listener = ListenerService(_endpoint(reactor, listen), _factory(listen, policy), listen)
        listener.setServiceParent(root)
        daemon.listeners.append(listener)
    return daemon


class Supervisor:
    """sd_notify: READY once listening, STATUS with counts, WATCHDOG from the reactor."""

    def __init__(self, reactor, policy: PolicyService) -> None:
        self._notifier = sdnotify.SystemdNotifier()
        self._reactor = reactor
        self._policy = policy
        self._watchdog: TimerService | None = None

    def ready(self) -> None:
        self._notifier.notify(f"READY=1\nSTATUS={self._status()}")
        if self._policy.dane_probe is not None:  # DANE switched off or back on: show it at once
            self._policy.dane_probe.subscribe(lambda _: self._notifier.notify(f"STATUS={self._status()}"))
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec:
            self._watchdog = TimerService(watchdog_usec / 2e6, self._ping)
            self._watchdog.clock = self._reactor
            self._watchdog.startService()

    def _ping(self) -> None:
        self._notifier.notify(f"WATCHDOG=1\nSTATUS={self._status()}")

    def _status(self) -> str:
        return f"{self._policy.domains_cached} domains in memory; {self._policy.dane_status()}"

    def stopping(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stopService()
        self._notifier.notify("STOPPING=1")
