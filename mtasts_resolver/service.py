"""The lookup service: answers from memory, resolves in the background.

Every domain the daemon has seen has an :class:`_Entry` in memory holding
its ready-made answers, so a lookup of a known domain is one dict access.
Resolution (TXT lookup, policy fetch, persisting) runs once per domain at a
time (:class:`SingleFlight`) and only when a domain is new, expired, due for
its TXT re-check (then in the background, the cached answer still served)
or due for a proactive refresh (a periodic scan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.keys import KeyKind, parse_key
from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.answer import sts_answer
from mtasts_resolver.policy.model import CachedPolicy, NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.refresh import Plan, plan, refresh_at, settle
from mtasts_resolver.singleflight import SingleFlight
from mtasts_resolver.store import PolicyStore, StoreError
from mtasts_resolver.sts_resolver import StsResolver

INTERNAL_ERROR = Answer(AnswerKind.TEMP, "internal error, see the mtasts-resolver log")


@dataclass(slots=True)
class _Entry:
    """What is known about one domain, with its answers ready to send."""

    plain: Answer
    tlsrpt: Answer
    check_at: float       # after this, re-check the TXT id in the background
    expires_at: float     # after this, the entry must not be served
    policy: CachedPolicy | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one resolution went, step by step: for logs and ``mtasts-resolver query``."""

    domain: str
    txt: StsTxt | NoStsTxt | StsFailure
    plan: Plan
    fetched: StsPolicy | StsFailure | None   # None when no fetch was needed
    policy: CachedPolicy | None              # the policy that applies now

    @property
    def failure(self) -> StsFailure | None:
        """The discovery failure worth reporting, if any."""
        for step in (self.fetched, self.txt):
            if isinstance(step, StsFailure):
                return step
        return None


class PolicyService:
    """Implements :class:`mtasts_resolver.lookup.LookupService` for MTA-STS."""

    log = Logger()

    def __init__(self, clock: IReactorTime, resolver: StsResolver, store: PolicyStore,
                 settings: MtaStsConfig, tlsrpt_maps: Iterable[str],
                 on_resolution: Callable[[Resolution], None] | None = None) -> None:
        """``on_resolution`` sees every finished resolution (the TLS-RPT outcome feed)."""
        self._clock = clock
        self._on_resolution = on_resolution
        self._resolver = resolver
        self._store = store
        self._settings = settings
        self._tlsrpt_maps = frozenset(tlsrpt_maps)
        self._entries: dict[str, _Entry] = {}
        self._flight: SingleFlight[Resolution] = SingleFlight()
        self._refresh_limit = DeferredSemaphore(settings.refresh_concurrency)

    # -- start-up -----------------------------------------------------------

    def load(self) -> int:
        """Fill memory from the persistent cache; returns how many policies are usable."""
        now = self._clock.seconds()
        loaded = 0
        for cached in self._store.load_policies():
            if cached.usable(now):
                # Check the TXT id at the first lookup: it may have changed while we were down.
                self._entries[cached.domain] = self._entry(cached.domain, cached, now, check_at=now)
                loaded += 1
            else:
                self._store.delete_policy(cached.domain)
        return loaded

    @property
    def domains_cached(self) -> int:
        return len(self._entries)

    def cached_policy(self, domain: str) -> CachedPolicy | None:
        entry = self._entries.get(domain)
        return entry.policy if entry is not None else None

    # -- the hot path -------------------------------------------------------

    def lookup(self, map_name: str, key: str) -> Answer | Deferred[Answer]:
        entry = self._entries.get(key)  # Postfix sends keys already folded: try them as they are
        domain = key
        if entry is None:
            parsed = parse_key(key)
            if parsed.kind is not KeyKind.DOMAIN:
                return NOT_FOUND
            domain = parsed.domain
            entry = self._entries.get(domain)
        tlsrpt = map_name in self._tlsrpt_maps
        if entry is not None:
            now = self._clock.seconds()
            if now < entry.expires_at:
                if now >= entry.check_at and domain not in self._flight:
                    self._in_background(domain)
                return entry.tlsrpt if tlsrpt else entry.plain
        d = self.resolve(domain)
        d.addCallback(self._answer_for, domain, tlsrpt)
        d.addErrback(self._internal_error, domain)
        return d

    def _answer_for(self, _: Resolution, domain: str, tlsrpt: bool) -> Answer:
        entry = self._entries[domain]
        return entry.tlsrpt if tlsrpt else entry.plain

    def _internal_error(self, failure: Failure, domain: str) -> Answer:
        self.log.failure("resolving {domain} failed unexpectedly", failure, domain=domain)
        return INTERNAL_ERROR

    # -- resolution ---------------------------------------------------------

    def resolve(self, domain: str) -> Deferred[Resolution]:
        """Resolve ``domain`` now (joining a resolution already running) and update memory and store."""
        return self._flight.run(domain, lambda: Deferred.fromCoroutine(self._resolve(domain)))

    async def _resolve(self, domain: str) -> Resolution:
        current = self._entries.get(domain)
        cached = current.policy if current is not None else None
        txt = await self._resolver.discover(domain)
        now = self._clock.seconds()
        step = plan(cached, txt, now, self._settings.refresh_before_s)
        fetched: StsPolicy | StsFailure | None = None
        if step is Plan.FETCH:
            assert isinstance(txt, StsTxt)
            fetched = await self._resolver.fetch(domain)
            now = self._clock.seconds()
            policy = settle(domain, cached, txt, fetched, now)
        elif step is Plan.KEEP:
            policy = cached
        else:
            policy = None
        result = Resolution(domain, txt, step, fetched, policy)
        self._record(result, cached, now)
        return result

    def _record(self, result: Resolution, previous: CachedPolicy | None, now: float) -> None:
        """Make a resolution's outcome the current answer, persist it, and log what matters."""
        domain, policy, failure = result.domain, result.policy, result.failure
        if policy is not None and policy is not previous:
            self.log.info("{domain}: {mode} policy id {txt_id} (max_age {max_age} s)", domain=domain,
                          mode=policy.policy.mode.value, txt_id=policy.txt_id, max_age=policy.policy.max_age)
            self._persist(policy)
        elif policy is None and previous is not None:
            self._forget(domain)
        if failure is not None:
            if policy is not None:
                self.log.warn("{domain}: {failure}; still applying the cached policy", domain=domain, failure=failure)
            else:
                self.log.warn("{domain}: {failure}; delivering as if no MTA-STS policy (RFC 8461 §5.1)",
                              domain=domain, failure=failure)
        hold = self._settings.failure_ttl_s if failure is not None else self._settings.negative_ttl_s
        self._entries[domain] = self._entry(domain, policy, now, hold_s=hold)
        if self._on_resolution is not None:
            self._on_resolution(result)

    def _entry(self, domain: str, policy: CachedPolicy | None, now: float, *,
               check_at: float | None = None, hold_s: float = 0.0) -> _Entry:
        if policy is None:
            return _Entry(NOT_FOUND, NOT_FOUND, now + hold_s, now + hold_s, None)
        if check_at is None:
            check_at = min(now + self._settings.txt_recheck_s, refresh_at(policy, self._settings.refresh_before_s))
        return _Entry(sts_answer(domain, policy.policy, tlsrpt=False), sts_answer(domain, policy.policy, tlsrpt=True),
                      check_at, policy.expires_at, policy)

    def _persist(self, policy: CachedPolicy) -> None:
        try:
            self._store.save_policy(policy)
        except StoreError as exc:
            # The policy is applied from memory all the same; losing it at the
            # next restart is what the loud error is about.
            self.log.error("{domain}: policy NOT persisted: {error}", domain=policy.domain, error=exc)

    def _forget(self, domain: str) -> None:
        try:
            self._store.delete_policy(domain)
        except StoreError as exc:
            self.log.error("{domain}: expired policy not removed from the cache: {error}", domain=domain, error=exc)

    # -- background work ----------------------------------------------------

    def _in_background(self, domain: str) -> Deferred[Resolution]:
        d = self.resolve(domain)
        d.addErrback(lambda failure: self.log.failure("background refresh of {domain} failed", failure,
                                                       domain=domain))
        return d

    def refresh_due(self) -> Deferred[None]:
        """Proactively refresh policies nearing expiry and drop expired entries (called periodically)."""
        now = self._clock.seconds()
        due: list[str] = []
        for domain, entry in list(self._entries.items()):
            if now >= entry.expires_at:
                del self._entries[domain]
                if entry.policy is not None:
                    self._forget(domain)
            elif entry.policy is not None and now >= refresh_at(entry.policy, self._settings.refresh_before_s):
                due.append(domain)
        work = [self._refresh_limit.run(self._in_background, domain) for domain in due
                if domain not in self._flight]
        return gatherResults(work).addCallback(lambda _: None)
