"""The policies in force of a remote store (PostgreSQL), mirrored in memory for the feeds.

The feeds ask "which policy applied to this domain" for every session they
count, on the reactor thread, synchronously.  A local store (SQLite) answers
in microseconds; a network database would make each of those a round trip,
and one that is down would hold the event loop for a connect timeout.  So
for a remote store the feeds read this mirror instead, which a thread
refreshes every :data:`REFRESH_S` with the rows changed since the last
refresh (``updated_at`` from :data:`OVERLAP_S` before it: the daemons'
clocks differ a little, and a row committed late with an earlier time is
read again rather than missed).  The feeds wait that much longer before
they count a line (``extra_settle_s``), so a policy another member of the
fleet committed just before is in the mirror by then.  A refresh that fails
keeps what the mirror has and tries again at the next tick.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mtasts_resolver.store import StoreError

REFRESH_S = 1.0
OVERLAP_S = 60.0

log = Logger()

#: Runs a blocking call off the reactor thread: ``threads.deferToThread`` in the daemon.
InThread = Callable[..., Deferred]


class PolicyMirror:
    """``get(domain)``: the policy JSON in force, as of the last refresh; :attr:`service` refreshes it."""

    extra_settle_s = REFRESH_S

    def __init__(self, clock, changed_since: Callable[[float], list[tuple[str, str, float]]],
                 in_thread: InThread) -> None:
        self._changed_since = changed_since
        self._in_thread = in_thread
        self._policies: dict[str, str] = {}
        self._newest = float("-inf")
        self._busy = False
        self.service = TimerService(REFRESH_S, self.refresh)
        self.service.clock = clock

    def get(self, domain: str) -> str | None:
        return self._policies.get(domain)

    def refresh(self) -> Deferred[None] | None:
        if self._busy:   # the last one is still out: the database is slow
            return None
        self._busy = True
        d = self._in_thread(self._changed_since, self._newest - OVERLAP_S)
        d.addCallbacks(self._got, self._failed)
        d.addBoth(self._done)
        return d

    def _got(self, rows: list[tuple[str, str, float]]) -> None:
        for domain, policy, updated_at in rows:
            self._policies[domain] = policy
            self._newest = max(self._newest, updated_at)

    def _failed(self, failure) -> None:
        failure.trap(StoreError)
        log.warn("policies in force not refreshed from the store ({error}); the feeds use what they have",
                 error=failure.value)

    def _done(self, result: object) -> object:
        self._busy = False
        return result   # a bug (anything but StoreError) goes on to the TimerService, which logs it
