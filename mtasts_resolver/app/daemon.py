"""The daemon's life, top to bottom: assemble, start, READY, reload on SIGHUP, drain and stop on SIGTERM.

Start-up is all or nothing.  :func:`assemble` does everything that can fail,
cheapest first (the checks of :mod:`preflight`, binding every listener,
opening and checking the cache, loading it), and on any failure closes what
it had opened, stops the spool's writer thread and raises :class:`Fatal`
naming the address, path or user, so the process exits at once with a
sysexits status instead of hanging half-bound.  READY=1 is sent only once
every listener accepts.

Stop is ordered, not concurrent: the listeners stop accepting and answer
what is in flight (persisting what those lookups fetched), then the
background work and the TLS-RPT feeds stop, then the spool commits, and only
then is the cache closed.
"""

from __future__ import annotations

import dataclasses
import gc
import signal
from contextlib import ExitStack

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, maybeDeferred
from twisted.logger import Logger

from mtasts_resolver import __version__
from mtasts_resolver.app import preflight
from mtasts_resolver.app.assembly import Lookups, build_lookups
from mtasts_resolver.app.exits import (EX_CANTCREAT, EX_CONFIG, EX_IOERR, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE, OK,
                                       Fatal)
from mtasts_resolver.app.listeners import (ListenerService, bind_listener, finished_within, prepare_fd_budget,
                                            table_factory, where)
from mtasts_resolver.app.logs import set_level, start_logging
from mtasts_resolver.app.metrics import Sources, bind_metrics, metrics_services, sample
from mtasts_resolver.app.reload import plan_reload
from mtasts_resolver.app.systemd import Supervisor
from mtasts_resolver.app.workers import inherited_fds, worker_index
from mtasts_resolver.config import Config, ConfigError, ListenConfig, load_config
from mtasts_resolver.lookup import LookupService
from mtasts_resolver.metrics.counting import CountingLookups, Tally, both
from mtasts_resolver.protocols import ConnectionBudget
from mtasts_resolver.store import CannotCreate, DamagedCache, PolicyStore, StoreError, Unreachable, open_store
from mtasts_resolver.store.retrying import RetryingPolicyStore
from mtasts_resolver.tlsrpt.feeds.resolution import resolution_sink
from mtasts_resolver.tlsrpt.feeds.services import feed_services, policy_lookup
from mtasts_resolver.tlsrpt.feeds.sourceip import RouteSource
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

log = Logger(namespace="mtasts_resolver")


async def run(reactor, config: Config, config_path: str | None) -> int:
    """``mtasts-resolver [run]``: the daemon until SIGTERM; returns the exit status."""
    start_logging(config.daemon.log_level)
    try:
        daemon = assemble(reactor, config)
        await daemon.start()
    except Fatal as exc:
        log.critical("cannot start: {error}", error=exc)
        return exc.status
    supervisor = Supervisor(reactor, daemon.counts, config.dane.enabled, daemon.lookups.probe)
    if daemon.lookups.processes is not None:   # a resolver process down or back: STATUS says so at once
        daemon.lookups.processes.subscribe(supervisor.changed)
    one_at_a_time = DeferredLock()

    def on_sighup(*_: object) -> None:
        # The handler only schedules; the reload runs on the reactor, one at a time.
        reactor.callFromThread(lambda: one_at_a_time.run(
            lambda: Deferred.fromCoroutine(reload(daemon, supervisor, config_path))))

    # Installed before READY=1: until then SIGHUP would kill us.
    signal.signal(signal.SIGHUP, on_sighup)
    supervisor.ready()
    log.info("mtasts-resolver {version} ready", version=__version__)
    stopped: Deferred[int] = Deferred()

    async def shutdown() -> None:
        supervisor.stopping(daemon.connections)
        try:
            await daemon.stop()
        except Exception:  # noqa: BLE001 - a bug in stopping must still end the process, loudly
            log.failure("stopping failed")
            stopped.callback(EX_SOFTWARE)
            return
        log.info("stopped")
        stopped.callback(OK)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(shutdown()))
    return await stopped


async def reload(daemon: Daemon, supervisor: Supervisor, config_path: str | None) -> None:
    """SIGHUP: apply the new configuration or refuse it; either way a log line, READY=1 and STATUS say so."""
    supervisor.reloading()
    try:
        new = load_config(config_path)
        _check(new)
    except (ConfigError, Fatal) as exc:
        log.error("reload refused, still running the previous configuration: {error}", error=exc)
        supervisor.reloaded(f"last reload refused: {exc}")
        return
    try:
        restart_needed, left_out = await daemon.reload(new)
    except Exception:  # noqa: BLE001 - a bug must not leave systemd waiting for READY=1
        log.failure("reload failed half-way")
        supervisor.reloaded("last reload failed half-way, see the log")
        return
    notes = []
    if left_out:
        notes.append(f"left out (cannot listen): {', '.join(left_out)}")
    if restart_needed:
        notes.append(f"restart needed for {', '.join(restart_needed)}")
    log.info("configuration reloaded from {path}{notes}", path=config_path or "embedded defaults",
             notes=f" ({'; '.join(notes)})" if notes else "")
    supervisor.reloaded("; ".join(notes))


def _check(config: Config) -> None:
    """The checks that need no binding, as one :class:`Fatal` (the first problem's status)."""
    found = preflight.problems(config)
    if found:
        raise Fatal("; ".join(map(str, found)), found[0].status)


class Daemon:
    """The running parts, in the order they stop: listeners, background work, spool, store."""

    def __init__(self, reactor, config: Config, lookups: Lookups, listeners: list[ListenerService],
                 background: list[Service], spool: OutcomeSpool, store: RetryingPolicyStore) -> None:
        self.reactor = reactor
        self.config = config
        self.lookups = lookups
        self.listeners = listeners
        self._background = background   # TLS-RPT feeds and timers
        self._spool = spool
        self._store = store
        self._connections = ConnectionBudget(config.daemon.max_connections)   # every listener's together
        self.lookup: LookupService = lookups.policy   # what the listeners ask (counted: assemble)

    @property
    def connections(self) -> int:
        return sum(listener.connections for listener in self.listeners)

    def counts(self) -> str:
        """The live part of systemd's STATUS= line."""
        counts = f"{self.lookups.policy.domains_cached} domains cached, {self.connections} client connections"
        if self._store.waiting:
            counts = f"{counts}, {self._store.waiting} policies NOT persisted yet (see the log)"
        if self.lookups.processes is not None and (down := self.lookups.processes.down):
            counts = f"{counts}, resolver process {', '.join(map(str, down))} DOWN: new domains answered TEMP"
        return counts

    async def start(self) -> None:
        """Start the background work (resolver processes first), then the listeners; if any fails, stop all and raise."""
        for service in self._background:
            await self._start(service)
        if self.lookups.processes is not None:
            try:
                await self.lookups.processes.started()
            except Exception as exc:  # noqa: BLE001 - a child that cannot start: no lookup could be resolved
                await self.stop()
                raise Fatal(f"cannot start the resolver processes: {exc}", EX_SOFTWARE) from None
        for listener in self.listeners:
            await self._start(listener)

    async def _start(self, service: Service) -> None:
        try:
            service.startService()
        except Exception as exc:  # noqa: BLE001 - whatever it was, nothing may stay half-started
            status = EX_CONFIG if isinstance(exc, KeyError) else (
                EX_UNAVAILABLE if isinstance(exc, OSError) else EX_SOFTWARE)
            if status == EX_SOFTWARE:
                log.failure("cannot start {service}", service=type(service).__name__)
            await self.stop()
            raise Fatal(f"cannot start {_name(service)}: {exc}", status) from None

    async def stop(self) -> None:
        """Each step runs even if one before it failed: the spool's thread must stop, the cache must close."""
        deadline = self.reactor.seconds() + self.config.daemon.drain_timeout_s
        try:
            # 1. Stop accepting; answer what is in flight (at most drain_timeout_s, then connections are
            #    dropped). A lookup's policy is persisted before its answer is sent: the store is still open.
            await gatherResults([maybeDeferred(listener.stopService) for listener in self.listeners],
                                consumeErrors=True)
            # 2. Background work (a periodic refresh, the validation probe) gets what is left of that time.
            running = gatherResults([maybeDeferred(service.stopService) for service in reversed(self._background)
                                     if service.running], consumeErrors=True)
            left_s = max(deadline - self.reactor.seconds(), 0.1)
            if not await finished_within(self.reactor, running, left_s):
                log.warn("background work still running at the end of drain_timeout_s; stopping without it")
        finally:
            # 3. The spool commits what the feeds gave it; 4. then the cache closes.
            try:
                await self._spool.stop()
            finally:
                self._store.close()

    async def reload(self, new: Config) -> tuple[tuple[str, ...], list[str]]:
        """Apply ``new`` where it can change live; returns (sections needing a restart, listeners left out).

        Removed listeners stop listening first (a changed listener may reuse
        the address), new ones are bound, then the removed ones drain.  A
        listener that cannot bind is logged and left out; the others keep
        serving.
        """
        plan = plan_reload(self.config, new)
        set_level(new.daemon.log_level)
        if self.lookups.processes is not None:
            self.lookups.processes.set_log_level(new.daemon.log_level)
        drain_timeout_s = new.daemon.drain_timeout_s
        stopping = [listener for listener in self.listeners if listener.listen in plan.stop]
        drains = [maybeDeferred(listener.stopService) for listener in stopping]
        for listener in stopping:
            self.listeners.remove(listener)
            await listener.unbound
        left_out = []
        for listen in plan.start:
            try:
                listener = self._listener(listen, bind_listener(listen))
            except Fatal as exc:
                log.error("{error}: this listener is left out", error=exc)
                left_out.append(where(listen))
                continue
            listener.startService()
            self.listeners.append(listener)
        for listener in self.listeners:
            listener.drain_timeout_s = drain_timeout_s
        await gatherResults(drains)
        self.config = dataclasses.replace(
            self.config, listen=tuple(listener.listen for listener in self.listeners),
            daemon=dataclasses.replace(self.config.daemon, log_level=new.daemon.log_level,
                                       drain_timeout_s=drain_timeout_s))
        if plan.restart_needed:
            log.warn("configuration sections changed that only a restart applies: {sections}",
                     sections=", ".join(plan.restart_needed))
        return plan.restart_needed, left_out

    def _listener(self, listen: ListenConfig, sock) -> ListenerService:
        return ListenerService(self.reactor, sock, table_factory(listen, self.lookup, self._connections), listen,
                               self.config.daemon.drain_timeout_s)


def assemble(reactor, config: Config) -> Daemon:
    """Everything the daemon needs, checked and opened; nothing started yet.

    On failure, what was opened is closed again (sockets, the cache, the
    spool's writer thread) and :class:`Fatal` says what failed.
    """
    _check(config)
    with ExitStack() as opened:
        inherited = inherited_fds()   # set in the workers of a pool: the parent bound the listeners
        sockets = [opened.enter_context(bind_listener(listen, inherited[index] if inherited is not None else None))
                   for index, listen in enumerate(config.listen)]
        store = _open_cache(config)
        opened.callback(store.close)
        try:
            writer = store.outcome_writer()   # the spool's own connection to the same file
        except StoreError as exc:
            raise Fatal(str(exc), EX_IOERR) from None
        spool = OutcomeSpool(reactor, writer, config.tlsrpt.spool_flush_interval_s)
        opened.callback(spool.stop)   # stops its writer thread: a thread left running keeps the process alive
        persistent = RetryingPolicyStore(store, reactor)
        tally = Tally()
        metrics_socket = None
        if worker_index() == 0 and config.metrics.listen is not None:   # one /metrics for all workers
            metrics_socket = opened.enter_context(bind_metrics(config))
        sink = resolution_sink(spool.add, reactor.seconds, RouteSource(config.tlsrpt.sending_mta_ip))
        lookups = build_lookups(config, reactor, persistent, both(tally.resolution, sink), offload=True)
        loaded = _load_cache(lookups, config)
        log.info("loaded {count} cached policies from {path}", count=loaded, path=store.where)
        prepare_fd_budget(config)
        # Stopped last (background work stops in reverse): lookups in flight at stop still need them.
        background: list[Service] = [lookups.processes] if lookups.processes is not None else []
        if worker_index() == 0:  # one collector and one log follower, however many workers
            background += feed_services(config.tlsrpt, reactor, spool, store,
                                        policy_lookup(lookups.policy.cached_policy))
        background.append(_timer(reactor, config.mta_sts.refresh_interval_s, lookups.policy.refresh_due))
        if lookups.probe is not None:
            # DNSSEC validation probe: at start-up (DANE lookups wait for it) and periodically.
            background.append(_timer(reactor, config.dane.probe_interval_s, lookups.probe.check))
        daemon = Daemon(reactor, config, lookups, [], background, spool, persistent)
        daemon.lookup = CountingLookups(lookups.policy, tally)
        daemon.listeners = [daemon._listener(listen, sock) for listen, sock in zip(config.listen, sockets)]
        sources = Sources(tally, lambda: lookups.policy.domains_cached, lambda: daemon.connections, spool,
                          config.dane.enabled, lookups.probe)
        started_at = reactor.seconds()
        background += metrics_services(reactor, config,
                                       lambda: sample(sources, worker_index(), started_at, reactor.seconds()),
                                       store.deliveries, metrics_socket, store.remote)
        opened.pop_all()
        # What start-up built (the cached policies, the code) lives as long as the process: out of the
        # collector's reach, a full collection does not walk it. At 100,000 policies one held the event
        # loop for ~40 ms, answering nobody meanwhile.
        gc.freeze()
        return daemon


def _open_cache(config: Config) -> PolicyStore:
    try:
        return open_store(config.cache, config.cache_path)
    except DamagedCache as exc:
        _log_damage(exc)
        raise Fatal(str(exc), EX_IOERR) from None
    except CannotCreate as exc:
        raise Fatal(str(exc), EX_CANTCREAT) from None
    except Unreachable as exc:   # the fleet's database is down: systemd's restart tries again (74 would stop it)
        raise Fatal(str(exc), EX_TEMPFAIL) from None
    except StoreError as exc:
        raise Fatal(str(exc), EX_IOERR) from None


def _load_cache(lookups: Lookups, config: Config) -> int:
    try:
        return lookups.policy.load()
    except DamagedCache as exc:
        _log_damage(exc)
        raise Fatal(str(exc), EX_IOERR) from None
    except StoreError as exc:
        raise Fatal(f"cannot load the policy cache: {exc}", EX_IOERR) from None


def _log_damage(exc: DamagedCache) -> None:
    for what, why in exc.problems:
        log.error("policy cache {path}: {what} cannot be loaded: {why}", path=exc.path, what=what, why=why)


def _timer(reactor, interval_s: float, call) -> TimerService:
    timer = TimerService(interval_s, call)
    timer.clock = reactor
    return timer


def _name(service: Service) -> str:
    """What to call a service that failed to start: with its socket, as the admin configured it."""
    if isinstance(service, ListenerService):
        return f"{service.listen.protocol} listener on {where(service.listen)}"
    spec = getattr(service, "_spec", None)   # the TLS-RPT collector and the Exim event socket
    return f"{type(service).__name__} on {spec}" if spec is not None else type(service).__name__
