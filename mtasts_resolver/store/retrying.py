"""Policy writes that failed (disk full, I/O error, database down) are retried until they land.

The daemon applies a fetched policy from memory at once; the store is what
keeps it across a restart (RFC 8461 §5.1).  A write that fails is kept here,
per domain (a newer policy replaces a waiting older one), and retried with
back-off; every failed attempt logs a critical line with what is waiting, so
a full disk or a database that is down is seen in the log (and in STATUS,
:attr:`RetryingPolicyStore.waiting`) until it is fixed, and the policies are
written once it is.

Every write (and, for a remote store, the one-domain reads of a lookup
that misses in memory) runs in one thread of its own, in order (a delete never overtakes the save
before it), through the store's :meth:`~mtasts_resolver.store.PolicyStore.policy_writer`,
so the reactor never waits for the database: not for PostgreSQL on the
network, and not for SQLite's commits either (each an fsync: a storm of new
domains was a storm of them on the event loop).  One batch is in flight at a
time and what arrives meanwhile goes in the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.store import PolicyStore, StoreError

RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0


class RetryingPolicyStore:
    """A :class:`PolicyStore` whose ``save_policy`` never fails nor blocks: what did not land is retried.

    ``save_policies`` returns a Deferred that fires once the first attempt
    for those policies is over, landed or not (at once while the store is
    known to be failing): the lookup service answers after it, so that what
    it answered is what a restart finds (RFC 8461 §5.1), without the event
    loop waiting for the disk or the database.
    """

    log = Logger()

    def __init__(self, store: PolicyStore, clock: IReactorTime & IReactorThreads) -> None:
        self._store = store
        self._clock = clock
        self.where = store.where
        self._waiting: dict[str, CachedPolicy] = {}
        self._in_flight: dict[str, CachedPolicy] | None = None   # the batch being written
        self._in_flight_waiters: list[Deferred[None]] = []        # told when its attempt is over
        self._next_waiters: list[Deferred[None]] = []             # for what waits for the next batch
        self._timer: IDelayedCall | None = None
        self._retry_s = RETRY_FIRST_S
        self._closed = False
        self._writer = store.policy_writer()
        # Started at the first write, not here: a daemon that fails to start must not be kept alive by it.
        self._pool: ThreadPool | None = ThreadPool(minthreads=1, maxthreads=1, name="policy-store")

    @property
    def waiting(self) -> int:
        """Policies applied in memory and not yet in the store."""
        return len(self._waiting.keys() | (self._in_flight or {}).keys())

    def load_policies(self) -> Iterator[CachedPolicy]:
        return self._store.load_policies()

    def load_policy(self, domain: str) -> Deferred[CachedPolicy | None]:
        """The store's :meth:`~mtasts_resolver.store.PolicyStore.load_policy`: a local store's (SQLite: a WAL
        read, no fsync) at once, a remote one's in the thread."""
        return self._read(self._store.load_policy, self._writer.load_policy, domain)

    def try_fetch_lock(self, domain: str) -> Deferred[bool]:
        """A remote store's in its thread, whose connection then holds it (a session lock) until released."""
        return self._read(self._store.try_fetch_lock, self._writer.try_fetch_lock, domain)

    def release_fetch_lock(self, domain: str) -> Deferred[None]:
        return self._read(self._store.release_fetch_lock, self._writer.release_fetch_lock, domain)

    def _read(self, local: Callable, remote: Callable, domain: str) -> Deferred:
        """One-domain calls of a lookup that missed: queued behind the writes in one thread, each cold miss
        waited for every other (a storm's lookups took ~70 ms each); a local store answers at once."""
        if not self._store.remote:
            return maybeDeferred(local, domain)
        return self._call(remote, domain)

    def save_policy(self, policy: CachedPolicy) -> Deferred[None]:
        return self.save_policies([policy])

    def save_policies(self, policies: Iterable[CachedPolicy]) -> Deferred[None]:
        self._waiting.update((policy.domain, policy) for policy in policies)
        if self._failing:   # known broken (and logged): waiting for the retry would only delay the answer
            return succeed(None)
        attempted: Deferred[None] = Deferred()
        self._next_waiters.append(attempted)
        if self._in_flight is None:   # else it goes with the next batch
            self._attempt()
        return attempted

    def delete_policy(self, domain: str) -> None:
        self._waiting.pop(domain, None)
        if self._in_flight is not None:   # if that write fails, it must not come back; if not, this runs after it
            self._in_flight.pop(domain, None)
        self._call(self._writer.delete_policy, domain).addErrback(self._delete_failed, domain)

    @property
    def _failing(self) -> bool:
        return self._timer is not None and self._timer.active()

    def _call(self, call: Callable, *args: object) -> Deferred:
        if self._pool is None:   # closed
            return maybeDeferred(call, *args)
        if not self._pool.started:
            self._pool.start()
        return deferToThreadPool(self._clock, self._pool, call, *args)

    def _attempt(self) -> None:
        if self._failing:
            assert self._timer is not None
            self._timer.cancel()
        self._timer = None
        batch, self._waiting = self._waiting, {}
        self._in_flight = batch
        self._in_flight_waiters, self._next_waiters = self._next_waiters, []
        self._call(self._writer.save_policies, list(batch.values())).addCallbacks(
            self._written, self._write_failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _written(self, _: None, batch: dict[str, CachedPolicy]) -> None:
        if self._closed:   # a thread's result arriving after close(), which wrote the batch itself
            return
        self._in_flight = None
        self._attempted()
        if self._retry_s != RETRY_FIRST_S:
            self._retry_s = RETRY_FIRST_S
            self.log.warn("{count} policies written to the cache after earlier failures", count=len(batch))
        if self._waiting:
            self._attempt()

    def _write_failed(self, failure: Failure, batch: dict[str, CachedPolicy]) -> None:
        failure.trap(StoreError)
        if self._closed:
            return
        self._in_flight = None
        self._attempted(including_next=True)   # what came meanwhile waits for the retry timer, not its answer
        self._waiting = {**batch, **self._waiting}   # a policy saved meanwhile is newer
        if not self._waiting:   # all of it deleted meanwhile: nothing to keep
            return
        domains = sorted(self._waiting)
        shown = ", ".join(domains[:5]) + (f" and {len(domains) - 5} more" if len(domains) > 5 else "")
        self.log.critical("policy cache write failed: {error}; {count} policies NOT persisted yet ({domains}), "
                          "applied from memory; retrying in {retry_s:.0f} s", error=failure.value, count=len(domains),
                          domains=shown, retry_s=self._retry_s)
        self._timer = self._clock.callLater(self._retry_s, self._attempt)
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def _attempted(self, including_next: bool = False) -> None:
        """The in-flight batch's attempt is over: tell those who wait for it (and, if asked, for the next)."""
        waiters, self._in_flight_waiters = self._in_flight_waiters, []
        if including_next:
            waiters, self._next_waiters = waiters + self._next_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _delete_failed(self, failure: Failure, domain: str) -> None:
        failure.trap(StoreError)
        self.log.error("{domain}: expired policy not removed from the cache: {error}", domain=domain,
                       error=failure.value)

    def close(self) -> None:
        """Wait for the write thread, one last attempt for what is waiting (logged if it fails), close the store."""
        if self._pool is not None:
            self._pool.stop()   # runs what was queued, then joins the thread
            self._pool = None
        self._closed = True
        if self._in_flight:   # its result could not come back to the stopped reactor: write it again
            self._waiting = {**self._in_flight, **self._waiting}
            self._in_flight = None
        if self._failing:
            assert self._timer is not None
            self._timer.cancel()
        if self._waiting:
            self._last_attempt()
        if self._waiting:
            self.log.critical("stopping with {count} policies not persisted: {domains}", count=len(self._waiting),
                              domains=", ".join(sorted(self._waiting)))
        self._attempted(including_next=True)
        if self._writer is not self._store:
            self._writer.close()
        self._store.close()

    def _last_attempt(self) -> None:
        """At close, on the calling thread: the reactor may not deliver a thread's result any more."""
        try:
            self._writer.save_policies(list(self._waiting.values()))
        except StoreError as exc:
            self.log.critical("policy cache write failed at stop: {error}", error=exc)
            return
        self._waiting = {}
