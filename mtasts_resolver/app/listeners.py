"""The listeners: one bound socket per ``[[listen]]`` entry, answered by its table protocol.

Sockets are bound before anything else starts (:func:`bind_listener`), so a
listener that cannot bind (address in use, unknown owner) stops the start-up
before READY and before any thread pool exists, with the address named.
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mtasts_resolver.app.exits import EX_CONFIG, EX_UNAVAILABLE, Fatal
from mtasts_resolver.config import Config, ListenConfig
from mtasts_resolver.limits import LIMITS
from mtasts_resolver.lookup import LookupService
from mtasts_resolver.net.sockets import adopt_listener, stream_listener
from mtasts_resolver.protocols import ConnectionBudget, ConnectionLimits, LiveConnections
from mtasts_resolver.protocols.readsocket import ReadsocketFactory
from mtasts_resolver.protocols.socketmap import SocketmapFactory
from mtasts_resolver.protocols.tcptable import TcpTableFactory

log = Logger()


def where(listen: ListenConfig) -> str:
    """The listener's address as the admin wrote it, for messages."""
    return str(listen.tcp) if listen.tcp else listen.unix


def bind_listener(listen: ListenConfig, inherited_fd: int | None = None) -> socket.socket:
    """The listening socket of ``listen`` (bound here, or handed down by a worker pool's parent).

    Raises :class:`Fatal` naming the address: EX_CONFIG for an owner or group
    that does not exist, EX_UNAVAILABLE for a socket the system refuses.
    """
    if inherited_fd is not None:
        return socket.socket(fileno=inherited_fd)
    try:
        return stream_listener(listen.socket)
    except KeyError as exc:   # pwd / grp: no such user or group
        raise Fatal(f"cannot listen on {where(listen)}: {exc.args[0]}", EX_CONFIG) from None
    except OSError as exc:
        raise Fatal(f"cannot listen on {where(listen)}: {exc.strerror or exc}", EX_UNAVAILABLE) from None


def table_factory(listen: ListenConfig, lookup: LookupService, budget: ConnectionBudget | None = None) -> Factory:
    """The protocol factory of one listener; ``budget`` is shared by every listener of the process."""
    limits = ConnectionLimits(listen.max_connections, listen.max_in_flight, listen.request_timeout_s,
                              listen.max_unsent_bytes)
    if listen.protocol == "socketmap":
        return SocketmapFactory(lookup, listen.idle_timeout_s, limits, budget, LIMITS.hit)
    if listen.protocol == "readsocket":
        return ReadsocketFactory(lookup, listen.map_name, listen.idle_timeout_s, limits, budget, LIMITS.hit)
    return TcpTableFactory(lookup, listen.map_name, listen.idle_timeout_s, limits, budget, LIMITS.hit)


# Sockets one resolution may hold at once: UDP DNS queries (TXT, MX, TLSA, A
# walked in parallel for DANE) and the HTTPS fetch; plus the fixed rest (cache,
# log, listeners, notify socket, TLS-RPT feeds).
FDS_PER_RESOLUTION = 4
FDS_FIXED = 64


def prepare_fd_budget(config: Config) -> None:
    """Say at start how many file descriptors the caps can use, warn if the process may not have them, and
    make room for them in the kernel's descriptor table now.

    Running out of descriptors makes every accept, DNS query and fetch fail at
    once; the caps (``daemon.max_connections``,
    ``mta_sts.max_concurrent_resolutions``) are what keep us below the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = (config.daemon.max_connections + FDS_PER_RESOLUTION * config.mta_sts.max_concurrent_resolutions
              + FDS_FIXED)
    level = log.info if soft == resource.RLIM_INFINITY or soft >= needed else log.warn
    level("file descriptors: limit {soft} (hard {hard}), caps need up to {needed} ({connections} connections + "
          "{resolutions} resolutions x {per} + {fixed})", soft=soft, hard=hard, needed=needed,
          connections=config.daemon.max_connections, resolutions=config.mta_sts.max_concurrent_resolutions,
          per=FDS_PER_RESOLUTION, fixed=FDS_FIXED)
    presize_descriptor_table(needed if soft == resource.RLIM_INFINITY else min(needed, soft))


def presize_descriptor_table(count: int) -> None:
    """Grow this process's descriptor table to ``count`` entries at start, not while accepting.

    The kernel doubles the table when a new descriptor does not fit, and in a
    process with threads (the store's, the spool's) each doubling waits for an
    RCU grace period: accept(2) of the 129th, 257th, 513th and 1025th
    connection each held the event loop for 5-15 ms (bench/hostile.py, 1,100
    idle connections).  The table never shrinks, so one descriptor placed at
    ``count - 1`` and closed again pays for all of it up front (16 KiB at
    the default caps).  ``F_DUPFD`` takes the lowest free descriptor from
    there, so nothing open is replaced.
    """
    probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, count - 1))
    except OSError as exc:   # a limit below count: the accepts just grow it later, as they always did
        log.debug("descriptor table not presized to {count}: {error}", count=count, error=exc)
    finally:
        os.close(probe)


def finished_within(reactor, work: Deferred, timeout_s: float) -> Deferred[bool]:
    """True once ``work`` ends (either way), False if ``timeout_s`` passes first; ``work`` is left running.

    Not ``work.addTimeout``: cancelling a gathered Deferred fails it with
    FirstError, not a timeout, and the caller wants to decide what to drop.
    """
    finished: Deferred[bool] = Deferred()
    timer = reactor.callLater(timeout_s, lambda: finished.called or finished.callback(False))

    def ended(result: object) -> None:
        if not finished.called:
            timer.cancel()
            finished.callback(True)

    work.addBoth(ended)
    return finished


class ListenerService(Service):
    """Accepts on one bound socket while running.

    Stopping it closes the listening socket, then lets every open connection
    send the replies it owes before closing it (Postfix reconnects on EOF),
    aborting whatever is still open after ``drain_timeout_s``.
    """

    def __init__(self, reactor, sock: socket.socket, factory: Factory, listen: ListenConfig,
                 drain_timeout_s: float) -> None:
        self._reactor = reactor
        self._socket: socket.socket | None = sock
        self._factory = factory
        self._live: LiveConnections = factory.live   # every table factory counts its connections
        self.listen = listen
        self.drain_timeout_s = drain_timeout_s
        self._port: IListeningPort | None = None
        self.unbound: Deferred[None] = Deferred()   # fires once the address is free again (while draining)

    @property
    def connections(self) -> int:
        return len(self._live)

    def startService(self) -> None:
        super().startService()
        sock, self._socket = self._socket, None
        # Not reactor.adoptStreamPort: it would chmod a UNIX socket file to 0666 (see adopt_listener).
        self._port = adopt_listener(self._reactor, sock, self._factory, self.listen.socket)
        log.info("listening for {protocol} on {where}", protocol=self.listen.protocol, where=where(self.listen))

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._socket is not None:   # never started: the start-up failed elsewhere
            self._socket.close()
            self._socket = None
        if self._port is None:
            if not self.unbound.called:
                self.unbound.callback(None)
            return None
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._port.stopListening()
        self.unbound.callback(None)
        if await finished_within(self._reactor, self._live.close_when_answered(), self.drain_timeout_s):
            return
        log.warn("{count} connections still busy after {timeout} s; dropping them",
                 count=len(self._live), timeout=self.drain_timeout_s)
        self._live.abort()
