"""Wiring of the outcome spool and its feeds into the daemon's service tree.

Order matters on the way down: the feeds stop first, then the spool
commits what they gave it, then the store closes (``MultiService`` stops
children in reverse order of addition).

The feeds report a session under the policy in force that the resolution
for it recorded: this process's own spool has it at once (not committed
yet), another worker's reaches the store with that worker's next commit.
So the log followers count lines only once that commit is surely done
(``logfollow.SettlingLines``); the Exim event socket cannot wait (Exim
waits for its ``OK``), so an event that follows a resolution in another
worker within its ``spool_flush_interval_s`` may miss that policy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread

from mtasts_resolver.config import SocketSpec, TlsrptConfig
from mtasts_resolver.net.sockets import adopt_listener, stream_listener
from mtasts_resolver.policy.model import CachedPolicy, Mode
from mtasts_resolver.tlsrpt.feeds.collector import DatagramCollector
from mtasts_resolver.tlsrpt.feeds.exim_events import EximEventFactory, EximLogCorrelator
from mtasts_resolver.tlsrpt.feeds.logfollow import COMMIT_MARGIN_S, FileFollower, JournalFollower
from mtasts_resolver.store import StoreError
from mtasts_resolver.tlsrpt.model import (HOST_POLICY_PREFIX, PolicyType, ReportPolicy, report_policy_from_json,
                                          sts_report_policy)
from mtasts_resolver.tlsrpt.feeds.policy_mirror import PolicyMirror
from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator
from mtasts_resolver.tlsrpt.feeds.sourceip import RouteSource
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

POSTFIX_FEED = "postfix-log"
EXIM_FEED = "exim-log"
JOURNAL = "journal"
POLICY_MEMO_S = 1.0          # how long a feed trusts the policy it read from the store
POLICY_MEMO_ENTRIES = 10000

_P = TypeVar("_P")


def stored_policy_lookup(read: Callable[[str], str | None], fallback: Callable[[str], _P],
                         clock: Callable[[], float]) -> Callable[[str], ReportPolicy | _P]:
    """The policy in force as the store has it (written by whichever worker resolved the domain, DANE or
    MTA-STS), else ``fallback``; remembered for ``POLICY_MEMO_S`` so a burst of log lines reads it once."""
    memo: dict[str, tuple[float, ReportPolicy | _P]] = {}

    def policy_for(domain: str) -> ReportPolicy | _P:
        now = clock()
        hit = memo.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            text = read(domain)
        except StoreError:
            text = None
        policy = (report_policy_from_json(text) if text is not None else None) or fallback(domain)
        if len(memo) >= POLICY_MEMO_ENTRIES:
            memo.clear()
        memo[domain] = (now + POLICY_MEMO_S, policy)
        return policy
    return policy_for


def policy_lookup(cached_policy: Callable[[str], CachedPolicy | None]) -> Callable[[str], ReportPolicy]:
    """The policy the daemon applies to a domain, in RFC 8460 form, for feeds that only see sessions."""
    def policy_for(domain: str) -> ReportPolicy:
        cached = cached_policy(domain)
        if cached is None or cached.policy.mode is Mode.NONE:
            return ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)
        return sts_report_policy(domain, cached.policy)
    return policy_for


class SpoolService(Service):
    def __init__(self, spool: OutcomeSpool) -> None:
        self.spool = spool

    def stopService(self):
        super().stopService()
        return self.spool.stop()


class JournalService(Service):
    """Runs the journalctl follower while the daemon runs."""

    def __init__(self, reactor, follower: JournalFollower, cursor: str | None) -> None:
        self._reactor, self._follower, self._cursor = reactor, follower, cursor
        self._process = None

    def startService(self) -> None:
        super().startService()
        argv = JournalFollower.argv(self._cursor)
        self._process = self._reactor.spawnProcess(self._follower, argv[0], argv, env=os.environ)

    def stopService(self) -> None:
        super().stopService()
        self._follower.stop()
        if self._process is not None and self._process.pid is not None:
            self._process.signalProcess("TERM")


class _UnixStreamService(Service):
    """A UNIX stream socket bound when the service starts and closed when it stops."""

    def __init__(self, reactor, spec: SocketSpec, factory: Factory) -> None:
        self._reactor, self._spec, self._factory = reactor, spec, factory
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        self._port = adopt_listener(self._reactor, stream_listener(self._spec), self._factory, self._spec)
        super().startService()

    def stopService(self):
        super().stopService()
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None


def feed_services(settings: TlsrptConfig, reactor, spool: OutcomeSpool, store,
                  policy_for: Callable[[str], ReportPolicy]) -> list[Service]:
    services: list[Service] = []
    host_policy_for: Callable[[str], ReportPolicy | None] = lambda host: None
    settle_s = settings.spool_flush_interval_s + COMMIT_MARGIN_S   # until every worker's policies are committed
    if hasattr(store, "policy_in_force"):
        stored_in_force = store.policy_in_force
        if store.remote:   # a network round trip per session would hold the event loop: read a mirror
            mirror = PolicyMirror(reactor, store.policies_in_force_since,
                                  lambda call, *args: deferToThread(call, *args))
            services.append(mirror.service)
            stored_in_force, settle_s = mirror.get, settle_s + mirror.extra_settle_s

        def read(key: str) -> str | None:   # this process's newest first, then what every worker committed
            return spool.uncommitted_policy(key) or stored_in_force(key)
        policy_for = stored_policy_lookup(read, policy_for, reactor.seconds)
        stored = stored_policy_lookup(read, lambda key: None, reactor.seconds)
        host_policy_for = lambda host: stored(HOST_POLICY_PREFIX + host)   # noqa: E731
    ip = RouteSource(settings.sending_mta_ip)   # configured, else the kernel's route source per receiving IP
    if settings.collector_socket:
        services.append(DatagramCollector(reactor, spool, settings.collector_spec, settings.collector_rcvbuf_bytes))
    if settings.postfix_log:
        postfix = PostfixLogCorrelator(policy_for, ip, host_policy_for)
        if settings.postfix_log == JOURNAL:
            services.append(JournalService(reactor, JournalFollower(reactor, spool, POSTFIX_FEED, postfix.feed,
                                                                    settle_s), store.feed_cursor(POSTFIX_FEED)))
        else:
            services.append(FileFollower(reactor, spool, POSTFIX_FEED, settings.postfix_log, postfix.feed,
                                         settings.log_poll_interval_s, store.feed_cursor(POSTFIX_FEED), settle_s))
    if settings.exim_log:
        services.append(FileFollower(reactor, spool, EXIM_FEED, settings.exim_log,
                                     EximLogCorrelator(policy_for, ip, host_policy_for).feed, settings.log_poll_interval_s,
                                     store.feed_cursor(EXIM_FEED), settle_s))
    if settings.exim_event_socket:
        services.append(_UnixStreamService(reactor, settings.exim_event_spec,
                                           EximEventFactory(spool, policy_for, ip, reactor)))
    return services
