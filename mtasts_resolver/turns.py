"""Costly steps taken a few per event-loop turn, the rest in the turns after, in order.

A cold resolution costs the event loop ~50-80 µs to begin (the key, the
single flight, the store read, the call to a resolver process) and as much
to finish (the log line, the answers, the next request held on each
connection), against ~3 µs for a cached answer.  Begun all at once, what one read brings can be
costly: eight clients pipelining 50 new names each made one turn of 128
resolutions, 11 ms in which no cached lookup was answered
(bench/hostile.py, 400 cold names on 8 connections); so can the answers of
one batch of store writes, each releasing the next request held on its
connection.  With a fixed budget per turn the rest wait a turn or a few
(a fraction of a millisecond each) and cached lookups are answered between
them.  Work is queued, never refused: what bounds how much may wait is
``mta_sts.max_concurrent_resolutions``, counted before the queue.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Resolutions begun or finished per event-loop turn, at most (~0.5 ms of the loop).
RESOLUTIONS_PER_TURN = 8


class TurnBudget:
    """At most ``per_turn`` :meth:`turn` calls go on per reactor turn; the rest wait, first in, first out."""

    def __init__(self, clock: IReactorTime, per_turn: int = RESOLUTIONS_PER_TURN) -> None:
        self._clock = clock
        self._per_turn = per_turn
        self._left = per_turn
        self._waiting: deque[Deferred[None]] = deque()
        self._next: IDelayedCall | None = None

    def __len__(self) -> int:
        """Callers waiting for a later turn."""
        return len(self._waiting)

    def turn(self) -> Deferred[None]:
        """Fired now (already called) if this turn's budget allows and nothing waits, else in a later turn."""
        if self._left > 0 and not self._waiting:
            self._spend()
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        self._schedule()
        return waiting

    def _spend(self) -> None:
        self._left -= 1
        self._schedule()

    def _schedule(self) -> None:
        """The budget is given back at the next turn (``callLater(0)`` runs there, not in this one)."""
        if self._next is None:
            self._next = self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._next = None
        self._left = self._per_turn
        while self._waiting and self._left > 0:
            self._spend()
            self._waiting.popleft().callback(None)
