"""PolicyService with a scripted resolver and a fake clock: hot path, single flight, cache rules.

The network side is replaced by a resolver whose answers the test fires by
hand; everything else (store, rules, answers) is the real code.  The same
behaviour is tested end to end against real DNS and HTTPS in test_daemon.py.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.limits import LimitLog
from mtasts_resolver.lookup import NOT_FOUND, AnswerKind
from mtasts_resolver.policy.model import CachedPolicy, FailureType, NoStsTxt, StsFailure, StsTxt
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.service import BUSY, RESOLUTIONS_LIMIT, PolicyService
from mtasts_resolver.store.sqlite import SqliteStore
from mtasts_resolver.turns import RESOLUTIONS_PER_TURN
from tests.unit.helpers import ENFORCE, POLICY, START, ScriptedResolver, results


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


def limited(tmp_path, clock, **settings):
    resolver = ScriptedResolver()
    limits = LimitLog(clock.seconds)
    service = PolicyService(clock, resolver, SqliteStore(tmp_path / "limited.sqlite3"),
                            MtaStsConfig(negative_ttl_s=600, **settings), [], limits=limits)
    return resolver, limits, service


def test_resolution_cap_answers_temp_and_caches_nothing(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver, limits, service = limited(tmp_path, clock, max_concurrent_resolutions=3)
    waiting = [service.lookup("postfix", f"d{i}.example") for i in range(3)]
    assert all(isinstance(d, Deferred) for d in waiting)
    # the cap is ours, not the domain's: TEMP (Postfix defers), never NOTFOUND
    assert service.lookup("postfix", "new.example") == BUSY and BUSY.kind is AnswerKind.TEMP
    assert isinstance(service.lookup("postfix", "d0.example"), Deferred)   # joining a running one costs nothing
    assert len(resolver.discovers) == 3
    assert limits.counts() == {RESOLUTIONS_LIMIT: 1}
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    # a slot is free again, and the TEMP was not remembered: the domain is resolved now
    out = results([service.lookup("postfix", "new.example")])
    assert resolver.discovers[-1][0] == "new.example"
    resolver.discovers[-1][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[-1][1].callback(POLICY)
    assert out == [ENFORCE]


def test_resolution_cap_postpones_background_rechecks(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver, limits, service = limited(tmp_path, clock, max_concurrent_resolutions=1, txt_recheck_s=300)
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    clock.advance(301)
    service.lookup("postfix", "busy.example")                      # takes the only slot
    assert service.lookup("postfix", "example.com") == ENFORCE     # still served...
    assert [d for d, _ in resolver.discovers] == ["example.com", "busy.example"]   # ...re-check postponed
    assert limits.counts() == {RESOLUTIONS_LIMIT: 1}


def test_negative_entries_are_bounded_least_recently_used_first(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver, _, service = limited(tmp_path, clock, max_negative_entries=3)
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    for name in ("a.example", "b.example", "c.example"):
        clock.advance(0)   # each in a turn of its own: a turn begins and finishes a few resolutions (turns.py)
        service.lookup("postfix", name)
        resolver.discovers[-1][1].callback(NoStsTxt("no _mta-sts TXT record"))
    assert service.lookup("postfix", "a.example") == NOT_FOUND      # a is now the most recently used
    clock.advance(0)
    service.lookup("postfix", "d.example")
    resolver.discovers[-1][1].callback(StsFailure(FailureType.FETCH_ERROR, "TXT lookup failed: timed out"))
    assert service.domains_cached == 4                              # the policy + 3 negative entries
    asked = len(resolver.discovers)
    for name in ("a.example", "c.example", "d.example"):
        assert service.lookup("postfix", name) == NOT_FOUND          # held: answered from memory
    assert len(resolver.discovers) == asked
    assert isinstance(service.lookup("postfix", "b.example"), Deferred)   # b went first
    assert service.lookup("postfix", "example.com") == ENFORCE      # policies are never evicted (RFC 8461 §5.1)


def test_policy_lines_postfix_cannot_parse_are_dropped_and_logged(world):
    _, resolver, _, service, _ = world
    hostile = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"
                           b"x: } servername=evil.example {\n")
    with capturedLogs() as events:
        out = results([service.lookup("postfix-tlsrpt", "example.com")])
        resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
        resolver.fetches[0][1].callback(hostile)
    assert out[0].kind is AnswerKind.FOUND and "evil" not in out[0].text
    assert out[0].text.count("servername=") == 1
    assert [e["lines"] for e in events if "lines" in e] == [("x: } servername=evil.example {",)]
    assert service.lookup("postfix", "example.com") == ENFORCE


def test_a_failed_resolution_frees_its_slot(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver, _, service = limited(tmp_path, clock, max_concurrent_resolutions=1)
    out = results([service.lookup("postfix", "bug.example")])
    assert service.lookup("postfix", "other.example") == BUSY
    resolver.discovers[0][1].errback(RuntimeError("bug"))
    assert out[0].kind is AnswerKind.TEMP
    assert isinstance(service.lookup("postfix", "other.example"), Deferred)


@pytest.mark.parametrize("txt_id, age_s, fetched", [
    ("1", 0, False),            # another worker fetched it, same TXT id: used without a fetch
    ("2", 0, True),             # the domain changed its policy since: fetched
    ("1", 86400, True),         # what is stored ran out of max_age: fetched
])
def test_a_policy_another_process_stored_saves_the_fetch(world, tmp_path, txt_id, age_s, fetched):
    clock, resolver, store, service, settings = world
    other_worker = SqliteStore(tmp_path / "cache.sqlite3")      # the same file, another connection
    other_worker.save_policy(CachedPolicy("example.com", "1", POLICY, clock.seconds() - age_s))
    other_worker.close()
    answers = results([service.lookup("postfix", "example.com")])
    resolver.discovers[0][1].callback(StsTxt(txt_id, f"v=STSv1; id={txt_id}"))   # the TXT id is checked all the same
    assert len(resolver.fetches) == int(fetched)
    if fetched:
        resolver.fetches[0][1].callback(POLICY)
    assert answers == [ENFORCE]


def test_a_store_that_cannot_be_read_only_costs_the_saving(world):
    clock, resolver, store, service, settings = world
    store.close()                                                  # every read now fails with StoreError
    with capturedLogs() as events:
        answers = results([service.lookup("postfix", "example.com")])
        resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
        resolver.fetches[0][1].callback(POLICY)
    assert answers == [ENFORCE]
    assert any("could not be read" in (e.get("log_format") or "") for e in events)


class FleetStore(SqliteStore):
    """The store as one member of a fleet sees it: another member holds the fetch lock of every domain."""

    held_elsewhere = True
    asked = 0

    def try_fetch_lock(self, domain):
        self.asked += 1
        return not self.held_elsewhere


@pytest.fixture
def fleet(tmp_path):
    """A lookup of a new domain whose TXT record came back, at a member that finds the fetch lock held."""
    clock = Clock()
    clock.advance(START)
    store, resolver = FleetStore(tmp_path / "fleet.sqlite3"), ScriptedResolver()
    service = PolicyService(clock, resolver, store, MtaStsConfig(http_timeout_s=10), [])
    answers = results([service.lookup("postfix", "example.com")])
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    yield clock, store, resolver, answers
    store.close()


def test_another_member_fetching_means_waiting_for_its_policy_not_fetching(fleet, tmp_path):
    clock, store, resolver, answers = fleet
    clock.advance(0.05)
    clock.advance(0.1)                                      # still fetching elsewhere: we wait, with back-off
    assert answers == [] and resolver.fetches == [] and store.asked == 3
    other = SqliteStore(tmp_path / "fleet.sqlite3")         # the other member stores what it fetched
    other.save_policy(CachedPolicy("example.com", "1", POLICY, clock.seconds()))
    other.close()
    clock.advance(0.2)
    assert answers == [ENFORCE] and resolver.fetches == []


def test_a_member_that_never_finishes_does_not_stop_us(fleet):
    clock, _, resolver, answers = fleet
    for _ in range(40):
        clock.advance(1)                                    # http_timeout_s + slack, then we fetch anyway
    assert len(resolver.fetches) == 1
    resolver.fetches[0][1].callback(POLICY)
    assert answers == [ENFORCE]


def test_a_flood_of_new_names_begins_a_few_per_turn_while_cached_answers_go_on(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver, _, service = limited(tmp_path, clock)
    service.lookup("postfix", "example.com")
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    clock.advance(0)   # a new turn
    waiting = [service.lookup("postfix", f"d{i}.example") for i in range(20)]
    assert all(isinstance(d, Deferred) for d in waiting)
    assert len(resolver.discovers) == 1 + RESOLUTIONS_PER_TURN    # the rest wait for the next turns
    assert service.lookup("postfix", "example.com") == ENFORCE      # answered meanwhile, from memory
    clock.advance(0)   # Clock runs every turn due at once
    assert len(resolver.discovers) == 21
    for _, discovered in resolver.discovers[1:]:
        discovered.callback(NoStsTxt("no _mta-sts TXT record"))
    clock.advance(0)
    assert [d.result for d in waiting] == [NOT_FOUND] * 20          # each finished, none dropped
