"""One in-flight operation per key, shared by every caller that asks meanwhile.

Each caller gets its own Deferred observing the shared one, so a caller
that cancels (or whose client hangs up) stops no one else; the result is
not kept once the operation finishes, and failures are never cached
(the same shape as synapse's ResponseCache).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._pending: dict[Hashable, list[Deferred[T]]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._pending

    def run(self, key: Hashable, operation: Callable[[], Deferred[T]]) -> Deferred[T]:
        """A Deferred for ``operation()``'s result, starting it only if none is running for ``key``."""
        observer: Deferred[T] = Deferred()
        waiters = self._pending.get(key)
        if waiters is not None:
            waiters.append(observer)
            return observer
        self._pending[key] = [observer]
        operation().addBoth(self._finish, key)
        return observer

    def _finish(self, result: T | Failure, key: Hashable) -> None:
        for observer in self._pending.pop(key):
            if not observer.called:  # a cancelled observer has already fired
                if isinstance(result, Failure):
                    observer.errback(result)
                else:
                    observer.callback(result)
        if isinstance(result, Failure):
            result.trap(Exception)  # delivered to the observers above; do not log it twice
