"""The daemon's side of its resolver processes: start them, route calls, restart one that dies.

Each call goes to the child chosen by a hash of its domain, so one domain's
calls meet in one child.  A call that the children cannot answer fails with
:class:`~mtasts_resolver.net.local.LocalFailure` (the lookup is answered
TEMP and nothing is cached): when its child dies (all its calls fail at
once, and the child is started again after :data:`RESTART_DELAY_S`), when
no child is running, or when no answer comes within the call deadline
(the longest of the configured DNS, HTTP and DANE timeouts, plus
:data:`DEADLINE_SLACK_S`: a child past it is stuck, not slow, and is killed
and started again).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import mtasts_resolver
from mtasts_resolver.config import Config
from mtasts_resolver.limits import LIMITS
from mtasts_resolver.net.local import LocalFailure
from mtasts_resolver.offload.wire import HELLO, LIMIT, LOG_LEVEL, MessageChannel
from mtasts_resolver.policy.dane import DaneResult
from mtasts_resolver.policy.model import NoStsTxt, StsFailure, StsPolicy, StsTxt

RESTART_DELAY_S = 1.0
DEADLINE_SLACK_S = 5.0
STOP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 60.0
CHILD_MODULE = "mtasts_resolver.offload.child"

log = Logger(namespace="mtasts_resolver.resolver")


class RemoteError(Exception):
    """A resolver process raised: a bug, with the child's traceback as its text."""


class ResolverProcesses(Service):
    """``daemon.resolver_processes`` children serving :class:`~mtasts_resolver.net.network.Network` calls."""

    def __init__(self, reactor, config: Config, count: int) -> None:
        self._reactor = reactor
        self._config = config
        self._deadline_s = max(config.dns.timeout_s, config.mta_sts.http_timeout_s,
                               config.dane.timeout_s) + DEADLINE_SLACK_S
        self._children: list[_Child | None] = [None] * count
        self._stopping = False
        self._listeners: list[Callable[[], None]] = []

    # -- what the lookup service calls: the Network interface --------------------

    def discover(self, domain: str) -> Deferred[StsTxt | NoStsTxt | StsFailure]:
        return self._call("discover", domain)

    def fetch(self, domain: str) -> Deferred[StsPolicy | StsFailure]:
        return self._call("fetch", domain)

    def dane(self, domain: str) -> Deferred[DaneResult]:
        return self._call("dane", domain)

    def _call(self, method: str, domain: str) -> Deferred:
        index = zlib.crc32(domain.encode("utf-8", "surrogateescape")) % len(self._children)
        child = self._children[index]
        if child is None:
            return fail(LocalFailure(f"resolver process {index} is not running (restarting)"))
        return child.call(method, domain, self._deadline_s)

    # -- life ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for index in range(len(self._children)):
            self._start(index)

    def started(self) -> Deferred[None]:
        """Fires once every child has said hello; fails if one exits first or none says it in time."""
        waits = [child.when_hello() for child in self._children if child is not None]
        d = gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)
        d.addErrback(lambda failure: failure.value.subFailure if failure.check(FirstError) else failure)
        return d.addTimeout(START_TIMEOUT_S, self._reactor)

    def set_log_level(self, level: str) -> None:
        """A reload changed ``daemon.log_level``: the children log at the new level too."""
        self._config = dataclasses.replace(self._config, daemon=dataclasses.replace(self._config.daemon,
                                                                                   log_level=level))
        for child in self._children:
            if child is not None:
                child.send((LOG_LEVEL, level, None))

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever a child goes down or comes back (:attr:`down` changed)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    @property
    def down(self) -> list[int]:
        """The children not running now (died, waiting to be started again): for STATUS."""
        return [index for index, child in enumerate(self._children) if child is None]

    def _start(self, index: int) -> None:
        child = _Child(self, index, self._config)
        env = dict(os.environ)
        # The child runs the daemon's own copy of the package, wherever the daemon was started from.
        package_root = str(Path(mtasts_resolver.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._reactor.spawnProcess(child, sys.executable, [sys.executable, "-m", CHILD_MODULE], env=env,
                                   childFDs={0: "w", 1: "r", 2: 2})
        self._children[index] = child

    def _ended(self, child: _Child, reason: Failure) -> None:
        if self._children[child.index] is child:
            self._children[child.index] = None
        if self._stopping:
            return
        log.critical("resolver process {index} (pid {pid}) ended: {why}; new domains are answered TEMP until it "
                     "is back in {delay:g} s", index=child.index, pid=child.pid, why=reason.getErrorMessage(),
                     delay=RESTART_DELAY_S)
        self._changed()
        self._reactor.callLater(RESTART_DELAY_S, self._restart, child.index)

    def _restart(self, index: int) -> None:
        if not self._stopping and self._children[index] is None:
            self._start(index)
            log.info("resolver process {index} started again", index=index)
            self._changed()

    def stopService(self) -> Deferred[None]:
        """Close each child's stdin (it exits when it sees the end); kill those still there after STOP_TIMEOUT_S."""
        super().stopService()
        self._stopping = True
        children = [child for child in self._children if child is not None]
        for child in children:
            child.transport.closeStdin()
        timer = self._reactor.callLater(STOP_TIMEOUT_S, lambda: [child.kill() for child in children])
        d = gatherResults([child.ended for child in children], consumeErrors=True)
        return d.addBoth(lambda _: timer.active() and timer.cancel())


class _Child(ProcessProtocol):
    """One resolver process: its channel and the calls it has not answered yet."""

    def __init__(self, owner: ResolverProcesses, index: int, config: Config) -> None:
        self.index = index
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()
        self._said_hello = False
        self._hello_waiters: list[Deferred[None]] = []
        self._owner = owner
        self._config = config
        self._reactor = owner._reactor
        self._pending: dict[int, tuple[Deferred, object]] = {}
        self._next_id = 1
        self._channel = MessageChannel(self._received, lambda: None, owner._reactor)

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self._channel.makeConnection(self.transport)
        self._channel.send(self._config)

    def outReceived(self, data: bytes) -> None:
        self._channel.dataReceived(data)

    def when_hello(self) -> Deferred[None]:
        """Fires once the child is configured and serving; fails if it ends first."""
        if self._said_hello:
            return succeed(None)
        if self.ended.called:
            return fail(LocalFailure(f"resolver process {self.index} ended at start-up"))
        d: Deferred[None] = Deferred()
        self._hello_waiters.append(d)
        return d

    def send(self, message: object) -> None:
        self._channel.send(message)

    def call(self, method: str, domain: str, deadline_s: float) -> Deferred:
        call_id, self._next_id = self._next_id, self._next_id + 1
        d: Deferred = Deferred()
        timer = self._reactor.callLater(deadline_s, self._overdue, call_id, method, domain, deadline_s)
        self._pending[call_id] = (d, timer)
        self._channel.send((call_id, method, domain))
        return d

    def _received(self, message: object) -> None:
        call_id, ok, value = message
        if call_id == LIMIT:
            LIMITS.hit(ok, value)   # (LIMIT, limit, detail)
            return
        if call_id == HELLO:
            self._said_hello = True
            waiters, self._hello_waiters = self._hello_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        d, timer = self._pending.pop(call_id, (None, None))
        if d is None:   # answered after its deadline: already failed
            return
        timer.cancel()
        if ok:
            d.callback(value)
        else:
            local, text = value
            d.errback(LocalFailure(text) if local else RemoteError(text))

    def _overdue(self, call_id: int, method: str, domain: str, deadline_s: float) -> None:
        """Every call has its own deadline inside the child: past this one the child is stuck. Replace it."""
        d, _ = self._pending.pop(call_id)
        d.errback(LocalFailure(f"resolver process {self.index} gave no {method} result for {domain} "
                               f"within {deadline_s:g} s"))
        log.critical("resolver process {index} (pid {pid}) is stuck: no {method} result for {domain} within "
                     "{deadline:g} s; killing it", index=self.index, pid=self.pid, method=method, domain=domain,
                     deadline=deadline_s)
        self.kill()

    def kill(self) -> None:
        if self.pid is not None and not self.ended.called:
            self.transport.signalProcess(signal.SIGKILL)

    def processEnded(self, reason: Failure) -> None:
        pending, self._pending = self._pending, {}
        for d, timer in pending.values():
            timer.cancel()
            d.errback(LocalFailure(f"resolver process {self.index} ended before answering"))
        waiters, self._hello_waiters = self._hello_waiters, []
        for waiter in waiters:
            waiter.errback(LocalFailure(f"resolver process {self.index} ended at start-up "
                                        f"({reason.getErrorMessage()}): see the lines above"))
        self._owner._ended(self, reason)
        self.ended.callback(None)
