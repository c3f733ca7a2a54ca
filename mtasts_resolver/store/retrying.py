"""Policy writes that failed (disk full, I/O error) are retried until they land.

The daemon applies a fetched policy from memory at once; the store is what
keeps it across a restart (RFC 8461 §5.1).  A write that fails is kept here,
per domain (a newer policy replaces a waiting older one), and retried with
back-off; every failed attempt logs a critical line with what is waiting, so
a full disk is seen in the log until it is fixed, and the policies are
written once space returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.store import PolicyStore, StoreError

RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0


class RetryingPolicyStore:
    """A :class:`PolicyStore` whose ``save_policy`` never fails: what did not land is retried."""

    log = Logger()

    def __init__(self, store: PolicyStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._waiting: dict[str, CachedPolicy] = {}
        self._timer: IDelayedCall | None = None
        self._retry_s = RETRY_FIRST_S

    @property
    def waiting(self) -> int:
        """Policies applied in memory and not yet on disk."""
        return len(self._waiting)

    def load_policies(self) -> Iterator[CachedPolicy]:
        return self._store.load_policies()

    def save_policy(self, policy: CachedPolicy) -> None:
        self.save_policies([policy])

    def save_policies(self, policies: Iterable[CachedPolicy]) -> None:
        batch = {policy.domain: policy for policy in policies}
        if self._waiting:   # the store is failing: this batch waits for the next retry with the others
            self._waiting.update(batch)
            return
        try:
            self._store.save_policies(batch.values())
        except StoreError as exc:
            self._waiting.update(batch)
            self._failed(exc)

    def delete_policy(self, domain: str) -> None:
        self._waiting.pop(domain, None)
        self._store.delete_policy(domain)

    def _attempt(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting = dict(self._waiting)
        try:
            self._store.save_policies(waiting.values())
        except StoreError as exc:
            self._failed(exc)
            return
        for domain, policy in waiting.items():
            if self._waiting.get(domain) is policy:
                del self._waiting[domain]
        self._retry_s = RETRY_FIRST_S
        self.log.warn("{count} policies written to the cache after earlier failures", count=len(waiting))

    def _failed(self, exc: StoreError) -> None:
        domains = sorted(self._waiting)
        shown = ", ".join(domains[:5]) + (f" and {len(domains) - 5} more" if len(domains) > 5 else "")
        self.log.critical("policy cache write failed: {error}; {count} policies NOT persisted yet ({domains}), "
                          "applied from memory; retrying in {retry_s:.0f} s", error=exc, count=len(domains),
                          domains=shown, retry_s=self._retry_s)
        if self._timer is None or not self._timer.active():
            self._timer = self._clock.callLater(self._retry_s, self._attempt)
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def close(self) -> None:
        """One last attempt for what is waiting (logged if it fails), then close the store."""
        if self._waiting:
            self._attempt()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._waiting:
            self.log.critical("stopping with {count} policies not persisted: {domains}", count=len(self._waiting),
                              domains=", ".join(sorted(self._waiting)))
        self._store.close()
