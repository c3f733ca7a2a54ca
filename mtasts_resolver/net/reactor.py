"""The reactor every command runs on: Twisted's asyncio reactor over an epoll that hands out bounded turns.

The asyncio reactor was chosen when dnspython's asyncio resolver shared the
loop; DNS now runs on Twisted's own sockets, and the asyncio reactor stays
because it was measured no slower than Twisted's epoll reactor and its
selector is the one place a turn can be bounded.  The selector is
asyncio's own ``EpollSelector`` with one change: each
``epoll_wait`` returns at most :data:`EVENTS_PER_TURN` ready descriptors.
The selector asks for as many as are registered, so 1,000 clients closing
their connections at once became one turn of ~1,000 ``connectionLost``
calls: 15-20 ms in which no cached lookup was answered (bench/hostile.py,
1,100 idle connections).  epoll is level-triggered here and puts what it
reported at the back of its ready list, so the rest come in the next turns,
in order, with the other clients' requests between them.
"""

from __future__ import annotations

import asyncio
import selectors

#: Ready descriptors handled per event-loop turn, at most (~1 ms of closes; a cached lookup is ~10 µs).
EVENTS_PER_TURN = 64


class _BoundedEpoll:
    """A ``select.epoll`` whose ``poll`` returns at most :data:`EVENTS_PER_TURN` events."""

    def __init__(self, epoll) -> None:
        self._epoll = epoll

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        return self._epoll.poll(timeout, EVENTS_PER_TURN if maxevents < 0 else min(maxevents, EVENTS_PER_TURN))

    def __getattr__(self, name: str):
        return getattr(self._epoll, name)   # register, modify, unregister, fileno, close


def bounded_selector() -> selectors.EpollSelector:
    """asyncio's epoll selector with bounded turns.

    ``EpollSelector`` keeps its ``select.epoll`` in ``_selector`` (CPython
    3.11 and 3.13, Debian 12 and 13); tests/unit/test_reactor.py checks that
    a turn is bounded, so a Python that moved it fails there, not silently.
    """
    selector = selectors.EpollSelector()
    selector._selector = _BoundedEpoll(selector._selector)
    return selector


def install_reactor() -> None:
    """Install the asyncio reactor on a loop with :func:`bounded_selector`."""
    from twisted.internet import asyncioreactor

    loop = asyncio.SelectorEventLoop(bounded_selector())
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
