"""The lookup service: answers from memory, resolves in the background.

Every domain the daemon has seen has an :class:`_Entry` in memory holding
its policy decision and the answers rendered from it (each client dialect's
at its first use), so a lookup of a known domain is one dict access.
Resolution runs once per domain at a time (:class:`SingleFlight`): DANE
discovery and MTA-STS discovery (TXT lookup, policy fetch, persisting) run
concurrently and :func:`~mtasts_resolver.policy.decide.decide` turns both
into one decision.  A domain is resolved when it is new, when its answer
expired (for DANE: the records' TTL, clamped), in the background when a
re-check is due (MTA-STS TXT re-check, DANE refresh at 3/4 of its TTL; the
cached answer is still served meanwhile), or by the periodic proactive
MTA-STS refresh.

What strangers can drive is bounded here: cold resolutions running at once
(``mta_sts.max_concurrent_resolutions``: past it a new domain is answered
TEMP, never cached, so the limit is no downgrade; so is a resolution that
failed with :class:`~mtasts_resolver.net.local.LocalFailure`) and the domains
remembered without an MTA-STS policy (``mta_sts.max_negative_entries``,
least recently used forgotten first; policies are kept, RFC 8461 §5.1).
Resolutions begin and finish at most
:data:`~mtasts_resolver.turns.RESOLUTIONS_PER_TURN` per event-loop turn
(:class:`~mtasts_resolver.turns.TurnBudget`), so a flood of new names cannot
hold the loop that answers cached ones.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    FirstError,
    ensureDeferred,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from mtasts_resolver.config import DaneConfig, MtaStsConfig
from mtasts_resolver.limits import LIMITS, LimitLog
from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.net.dane_resolver import DaneResolver
from mtasts_resolver.net.local import LocalFailure
from mtasts_resolver.policy.answer import Dialect, dropped_lines, render
from mtasts_resolver.policy.dane import DaneOutcome, DaneResult
from mtasts_resolver.policy.decide import NO_POLICY, Decision, Verdict, decide
from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.policy.lifetime import (
    DaneTimes,
    Hold,
    after_probe_flip,
    dane_lifetime,
)
from mtasts_resolver.policy.model import (
    CachedPolicy,
    NoStsTxt,
    StsFailure,
    StsPolicy,
    StsTxt,
)
from mtasts_resolver.policy.refresh import Plan, plan, refresh_at, settle
from mtasts_resolver.singleflight import SingleFlight
from mtasts_resolver.store import PolicyStore, StoreError
from mtasts_resolver.turns import TurnBudget

INTERNAL_ERROR = Answer(AnswerKind.TEMP, "internal error, see the mtasts-resolver log")
#: Our own cap on cold resolutions was hit: defer, never NOTFOUND (a limit must not be a downgrade).
BUSY = Answer(AnswerKind.TEMP, "too many policy lookups in progress, try again")
RESOLUTIONS_LIMIT = "mta_sts.max_concurrent_resolutions"
#: This host, not the domain, stopped the resolution (file descriptors, memory, a resolver process gone).
LOCAL_TROUBLE = Answer(AnswerKind.TEMP, "local resources exhausted, try again (see the mtasts-resolver log)")
LOCAL_LIMIT = "local resources"
#: Waiting for another member of the fleet to fetch a domain: first pause, longest pause, and how much longer
#: than one fetch (mta_sts.http_timeout_s) to wait before fetching anyway.
FETCH_LOCK_POLL_FIRST_S = 0.05
FETCH_LOCK_POLL_MAX_S = 1.0
FETCH_LOCK_SLACK_S = 5.0


class StsNetwork(Protocol):
    """MTA-STS's network steps: :class:`~mtasts_resolver.net.network.Network` here or in resolver processes."""

    def discover(self, domain: str) -> Awaitable[StsTxt | NoStsTxt | StsFailure]:
        ...

    def fetch(self, domain: str) -> Awaitable[StsPolicy | StsFailure]:
        ...


@dataclass(slots=True)
class _Entry:
    """What is known about one domain: its decision, with the answers rendered from it."""

    verdict: Verdict
    check_at: float       # after this, re-resolve in the background (answer still served)
    expires_at: float     # after this, the answers must not be served
    policy: CachedPolicy | None          # MTA-STS: usable until its own max_age
    dane: DaneResult | None = None       # None: DANE not configured, or not resolved since start-up
    dane_expires_at: float = math.inf
    # Rendered at first use: most sites never ask for the TLSRPT dialect, and
    # it is the largest object of an entry (it repeats the whole policy):
    # with 100,000 cached policies, making it up front cost 40 MB.
    plain: Answer | None = None
    tlsrpt: Answer | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one resolution went, step by step: for logs and ``mtasts-resolver query``."""

    domain: str
    txt: StsTxt | NoStsTxt | StsFailure
    plan: Plan
    fetched: StsPolicy | StsFailure | None   # None when no fetch was needed
    policy: CachedPolicy | None              # the MTA-STS policy cached now
    dane: DaneResult | None = None           # None when DANE is not configured

    @property
    def dane_applies(self) -> bool:
        """DANE decides the answer (RFC 8461 §2): MTA-STS is then not applied."""
        return self.dane is not None and self.dane.applies

    @property
    def failure(self) -> StsFailure | None:
        """The discovery failure worth reporting, if any."""
        for step in (self.fetched, self.txt):
            if isinstance(step, StsFailure):
                return step
        return None


class PolicyService:
    """Implements :class:`mtasts_resolver.lookup.LookupService` for DANE and MTA-STS."""

    log = Logger()

    def __init__(self, clock: IReactorTime, resolver: StsNetwork, store: PolicyStore,
                 settings: MtaStsConfig, tlsrpt_maps: Iterable[str],
                 on_resolution: Callable[[Resolution], None] | None = None, *,
                 dane: DaneResolver | None = None, dane_settings: DaneConfig | None = None,
                 limits: LimitLog = LIMITS) -> None:
        """``on_resolution`` sees every finished resolution (the TLS-RPT outcome feed).

        ``dane`` None means MTA-STS only (``dane.enabled = false``).
        """
        self._clock = clock
        self._dane = dane
        dane_settings = dane_settings or DaneConfig()
        self._dane_times = DaneTimes(dane_settings.min_ttl_s, dane_settings.max_ttl_s, dane_settings.failure_ttl_s)
        if dane is not None and dane.probe is not None:
            dane.probe.subscribe(self._validation_changed)
        self._on_resolution = on_resolution
        self._resolver = resolver
        self._store = store
        self._settings = settings
        self._limits = limits
        self._tlsrpt_maps = frozenset(tlsrpt_maps)
        self._entries: dict[str, _Entry] = {}
        # Domains held without an MTA-STS policy, least recently used first.
        self._negative: OrderedDict[str, None] = OrderedDict()
        self._flight: SingleFlight[Resolution] = SingleFlight()
        self._running = 0   # resolutions in flight (distinct domains), begun or waiting for their turn
        self._turns = TurnBudget(clock)
        self._refresh_limit = DeferredSemaphore(settings.refresh_concurrency)

    # -- start-up -----------------------------------------------------------

    def load(self) -> int:
        """Fill memory from the persistent cache; returns how many policies are usable."""
        now = self._clock.seconds()
        loaded = 0
        expired: list[str] = []  # deleted after the read: not while its cursor is open
        for cached in self._store.load_policies():
            if cached.usable(now):
                # Check the TXT id at the first lookup: it may have changed while we were down.
                entry = self._entry(cached, now, check_at=now)
                entry.verdict = decide(None, cached.domain, cached.policy)   # until DANE is known
                if self._dane is not None:
                    # DANE is not persisted and would win over this policy: resolve it before answering.
                    entry.expires_at = now
                self._entries[cached.domain] = entry
                loaded += 1
            else:
                expired.append(cached.domain)
        for domain in expired:
            self._store.delete_policy(domain)
        return loaded

    # -- what the query tool, the status line and the feeds read -------------

    @property
    def domains_cached(self) -> int:
        return len(self._entries)

    def cached_policy(self, domain: str) -> CachedPolicy | None:
        entry = self._entries.get(domain)
        return entry.policy if entry is not None else None

    def answer_now(self, map_name: str, domain: str) -> Answer:
        """The answer held for ``domain`` (after :meth:`resolve`), whatever its age: for the query tool."""
        entry = self._entries.get(domain)
        if entry is None:
            return NOT_FOUND
        return self._answer(domain, entry, map_name in self._tlsrpt_maps)

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
                if entry.policy is None:
                    self._negative.move_to_end(domain)
                if now >= entry.check_at and domain not in self._flight:
                    self._in_background(domain)
                return self._answer(domain, entry, tlsrpt)
        if domain not in self._flight and self._running >= self._settings.max_concurrent_resolutions:
            self._limits.hit(RESOLUTIONS_LIMIT, f"{domain} answered TEMP")
            return BUSY
        d = self.resolve(domain)
        d.addCallback(self._answer_for, domain, tlsrpt)
        d.addErrback(self._internal_error, domain)
        return d

    def _answer(self, domain: str, entry: _Entry, tlsrpt: bool) -> Answer:
        """The entry's answer in the client's dialect, rendered at its first use."""
        if not tlsrpt:
            if entry.plain is None:
                entry.plain = render(entry.verdict, Dialect.POSTFIX)
            return entry.plain
        if entry.tlsrpt is None:
            entry.tlsrpt = render(entry.verdict, Dialect.POSTFIX_TLSRPT)
            verdict = entry.verdict
            if isinstance(verdict, Decision) and verdict.sts is not None and (dropped := dropped_lines(verdict.sts)):
                self.log.warn("{domain}: {count} policy line(s) left out of the TLSRPT answer (control characters "
                              "or unbalanced braces, which Postfix could not parse): {lines!r}", domain=domain,
                              count=len(dropped), lines=dropped[:3])
        return entry.tlsrpt

    def _answer_for(self, _: Resolution, domain: str, tlsrpt: bool) -> Answer:
        return self._answer(domain, self._entries[domain], tlsrpt)

    def _internal_error(self, failure: Failure, domain: str) -> Answer:
        if failure.check(LocalFailure):
            self._limits.hit(LOCAL_LIMIT, f"{domain}: {failure.value}")
            return LOCAL_TROUBLE
        self.log.failure("resolving {domain} failed unexpectedly", failure, domain=domain)
        return INTERNAL_ERROR

    # -- resolution ---------------------------------------------------------

    def resolve(self, domain: str) -> Deferred[Resolution]:
        """Resolve ``domain`` now (joining a resolution already running) and update memory and store."""
        return self._flight.run(domain, lambda: self._start(domain))

    def _start(self, domain: str) -> Deferred[Resolution]:
        """Run one resolution, counted against ``max_concurrent_resolutions`` until it ends, however it ends."""
        self._running += 1
        d = self._turns.turn()
        d.addCallback(lambda _: Deferred.fromCoroutine(self._resolve(domain)))
        d.addBoth(self._finished)
        return d

    def _finished(self, result: Resolution | Failure) -> Resolution | Failure:
        self._running -= 1
        return result

    async def _resolve(self, domain: str) -> Resolution:
        current = self._entries.get(domain)
        cached = current.policy if current is not None else None
        sts = Deferred.fromCoroutine(self._resolve_sts(domain, cached))
        if self._dane is None:
            txt, step, fetched, policy, previous = await sts
            dane = None
        else:
            try:
                (txt, step, fetched, policy, previous), dane = await gatherResults(
                    [sts, self._dane.resolve(domain)], consumeErrors=True)
            except FirstError as exc:
                exc.subFailure.raiseException()
        result = Resolution(domain, txt, step, fetched, policy, dane)
        # Finishing costs the loop as much as beginning (the log line, the answers, each connection's next
        # held request): one batch of store writes landing finished dozens at once.
        await self._turns.turn()
        self._record(result, current, previous, self._clock.seconds())
        return result

    async def _resolve_sts(self, domain: str, cached: CachedPolicy | None) -> tuple:
        """(TXT, plan, fetched, policy now, policy before): the MTA-STS half of a resolution."""
        discovering = ensureDeferred(self._resolver.discover(domain))
        if cached is None:
            cached = await self._stored(domain)   # meanwhile the TXT lookup runs
        txt = await discovering
        now = self._clock.seconds()
        step = plan(cached, txt, now, self._settings.refresh_before_s)
        fetched: StsPolicy | StsFailure | None = None
        if step is Plan.FETCH:
            assert isinstance(txt, StsTxt)
            locked, stored = await self._fetch_turn(domain, txt)
            if stored is not None:   # another member of the fleet fetched it meanwhile, for this TXT id
                return txt, Plan.KEEP, None, stored, stored
            try:
                fetched = await self._resolver.fetch(domain)
                policy = settle(domain, cached, txt, fetched, self._clock.seconds())
                if policy is not None and policy is not cached:
                    # Before any answer: what we answered is what a restart finds (RFC 8461 §5.1); and before
                    # the fleet's lock goes, so whoever waited for it finds the policy. The write runs off
                    # the event loop; this resolution (and whoever joined it) waits for it.
                    await self._persist(policy)
            finally:
                if locked:
                    await self._release_fetch_lock(domain)
        elif step is Plan.KEEP:
            policy = cached
        else:
            policy = None
        return txt, step, fetched, policy, cached

    async def _fetch_turn(self, domain: str, txt: StsTxt) -> tuple[bool, CachedPolicy | None]:
        """Wait while another member of the fleet fetches ``domain``, then take the turn.

        Returns (whether we hold the store's fetch lock, a policy another
        member stored meanwhile that plan() keeps for this TXT id: then there
        is nothing to fetch).  Polled with back-off; past ``http_timeout_s``
        plus :data:`FETCH_LOCK_SLACK_S` without the lock we fetch anyway: a
        stuck member must never stop us, and a double fetch is the worst of it.
        """
        deadline = self._clock.seconds() + self._settings.http_timeout_s + FETCH_LOCK_SLACK_S
        pause_s = FETCH_LOCK_POLL_FIRST_S
        while True:
            try:
                locked = await maybeDeferred(self._store.try_fetch_lock, domain)
            except StoreError as exc:
                self.log.warn("{domain}: the fleet's fetch lock could not be taken ({error}); fetching without it",
                              domain=domain, error=exc)
                return False, None
            stored = await self._stored(domain)
            now = self._clock.seconds()
            if stored is not None and plan(stored, txt, now, self._settings.refresh_before_s) is Plan.KEEP:
                if locked:
                    await self._release_fetch_lock(domain)
                return False, stored
            if locked or now >= deadline:
                return locked, None
            await deferLater(self._clock, pause_s)
            pause_s = min(pause_s * 2, FETCH_LOCK_POLL_MAX_S)

    async def _release_fetch_lock(self, domain: str) -> None:
        try:
            await maybeDeferred(self._store.release_fetch_lock, domain)
        except StoreError as exc:   # a connection that broke released it with itself
            self.log.warn("{domain}: the fleet's fetch lock could not be released: {error}", domain=domain, error=exc)

    async def _stored(self, domain: str) -> CachedPolicy | None:
        """A usable policy another worker, or another MTA of the fleet, stored for ``domain``.

        Its TXT id is then checked like that of our own cached policy, so it
        saves the fetch, not the discovery (RFC 8461 §5.1 applies to it as
        to ours).  A store that cannot be read costs only that saving.
        """
        try:
            stored = await maybeDeferred(self._store.load_policy, domain)
        except StoreError as exc:
            self.log.warn("{domain}: the policy store could not be read ({error}); resolving without it",
                          domain=domain, error=exc)
            return None
        return stored if stored is not None and stored.usable(self._clock.seconds()) else None

    def _record(self, result: Resolution, current: _Entry | None, previous: CachedPolicy | None,
                now: float) -> None:
        """Make a resolution's outcome the current answer (its new policy is persisted already), and log what matters.

        ``previous`` is the policy the resolution started from: this entry's,
        or one another process stored (then it is not written again).
        """
        domain, policy, failure = result.domain, result.policy, result.failure
        if policy is not None and policy is not previous:
            self.log.info("{domain}: {mode} policy id {txt_id} (max_age {max_age} s)", domain=domain,
                          mode=policy.policy.mode.value, txt_id=policy.txt_id, max_age=policy.policy.max_age)
        elif policy is None and previous is not None:
            self._forget(domain)
        if failure is not None:
            if policy is not None:
                self.log.warn("{domain}: {failure}; still applying the cached policy", domain=domain, failure=failure)
            elif result.dane is not None and (result.dane.applies or result.dane.outcome is DaneOutcome.TEMP):
                self.log.warn("{domain}: {failure}; DANE decides this domain", domain=domain, failure=failure)
            else:
                self.log.warn("{domain}: {failure}; delivering as if no MTA-STS policy (RFC 8461 §5.1)",
                              domain=domain, failure=failure)
        hold = self._settings.failure_ttl_s if failure is not None else self._settings.negative_ttl_s
        entry = self._entry(policy, now, hold_s=hold)
        if result.dane is not None:
            self._apply_dane(domain, entry, result.dane, current, now)
        entry.verdict = decide(entry.dane, domain, policy.policy if policy is not None else None)
        self._store_entry(domain, entry)
        if self._on_resolution is not None:
            self._on_resolution(result)

    def _store_entry(self, domain: str, entry: _Entry) -> None:
        """Hold ``entry``; past ``max_negative_entries`` policy-less ones, forget the least recently used."""
        self._entries[domain] = entry
        if entry.policy is not None:
            self._negative.pop(domain, None)
            return
        self._negative[domain] = None
        self._negative.move_to_end(domain)
        while len(self._negative) > self._settings.max_negative_entries:
            oldest, _ = self._negative.popitem(last=False)
            del self._entries[oldest]

    def _apply_dane(self, domain: str, entry: _Entry, dane: DaneResult, current: _Entry | None,
                    now: float) -> None:
        """Bound the entry's lifetime by the DANE data's TTL (:func:`~mtasts_resolver.policy.lifetime.dane_lifetime`)."""
        previous = current.dane if current is not None else None
        probe = self._dane.probe if self._dane is not None else None
        life = dane_lifetime(dane, previous, current.dane_expires_at if current is not None else -math.inf, now,
                             self._dane_times, validating=probe is not None and probe.validating)
        if life.hold is Hold.KEPT:
            self.log.warn("{domain}: DANE re-check failed ({reason}); the earlier result ({outcome}) stays "
                          "valid for {left:.0f} s more", domain=domain, reason=dane.reason,
                          outcome=life.dane.outcome.value, left=life.expires_at - now)
        elif life.hold is Hold.TEMP:
            self.log.warn("{domain}: DANE status unknown ({reason}): answering TEMP, Postfix defers "
                          "(RFC 7672 §2.1.1: no downgrade)", domain=domain, reason=dane.reason)
        elif life.hold is Hold.VALIDATED and (previous is None or previous.outcome is not dane.outcome):
            log = self.log.info if dane.applies else self.log.debug
            log("{domain}: DANE {outcome}: {reason}", domain=domain, outcome=dane.outcome.value, reason=dane.reason)
        entry.check_at, entry.expires_at = min(entry.check_at, life.check_at), min(entry.expires_at, life.expires_at)
        entry.dane, entry.dane_expires_at = life.dane, life.expires_at

    def _validation_changed(self, validating: bool) -> None:
        """The probe changed its mind: fix the answers that depended on it."""
        now = self._clock.seconds()
        for entry in self._entries.values():
            entry.check_at, entry.expires_at = after_probe_flip(
                entry.dane, entry.policy.expires_at if entry.policy is not None else None,
                entry.check_at, entry.expires_at, validating, now)

    def _entry(self, policy: CachedPolicy | None, now: float, *,
               check_at: float | None = None, hold_s: float = 0.0) -> _Entry:
        if policy is None:
            return _Entry(NO_POLICY, now + hold_s, now + hold_s, None)
        if check_at is None:
            check_at = min(now + self._settings.txt_recheck_s, refresh_at(policy, self._settings.refresh_before_s))
        return _Entry(NO_POLICY, check_at, policy.expires_at, policy)   # (its verdict: the caller decides)

    async def _persist(self, policy: CachedPolicy) -> None:
        try:
            await maybeDeferred(self._store.save_policy, policy)
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

    def _in_background(self, domain: str) -> Deferred[Resolution | None]:
        if domain not in self._flight and self._running >= self._settings.max_concurrent_resolutions:
            # The cached answer is still served; the re-check waits for a later lookup or scan.
            self._limits.hit(RESOLUTIONS_LIMIT, f"background re-check of {domain} postponed")
            return succeed(None)
        d = self.resolve(domain)
        d.addErrback(self._background_failed, domain)
        return d

    def _background_failed(self, failure: Failure, domain: str) -> None:
        """The cached answer stays; a local failure is a limit hit, anything else a bug."""
        if failure.check(LocalFailure):
            self._limits.hit(LOCAL_LIMIT, f"background re-check of {domain}: {failure.value}")
        else:
            self.log.failure("background refresh of {domain} failed", failure, domain=domain)

    def refresh_due(self) -> Deferred[None]:
        """Proactively refresh policies nearing expiry and drop expired entries (called periodically)."""
        now = self._clock.seconds()
        due: list[str] = []
        for domain, entry in list(self._entries.items()):
            if entry.policy is not None and not entry.policy.usable(now):
                del self._entries[domain]
                self._forget(domain)
            elif entry.policy is None and now >= entry.expires_at:
                del self._entries[domain]
                self._negative.pop(domain, None)
            elif entry.policy is not None and now >= refresh_at(entry.policy, self._settings.refresh_before_s):
                # (An entry whose DANE answer expired keeps its MTA-STS policy: the next lookup resolves.)
                due.append(domain)
        work = [self._refresh_limit.run(self._in_background, domain) for domain in due
                if domain not in self._flight]
        return gatherResults(work).addCallback(lambda _: None)
