"""PolicyService with DANE: concurrency with MTA-STS, TTL-bounded caching, TEMP, the validation probe.

Both resolvers are scripted (the test fires their Deferreds) and time is a
Clock; store, rules, decision and answers are the real code.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mtasts_resolver.config import DaneConfig, MtaStsConfig
from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.dane import DaneOutcome, DaneResult
from mtasts_resolver.policy.model import NoStsTxt, StsTxt
from mtasts_resolver.service import PolicyService
from mtasts_resolver.store.sqlite import SqliteStore
from tests.unit.helpers import ENFORCE, POLICY, START, FakeProbe, ScriptedDane, ScriptedResolver, results

import pytest

DANE_ONLY = Answer(AnswerKind.FOUND, "dane-only")
DANE_PARTIAL = Answer(AnswerKind.FOUND, "dane")


def dane(outcome: DaneOutcome, ttl: int | None = 300, reason: str = "test") -> DaneResult:
    return DaneResult(outcome, reason, ttl=ttl)


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    clock.advance(START)
    sts = ScriptedResolver()
    dane_resolver = ScriptedDane(FakeProbe())
    store = SqliteStore(tmp_path / "cache.sqlite3")
    settings = DaneConfig(min_ttl_s=60, max_ttl_s=3600, failure_ttl_s=10)
    seen = []
    service = PolicyService(clock, sts, store, MtaStsConfig(txt_recheck_s=300, negative_ttl_s=600), ["postfix-tlsrpt"],
                            seen.append, dane=dane_resolver, dane_settings=settings)
    yield clock, sts, dane_resolver, service, seen, store
    store.close()


def settle_sts(sts, index=0, policy=True):
    if policy:
        sts.discovers[index][1].callback(StsTxt("1", "v=STSv1; id=1"))
        sts.fetches[-1][1].callback(POLICY)
    else:
        sts.discovers[index][1].callback(NoStsTxt("no _mta-sts TXT record"))


def test_one_resolution_both_resolvers_dane_wins(world):
    clock, sts, dane_resolver, service, seen, _ = world
    answers = results([service.lookup(name, "example.com") for name in ["postfix", "postfix-tlsrpt"] * 100])
    # both started at once, once each
    assert len(sts.discovers) == 1 and len(dane_resolver.calls) == 1
    settle_sts(sts)
    assert answers == []                      # waits for DANE too
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.DANE_ONLY))
    assert answers == [DANE_ONLY] * 200       # the TLSRPT map too: Postfix reports TLSA itself
    assert service.lookup("postfix", "example.com") == DANE_ONLY   # hot path: a plain Answer
    assert seen[0].dane.outcome is DaneOutcome.DANE_ONLY and seen[0].dane_applies
    assert seen[0].policy is not None          # the MTA-STS policy is still cached for later


@pytest.mark.parametrize("outcome,expected", [
    (DaneOutcome.DANE_ONLY, DANE_ONLY), (DaneOutcome.DANE, DANE_PARTIAL), (DaneOutcome.ABSENT, ENFORCE),
    (DaneOutcome.DISABLED, ENFORCE)])
def test_decision_reaches_the_answer(world, outcome, expected):
    _, sts, dane_resolver, service, _, _ = world
    out = results([service.lookup("postfix", "example.com")])
    dane_resolver.calls[0][1].callback(dane(outcome))
    settle_sts(sts)
    assert out == [expected]


def test_dane_cache_follows_the_clamped_ttl_and_refreshes_in_the_background(world):
    clock, sts, dane_resolver, service, _, _ = world
    service.lookup("postfix", "example.com")
    settle_sts(sts, policy=False)
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.DANE_ONLY, ttl=5))   # clamped up to 60 s
    clock.advance(44)
    assert service.lookup("postfix", "example.com") == DANE_ONLY
    assert len(dane_resolver.calls) == 1
    clock.advance(2)                           # past 3/4 of 60 s: served, and re-checked in the background
    assert service.lookup("postfix", "example.com") == DANE_ONLY
    assert len(dane_resolver.calls) == 2
    assert service.lookup("postfix", "example.com") == DANE_ONLY
    assert len(dane_resolver.calls) == 2       # one re-check at a time
    dane_resolver.calls[1][1].callback(dane(DaneOutcome.ABSENT, ttl=100000))  # clamped down to 3600 s
    sts.discovers[1][1].callback(NoStsTxt("no _mta-sts TXT record"))
    assert service.lookup("postfix", "example.com") == NOT_FOUND
    clock.advance(599)                         # negative_ttl_s (600) bounds it before 3600 s
    assert service.lookup("postfix", "example.com") == NOT_FOUND
    assert len(dane_resolver.calls) == 2


def test_expired_dane_answer_is_not_served(world):
    clock, sts, dane_resolver, service, _, _ = world
    service.lookup("postfix", "example.com")
    settle_sts(sts)
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.DANE_ONLY, ttl=60))
    clock.advance(61)
    pending = service.lookup("postfix", "example.com")
    assert isinstance(pending, Deferred)        # waits for a fresh resolution
    out = results([pending])
    dane_resolver.calls[1][1].callback(dane(DaneOutcome.ABSENT))
    sts.discovers[1][1].callback(StsTxt("1", "v=STSv1; id=1"))   # same id: cached policy kept
    assert out == [ENFORCE]


def test_temp_failure_defers_and_is_retried_after_failure_ttl(world):
    clock, sts, dane_resolver, service, _, _ = world
    out = results([service.lookup("postfix", "example.com")])
    settle_sts(sts)                              # an enforce policy does not help: no silent downgrade
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.TEMP, reason="MX lookup failed: SERVFAIL"))
    assert out[0].kind is AnswerKind.TEMP and "MX lookup failed" in out[0].text
    clock.advance(9)
    assert service.lookup("postfix", "example.com").kind is AnswerKind.TEMP
    assert len(dane_resolver.calls) == 1
    clock.advance(2)
    retry = results([service.lookup("postfix", "example.com")])
    assert len(dane_resolver.calls) == 2
    dane_resolver.calls[1][1].callback(dane(DaneOutcome.DANE_ONLY))
    sts.discovers[1][1].callback(StsTxt("1", "v=STSv1; id=1"))
    assert retry == [DANE_ONLY]


def test_failed_recheck_keeps_validated_result_within_its_ttl(world):
    clock, sts, dane_resolver, service, _, _ = world
    service.lookup("postfix", "example.com")
    settle_sts(sts, policy=False)
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.DANE_ONLY, ttl=100))
    clock.advance(80)
    assert service.lookup("postfix", "example.com") == DANE_ONLY      # starts the background re-check
    dane_resolver.calls[1][1].callback(dane(DaneOutcome.TEMP, reason="TLSA lookup failed"))
    sts.discovers[1][1].callback(NoStsTxt("no _mta-sts TXT record"))
    assert service.lookup("postfix", "example.com") == DANE_ONLY
    clock.advance(21)                                                  # the validated data's TTL is over
    assert isinstance(service.lookup("postfix", "example.com"), Deferred)


def test_validation_probe_flips_answers(world):
    clock, sts, dane_resolver, service, _, _ = world
    dane_resolver.probe.flip(False)
    out = results([service.lookup("postfix", "example.com")])
    settle_sts(sts)
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.DISABLED))
    assert out == [ENFORCE]
    assert service.lookup("postfix", "example.com") == ENFORCE
    dane_resolver.probe.flip(True)              # answers made without DANE must not be served any more
    out = results([service.lookup("postfix", "example.com")])
    assert out == [] and len(dane_resolver.calls) == 2
    dane_resolver.calls[1][1].callback(dane(DaneOutcome.DANE_ONLY))
    sts.discovers[1][1].callback(StsTxt("1", "v=STSv1; id=1"))
    assert out == [DANE_ONLY]


def test_restart_resolves_dane_before_serving_a_cached_sts_policy(world, tmp_path):
    clock, sts, dane_resolver, service, _, store = world
    service.lookup("postfix", "example.com")
    settle_sts(sts)
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.ABSENT))
    fresh_sts, fresh_dane = ScriptedResolver(), ScriptedDane(FakeProbe(validating=False))
    restarted = PolicyService(clock, fresh_sts, SqliteStore(tmp_path / "cache.sqlite3"), MtaStsConfig(), [],
                              dane=fresh_dane)
    assert restarted.load() == 1
    # the probe has not answered yet: the cached policy must wait for DANE (it might be overridden)
    assert isinstance(restarted.lookup("postfix", "example.com"), Deferred)
    fresh_dane.calls[0][1].callback(dane(DaneOutcome.ABSENT))
    fresh_sts.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    assert restarted.lookup("postfix", "example.com") == ENFORCE

    again = PolicyService(clock, ScriptedResolver(), SqliteStore(tmp_path / "cache.sqlite3"), MtaStsConfig(), [],
                          dane=ScriptedDane(probe := FakeProbe(validating=False)))
    again.load()
    probe.flip(False)   # first probe result: not validating, DANE cannot change the cached answer
    assert again.lookup("postfix", "example.com") == ENFORCE


def test_refresh_scan_keeps_sts_policy_when_only_dane_expired(world):
    clock, sts, dane_resolver, service, _, store = world
    service.lookup("postfix", "example.com")
    settle_sts(sts)
    dane_resolver.calls[0][1].callback(dane(DaneOutcome.ABSENT, ttl=60))
    clock.advance(120)
    service.refresh_due()
    assert service.cached_policy("example.com") is not None
    assert [p.domain for p in store.load_policies()] == ["example.com"]


def test_without_dane_nothing_changes(tmp_path):
    clock = Clock()
    clock.advance(START)
    sts = ScriptedResolver()
    service = PolicyService(clock, sts, SqliteStore(tmp_path / "c.sqlite3"), MtaStsConfig(), [])
    out = results([service.lookup("postfix", "example.com")])
    settle_sts(sts)
    assert out == [ENFORCE]
