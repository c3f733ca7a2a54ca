"""A resolver process: ``python3 -m mtasts_resolver.offload.child``, started by the daemon, never by hand.

It lowers its own CPU priority by :data:`NICENESS` first: on a busy host
the kernel then gives the daemon's event loop (the cached answers Postfix
waits on) the CPU before a storm of cold resolutions.  It reads its
configuration as the first message on stdin, builds the same
:class:`~mtasts_resolver.net.network.Network` the query tool uses, says
hello, and then serves calls until stdin closes (the daemon stopped or
died: a child never outlives its daemon).  SIGTERM and SIGINT are ignored:
systemd signals the whole unit at once, and the daemon, draining the
lookups in flight, still needs its children until it closes their stdin.  Calls run concurrently; each
answer goes back as soon as it is known.  Its log lines go to the stderr it
shares with the daemon, so they reach the same journal.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger
from twisted.python.failure import Failure

from mtasts_resolver.app.logs import set_level, start_logging
from mtasts_resolver.config import Config
from mtasts_resolver.limits import LIMITS
from mtasts_resolver.net.local import LocalFailure
from mtasts_resolver.net.network import Network, build_network
from mtasts_resolver.offload.wire import HELLO, LIMIT, LOG_LEVEL, METHODS, MessageChannel

log = Logger(namespace="mtasts_resolver.resolver")

#: Added to the child's nice value (the packaged unit allows setpriority(2) for this alone).
NICENESS = 10


class ResolverChild:
    """Holds the network once configured; answers each call with its result or the error's text."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._network: Network | None = None
        self.channel = MessageChannel(self._received, self._stdin_closed)

    def _received(self, message: object) -> None:
        if self._network is None:
            self._configure(message)
            return
        call_id, method, domain = message
        if call_id == LOG_LEVEL:
            set_level(method)
            return
        if method not in METHODS:
            self.channel.send((call_id, False, (False, f"unknown method {method!r}")))
            return
        d = Deferred.fromCoroutine(self._call(method, domain))
        d.addCallbacks(lambda result: self.channel.send((call_id, True, result)),
                       lambda failure: self.channel.send((call_id, False, _error(failure))))
        # A result that cannot be sent (a bug: it does not pickle) is still an answer: the error.
        d.addErrback(lambda failure: self.channel.send((call_id, False, _error(failure))))

    async def _call(self, method: str, domain: str) -> object:
        return await getattr(self._network, method)(domain)

    def _configure(self, config: object) -> None:
        assert isinstance(config, Config), f"the first message must be the configuration, not {type(config)}"
        start_logging(config.daemon.log_level)
        try:
            os.nice(NICENESS)
        except OSError as exc:   # a sandbox without setpriority(2): cold work then competes as an equal
            log.warn("resolver process keeps its CPU priority (cannot renice: {error})", error=exc)
        LIMITS.forward_to(lambda limit, detail: self.channel.send((LIMIT, limit, detail)))
        self._network = build_network(config, self._reactor)
        self.channel.send((HELLO, True, os.getpid()))

    def _stdin_closed(self) -> None:
        try:
            self._reactor.stop()
        except ReactorNotRunning:   # stopping already
            pass


def _error(failure: Failure) -> tuple[bool, str]:
    """(local, text): a LocalFailure is our host's, anything else a bug with its traceback."""
    if failure.check(LocalFailure):
        return True, str(failure.value)
    return False, failure.getTraceback()


def main() -> int:
    from mtasts_resolver.net.reactor import install_reactor

    install_reactor()   # as in the daemon
    from twisted.internet import reactor

    for ignored in (signal.SIGTERM, signal.SIGINT):
        signal.signal(ignored, signal.SIG_IGN)
    child = ResolverChild(reactor)
    StandardIO(child.channel, reactor=reactor)
    reactor.run(installSignalHandlers=False)   # the daemon, not a signal, ends a child
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - the daemon sees the exit status and this traceback on the shared stderr
        traceback.print_exc()
        sys.exit(70)
