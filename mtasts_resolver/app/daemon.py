"""Wiring: build the service tree from a Config and run it under systemd supervision.

``make_service`` returns a ``MultiService`` whose children start in order
(store and policy service first, listeners last) and stop in reverse, so the
daemon stops answering before it closes the cache.  Readiness (``READY=1``)
is sent only once every listener is bound.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import sdnotify
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, gatherResults, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mtasts_resolver.config import Config, ListenConfig
from mtasts_resolver.net.dane_resolver import DaneResolver
from mtasts_resolver.net.dns import ConfiguredResolver, DnsClient
from mtasts_resolver.net.dnssec_probe import ValidationProbe
from mtasts_resolver.net.sts_fetch import PolicyFetcher
from mtasts_resolver.net.tls import trust_root
from mtasts_resolver.app.logs import set_level
from mtasts_resolver.protocols import LiveConnections
from mtasts_resolver.protocols.readsocket import ReadsocketFactory
from mtasts_resolver.protocols.socketmap import SocketmapFactory
from mtasts_resolver.protocols.tcptable import TcpTableFactory
from mtasts_resolver.app.reload import plan_reload
from mtasts_resolver.service import PolicyService, Resolution
from mtasts_resolver.store import PolicyStore, open_store
from mtasts_resolver.net.sts_resolver import StsResolver
from mtasts_resolver.tlsrpt.feeds.services import SpoolService, feed_services, policy_lookup
from mtasts_resolver.tlsrpt.feeds.resolution import resolution_sink
from mtasts_resolver.tlsrpt.spool import OutcomeSpool
from mtasts_resolver.app.workers import inherited_fds, worker_index
from mtasts_resolver.net.sockets import stream_listener

log = Logger()


def build_policy_service(config: Config, reactor, store: PolicyStore,
                         on_resolution: Callable[[Resolution], None] | None = None) -> PolicyService:
    """The lookup service with its resolvers, shared by the daemon and the query tool.

    Twisted's own host-name lookups (the policy fetch) are pointed at the
    configured resolver too, so nothing resolves through the system's.
    """
    dns = DnsClient(config.dns.nameservers, config.dns.port, config.dns.timeout_s)
    reactor.installNameResolver(ConfiguredResolver(dns))
    fetcher = PolicyFetcher(reactor, trust_root(config.mta_sts.ca_file),
                            config.mta_sts.http_timeout_s, config.mta_sts.max_policy_bytes)
    dane = None
    if config.dane.enabled:
        dane = DaneResolver(reactor, dns, config.dane, ValidationProbe(dns, config.dane))
    return PolicyService(reactor, StsResolver(dns, fetcher), store, config.mta_sts, config.tlsrpt.attribute_maps,
                         on_resolution, dane=dane, dane_settings=config.dane)


class ListenerService(Service):
    """Listens on one endpoint; ``ready`` fires once bound (or fails with the reason).

    Stopping it closes the listening socket, then lets every open connection
    send the replies it owes before closing it (Postfix reconnects on EOF),
    aborting whatever is still open after ``drain_timeout_s``.
    """

    def __init__(self, reactor, endpoint: IStreamServerEndpoint, factory: Factory, listen: ListenConfig,
                 drain_timeout_s: float) -> None:
        self._reactor = reactor
        self._endpoint = endpoint
        self._factory = factory
        self._live: LiveConnections = factory.live   # every table factory counts its connections
        self.listen = listen
        self._drain_timeout_s = drain_timeout_s
        self._port: IListeningPort | None = None
        self.ready: Deferred[None] = Deferred()

    @property
    def connections(self) -> int:
        return len(self._live)

    def startService(self) -> None:
        super().startService()
        self._endpoint.listen(self._factory).addCallbacks(self._bound, self.ready.errback)

    def _bound(self, port: IListeningPort) -> None:
        self._port = port
        log.info("listening for {protocol} on {where}", protocol=self.listen.protocol,
                 where=self.listen.tcp or self.listen.unix)
        self.ready.callback(None)

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._port is None:
            return None
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._port.stopListening()
        drained = self._live.close_when_answered()
        drained.addTimeout(self._drain_timeout_s, self._reactor)
        try:
            await drained
        except DeferredTimeout:
            log.warn("{count} connections still busy after {timeout} s; dropping them",
                     count=len(self._live), timeout=self._drain_timeout_s)
            self._live.abort()


def _endpoint(reactor, listen: ListenConfig, inherited_fd: int | None) -> IStreamServerEndpoint:
    """Every listener is a socket from :func:`net.sockets.stream_listener`, adopted by the reactor.

    Binding with the socket module here, or in the parent of a worker pool,
    gives one code path for both (socket file mode and owner included).
    """
    sock = socket.socket(fileno=inherited_fd) if inherited_fd is not None else stream_listener(listen.socket)
    family = sock.family
    return AdoptedStreamServerEndpoint(reactor, sock.detach(), family)


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
    config: Config
    reactor: object
    listeners: list[ListenerService] = field(default_factory=list)

    def ready(self) -> Deferred:
        return gatherResults([listener.ready for listener in self.listeners], consumeErrors=True)

    @property
    def connections(self) -> int:
        return sum(listener.connections for listener in self.listeners)

    def add_listener(self, listen: ListenConfig, inherited_fd: int | None = None) -> ListenerService:
        listener = ListenerService(self.reactor, _endpoint(self.reactor, listen, inherited_fd),
                                   _factory(listen, self.policy),
                                   listen, self.config.daemon.drain_timeout_s)
        listener.setServiceParent(self.service)
        self.listeners.append(listener)
        return listener

    async def reload(self, new: Config) -> tuple[str, ...]:
        """Apply ``new`` where it can change live; returns the sections that need a restart.

        A listener that fails to bind is logged and left out; the others
        keep serving.
        """
        plan = plan_reload(self.config, new)
        set_level(new.daemon.log_level)
        self.config = dataclasses.replace(self.config, daemon=dataclasses.replace(
            self.config.daemon, log_level=new.daemon.log_level, drain_timeout_s=new.daemon.drain_timeout_s))
        stopping = [listener for listener in self.listeners if listener.listen in plan.stop]
        for listener in stopping:
            self.listeners.remove(listener)
        starting = [self.add_listener(listen) for listen in plan.start]
        await gatherResults([maybeDeferred(listener.disownServiceParent) for listener in stopping])
        for listener in starting:
            try:
                await listener.ready
            except Exception as exc:
                log.error("cannot listen on {where}: {error}", where=listener.listen.tcp or listener.listen.unix,
                          error=exc)
                self.listeners.remove(listener)
                await maybeDeferred(listener.disownServiceParent)
        self.config = dataclasses.replace(self.config, listen=tuple(listener.listen for listener in self.listeners))
        if plan.restart_needed:
            log.warn("configuration sections changed that only a restart applies: {sections}",
                     sections=", ".join(plan.restart_needed))
        return plan.restart_needed


def make_service(config: Config, reactor) -> Daemon:
    store = open_store(config.cache.backend, str(config.cache_path))
    spool = OutcomeSpool(reactor, store.outcome_writer(), config.tlsrpt.spool_flush_interval_s)
    policy = build_policy_service(config, reactor, store, resolution_sink(spool.add, reactor.seconds))
    loaded = policy.load()
    log.info("loaded {count} cached policies from {path}", count=loaded, path=config.cache_path)
    root = MultiService()
    _StoreService(store).setServiceParent(root)
    SpoolService(spool).setServiceParent(root)  # stops after the feeds: commits what they gave it
    if worker_index() == 0:  # one collector and one log follower, however many workers
        for feed in feed_services(config.tlsrpt, reactor, spool, store, policy_lookup(policy.cached_policy)):
            feed.setServiceParent(root)
    refresher = TimerService(config.mta_sts.refresh_interval_s, policy.refresh_due)
    refresher.clock = reactor
    refresher.setServiceParent(root)
    daemon = Daemon(root, policy, config, reactor)
    if policy.dane_probe is not None:
        # DNSSEC validation probe: at start-up (DANE lookups wait for it) and periodically.
        prober = TimerService(config.dane.probe_interval_s, policy.dane_probe.check)
        prober.clock = reactor
        prober.setServiceParent(root)
    inherited = inherited_fds()   # set in the workers of a pool: the parent bound the listeners
    for index, listen in enumerate(config.listen):
        daemon.add_listener(listen, inherited[index] if inherited is not None else None)
    return daemon


class Supervisor:
    """sd_notify: READY once listening, RELOADING on SIGHUP, STATUS with counts, WATCHDOG, STOPPING.

    The watchdog is pinged from a reactor timer, so a wedged reactor (the
    thing worth restarting for) stops the pings and systemd restarts us.
    """

    def __init__(self, reactor, daemon: Daemon) -> None:
        self._notifier = sdnotify.SystemdNotifier()
        self._reactor = reactor
        self._daemon = daemon
        self._watchdog: TimerService | None = None
        self._note = ""

    def ready(self) -> None:
        self._notifier.notify(f"READY=1\nSTATUS={self._status()}")
        probe = self._daemon.policy.dane_probe
        if probe is not None:  # DANE switched off or back on: show it at once
            probe.subscribe(lambda _: self._notifier.notify(f"STATUS={self._status()}"))
        interval_s = _watchdog_interval_s(os.environ)
        if interval_s:
            self._watchdog = TimerService(interval_s, self._ping)
            self._watchdog.clock = self._reactor
            self._watchdog.startService()

    def reloading(self) -> None:
        self._notifier.notify("RELOADING=1\nSTATUS=reloading the configuration")

    def reloaded(self, note: str = "") -> None:
        """Back to READY after a reload; ``note`` (e.g. "restart needed for dns") stays in STATUS."""
        self._note = note
        self._notifier.notify(f"READY=1\nSTATUS={self._status()}")

    def _ping(self) -> None:
        self._notifier.notify(f"WATCHDOG=1\nSTATUS={self._status()}")

    def _status(self) -> str:
        status = (f"{self._daemon.policy.domains_cached} domains cached, "
                  f"{self._daemon.connections} client connections")
        status = f"{status}; {self._daemon.policy.dane_status()}"
        return f"{status}; {self._note}" if self._note else status

    def stopping(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stopService()
        self._notifier.notify(f"STOPPING=1\nSTATUS=stopping, {self._daemon.connections} connections finishing")


def _watchdog_interval_s(environ: dict[str, str] | os._Environ) -> float:
    """Half of systemd's WatchdogSec= (sd_watchdog_enabled(3) advises pinging at half), 0 when off.

    WATCHDOG_PID names the process meant when set: a child that inherited
    the environment must not ping for its parent.
    """
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return 0.0
    usec = environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() else 0.0
