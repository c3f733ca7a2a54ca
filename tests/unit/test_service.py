"""PolicyService with a scripted resolver and a fake clock: hot path, single flight, cache rules.

The network side is replaced by a resolver whose answers the test fires by
hand; everything else (store, rules, answers) is the real code.  The same
behaviour is tested end to end against real DNS and HTTPS in test_daemon.py.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.lookup import Answer, AnswerKind
from mtasts_resolver.policy.model import FailureType, NoStsTxt, StsFailure, StsTxt
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.service import PolicyService
from mtasts_resolver.store.sqlite import SqliteStore

POLICY = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")
ENFORCE = Answer(AnswerKind.FOUND, "secure match=mx.example.com servername=hostname")
START = 1_700_000_000.0


class ScriptedResolver:
    """Records calls; each returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.discovers: list[tuple[str, Deferred]] = []
        self.fetches: list[tuple[str, Deferred]] = []

    def discover(self, domain: str) -> Deferred:
        d: Deferred = Deferred()
        self.discovers.append((domain, d))
        return d

    def fetch(self, domain: str) -> Deferred:
        d: Deferred = Deferred()
        self.fetches.append((domain, d))
        return d


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver = ScriptedResolver()
    store = SqliteStore(tmp_path / "cache.sqlite3")
    settings = MtaStsConfig(txt_recheck_s=300, negative_ttl_s=600, failure_ttl_s=30)
    service = PolicyService(clock, resolver, store, settings, ["postfix-tlsrpt"])
    yield clock, resolver, store, service, settings
    store.close()


def results(deferreds):
    out = []
    for d in deferreds:
        d.addCallback(out.append)
    return out


def test_concurrent_lookups_share_one_resolution(world):
    clock, resolver, store, service, _ = world
    pending = [service.lookup("postfix", "example.com") for _ in range(200)]
    answers = results(pending)
    assert len(resolver.discovers) == 1
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    assert len(resolver.fetches) == 1
    resolver.fetches[0][1].callback(POLICY)
    assert answers == [ENFORCE] * 200
    # the hot path: a plain Answer, no Deferred, no resolver call
    assert service.lookup("postfix", "example.com") == ENFORCE
    assert service.lookup("postfix", "EXAMPLE.com.") == ENFORCE
    assert len(resolver.discovers) == 1
    assert [p.domain for p in store.load_policies()] == ["example.com"]


def test_tlsrpt_map_gets_attributes(world):
    _, resolver, _, service, _ = world
    out = results([service.lookup("postfix-tlsrpt", "example.com")])
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    assert "policy_type=sts policy_domain=example.com" in out[0].text


def test_parent_probes_and_bad_keys_need_no_resolution(world):
    _, resolver, _, service, _ = world
    for key in (".example.com", ".com", "[mx.example.com]:25", "not a domain", ""):
        assert service.lookup("postfix", key).kind is AnswerKind.NOTFOUND
    assert resolver.discovers == []


def test_txt_recheck_serves_cached_answer_and_refetches_on_new_id(world):
    clock, resolver, _, service, _ = world
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    clock.advance(301)
    assert service.lookup("postfix", "example.com") == ENFORCE     # served at once...
    assert len(resolver.discovers) == 2                            # ...while re-checking
    assert service.lookup("postfix", "example.com") == ENFORCE
    assert len(resolver.discovers) == 2                            # one re-check at a time
    resolver.discovers[1][1].callback(StsTxt("2", "v=STSv1; id=2"))
    testing = parse_policy(b"version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n")
    resolver.fetches[1][1].callback(testing)
    assert service.lookup("postfix", "example.com").kind is AnswerKind.NOTFOUND


def test_failed_refetch_keeps_cached_policy(world):
    clock, resolver, _, service, _ = world
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    clock.advance(301)
    service.lookup("postfix", "example.com")
    resolver.discovers[1][1].callback(StsTxt("2", "v=STSv1; id=2"))
    resolver.fetches[1][1].callback(StsFailure(FailureType.WEBPKI_INVALID, "bad certificate"))
    assert service.lookup("postfix", "example.com") == ENFORCE


def test_no_policy_is_remembered_for_negative_ttl(world):
    clock, resolver, _, service, _ = world
    out = results([service.lookup("postfix", "nopolicy.example")])
    resolver.discovers[0][1].callback(NoStsTxt("no _mta-sts TXT record"))
    assert out[0].kind is AnswerKind.NOTFOUND
    clock.advance(599)
    assert service.lookup("postfix", "nopolicy.example").kind is AnswerKind.NOTFOUND
    assert len(resolver.discovers) == 1
    clock.advance(2)
    service.lookup("postfix", "nopolicy.example")
    assert len(resolver.discovers) == 2


def test_failure_with_nothing_cached_is_notfound_and_retried_sooner(world):
    clock, resolver, _, service, _ = world
    out = results([service.lookup("postfix", "broken.example")])
    resolver.discovers[0][1].callback(StsFailure(FailureType.FETCH_ERROR, "TXT lookup failed: timed out"))
    assert out[0].kind is AnswerKind.NOTFOUND
    clock.advance(31)
    service.lookup("postfix", "broken.example")
    assert len(resolver.discovers) == 2


def test_unexpected_error_is_temp_not_an_exception(world):
    _, resolver, _, service, _ = world
    out = results([service.lookup("postfix", "example.com")])
    resolver.discovers[0][1].errback(RuntimeError("bug"))
    assert out[0].kind is AnswerKind.TEMP


def test_restart_loads_policies_and_rechecks_first(world, tmp_path):
    clock, resolver, store, service, settings = world
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    fresh_resolver = ScriptedResolver()
    restarted = PolicyService(clock, fresh_resolver, SqliteStore(tmp_path / "cache.sqlite3"), settings, [])
    assert restarted.load() == 1
    assert restarted.lookup("postfix", "example.com") == ENFORCE   # from the persistent cache
    assert len(fresh_resolver.discovers) == 1                      # and the TXT id is re-checked
    fresh_resolver.discovers[0][1].callback(StsFailure(FailureType.FETCH_ERROR, "policy host blocked"))
    assert restarted.lookup("postfix", "example.com") == ENFORCE


def test_expired_policy_is_not_loaded(world, tmp_path):
    clock, resolver, store, service, settings = world
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    clock.advance(86400)
    restarted = PolicyService(clock, ScriptedResolver(), SqliteStore(tmp_path / "cache.sqlite3"), settings, [])
    assert restarted.load() == 0
    assert list(store.load_policies()) == []


def test_refresh_due_refetches_before_expiry(world):
    clock, resolver, _, service, _ = world
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    service.refresh_due()
    assert len(resolver.discovers) == 1
    clock.advance(86400 - 3600)   # within refresh_before_s (1 day default) and past half-life
    service.refresh_due()
    assert len(resolver.discovers) == 2
    resolver.discovers[1][1].callback(StsTxt("1", "v=STSv1; id=1"))
    assert len(resolver.fetches) == 2   # same id, but due: fetched again
