"""The outcome spool: counts outcomes in memory, commits them in batches off the reactor thread.

Feeds call :meth:`OutcomeSpool.add` on the reactor thread; it only adds to
in-memory counters, so the hot path (a policy resolution) and the datagram
collector never wait for the disk.  Every ``flush_interval_s`` the counters
(and the feeds' read positions) go to the store in one transaction on a
single writer thread; ``synchronous=FULL`` makes the batch durable when the
commit returns, which is when the spool logs it as spooled.

So the loss window on ``kill -9`` is what was added since the last commit:
at most ``flush_interval_s`` plus one commit.  The interval counts from the
moment the oldest uncommitted outcome was added, whatever comes after it: a
steady stream never postpones a commit, and outcomes added while a commit
is in flight go in the next one as soon as it returns if they have waited
that long already.  :meth:`OutcomeSpool.when_committed` tells a feed when
what it added is on disk (the Exim event socket answers ``OK`` only then).  A failed commit (disk full, a
locked or broken database) is logged as critical with the number of sessions
at stake; the batch goes back into memory and is retried, with back-off,
until it is written or the daemon stops.  Nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mtasts_resolver.store import OutcomeRow, OutcomeWriter, StoreError
from mtasts_resolver.tlsrpt.model import CountKind, Outcome

RETRY_MAX_S = 60.0  # back-off cap between attempts to commit after a store error


class OutcomeSpool:
    log = Logger()

    def __init__(self, reactor: IReactorTime & IReactorThreads, writer: OutcomeWriter,
                 flush_interval_s: float) -> None:
        self._reactor = reactor
        self._writer = writer
        self._flush_interval_s = flush_interval_s
        self._pending: Counter[tuple[str, str, str, str, str]] = Counter()
        self._cursors: dict[str, str] = {}
        self._policies: dict[str, tuple[str, float]] = {}   # domain -> (policy JSON in force, when)
        self._in_flight_policies: dict[str, tuple[str, float]] = {}   # those of the batch being committed
        self._timer: IDelayedCall | None = None
        self._in_flight: Deferred[None] | None = None
        self._pending_since: float | None = None   # when the oldest uncommitted outcome was added
        self._waiters: list[Deferred[None]] = []            # for what is pending
        self._in_flight_waiters: list[Deferred[None]] = []  # for the batch being committed
        self._retry_s = flush_interval_s
        self.spooled_sessions = 0  # committed since start
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="tlsrpt-spool")
        self._pool.start()

    @property
    def pending_sessions(self) -> int:
        return _sessions(self._pending)

    def add(self, outcomes: Iterable[Outcome], cursor: tuple[str, str] | None = None,
            policies: Iterable[tuple[str, str]] = ()) -> None:
        """Count ``outcomes``; ``cursor`` (feed, position) and ``policies`` ((domain, the policy JSON in force
        now), ...) are committed with them."""
        for domain, policy in policies:
            self._policies[domain] = (policy, self._reactor.seconds())
        self.add_keys([key for outcome in outcomes for key in outcome.keys()], cursor)

    def add_keys(self, keys: Iterable[tuple[str, str, str, str, str]], cursor: tuple[str, str] | None = None) -> None:
        """Count outcomes already turned into counter keys (:meth:`Outcome.keys`): the collector's fast path."""
        self._pending.update(keys)
        if cursor is not None:
            self._cursors[cursor[0]] = cursor[1]
        if self._pending_since is None and (self._pending or self._cursors or self._policies):
            self._pending_since = self._reactor.seconds()
        self._schedule()

    def uncommitted_policy(self, domain: str) -> str | None:
        """The policy in force added for ``domain`` and not committed yet: this process's feeds see it at once."""
        found = self._policies.get(domain) or self._in_flight_policies.get(domain)
        return found[0] if found is not None else None

    def when_committed(self) -> Deferred[None]:
        """Fires once everything added so far is committed; fails if the spool stops without committing it."""
        d: Deferred[None] = Deferred()
        if self._pending or self._cursors or self._policies:
            self._waiters.append(d)
        elif self._in_flight is not None:
            self._in_flight_waiters.append(d)
        else:
            d.callback(None)
        return d

    def _schedule(self) -> None:
        if self._pending_since is None or self._timer is not None or self._in_flight is not None:
            return
        delay = max(0.0, self._pending_since + self._flush_interval_s - self._reactor.seconds())
        self._timer = self._reactor.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._in_flight is not None or not (self._pending or self._cursors or self._policies):
            return
        batch, cursors, since = self._pending, self._cursors, self._pending_since or self._reactor.seconds()
        policies = self._in_flight_policies = self._policies
        self._pending, self._cursors, self._policies, self._pending_since = Counter(), {}, {}, None
        self._in_flight_waiters, self._waiters = self._waiters, []
        rows: list[OutcomeRow] = [(*key, count) for key, count in batch.items()]
        d = deferToThreadPool(self._reactor, self._pool, self._writer.add, rows, cursors, policies)
        self._in_flight = d
        d.addCallbacks(self._committed, self._failed, callbackArgs=(batch,),
                       errbackArgs=(batch, cursors, since, policies))

    def _committed(self, _: None, batch: Counter) -> None:
        self._in_flight, self._in_flight_policies = None, {}
        waiters, self._in_flight_waiters = self._in_flight_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._retry_s = self._flush_interval_s
        sessions = _sessions(batch)
        self.spooled_sessions += sessions
        if sessions:
            self.log.debug("spooled {sessions} TLS-RPT sessions in {rows} counters ({total} since start)",
                           sessions=sessions, rows=len(batch), total=self.spooled_sessions)
        self._schedule()

    def _failed(self, failure: Failure, batch: Counter, cursors: dict[str, str], since: float,
                policies: dict[str, tuple[str, float]]) -> None:
        self._in_flight, self._in_flight_policies = None, {}
        batch.update(self._pending)
        self._pending = batch
        self._cursors = {**cursors, **self._cursors}
        self._policies = {**policies, **self._policies}
        self._pending_since = since if self._pending_since is None else min(since, self._pending_since)
        self._waiters = self._in_flight_waiters + self._waiters
        self._in_flight_waiters = []
        self.log.critical("TLS-RPT outcomes NOT spooled: {error}; {sessions} sessions kept in memory, "
                          "retrying in {retry_s:.0f} s", error=failure.getErrorMessage(),
                          sessions=self.pending_sessions, retry_s=self._retry_s)
        self._timer = self._reactor.callLater(self._retry_s, self._flush)
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def stop(self) -> Deferred[None]:
        """Commit what is pending (one last try), then stop the writer thread."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d = self._in_flight if self._in_flight is not None else succeed(None)

        def last(_: object) -> Deferred[None] | None:
            if self._pending or self._cursors or self._policies:
                self._flush()
                return self._in_flight
            return None

        d.addBoth(last)
        d.addBoth(self._shutdown)
        return d

    def _shutdown(self, result: object) -> object:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()  # a failed last commit scheduled a retry that will not come
            self.log.critical("stopping with {sessions} TLS-RPT sessions not spooled", sessions=self.pending_sessions)
        waiters, self._waiters, self._in_flight_waiters = self._waiters + self._in_flight_waiters, [], []
        for waiter in waiters:
            waiter.errback(StoreError(f"stopped with {self.pending_sessions} TLS-RPT sessions not spooled"))
        self._pool.stop()
        self._writer.close()
        return None if isinstance(result, Failure) else result


def _sessions(counters: Counter[tuple[str, str, str, str, str]]) -> int:
    """Sessions in a batch: the summary counters (details count failures within them)."""
    return sum(count for key, count in counters.items() if key[3] != CountKind.DETAIL.value)
