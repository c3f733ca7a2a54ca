"""The policy in force, shared through the store: every resolution records it (DANE as ``tlsa`` with its
TLSA records, MTA-STS with its lines), and a feed in another process reports sessions under it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from twisted.internet.task import Clock

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult, HostResult, HostStatus, Lookup, TlsaRecord
from mtasts_resolver.policy.model import CachedPolicy, FailureType, Mode, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.store.sqlite import SqliteStore
from mtasts_resolver.tlsrpt.feeds.exim_events import EximLogCorrelator, event_outcomes, parse_event
from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator
from mtasts_resolver.tlsrpt.feeds.resolution import policy_in_force, resolution_outcomes, resolution_sink
from mtasts_resolver.tlsrpt.feeds.services import POLICY_MEMO_S, stored_policy_lookup
from mtasts_resolver.tlsrpt.feeds.sourceip import RouteSource
from mtasts_resolver.tlsrpt.model import FailureDetail, PolicyType, ReportPolicy, ResultType, canonical_json

TLSA = TlsaRecord(3, 1, 1, bytes.fromhex("ab" * 32))
STS = StsPolicy(Mode.ENFORCE, ("mx.a.test",), 86400, ("version: STSv1", "mode: enforce", "mx: mx.a.test",
                                                       "max_age: 86400"))


@dataclass(frozen=True)
class FakeResolution:
    domain: str
    txt: object = None
    fetched: object = None
    policy: CachedPolicy | None = None
    dane: DaneResult | None = None


def dane(outcome: DaneOutcome, *hosts: HostResult) -> DaneResult:
    return DaneResult(outcome, "test", hosts=hosts)


USABLE = HostResult("mx.a.test", HostStatus.USABLE, "ok", tlsa_base="mx.a.test", tlsa=(TLSA,))
OTHER = HostResult("mx2.a.test", HostStatus.USABLE, "ok", tlsa_base="mx2.a.test", tlsa=(TLSA,))
NO_TLSA = HostResult("mx3.a.test", HostStatus.NO_TLSA, "none")


@pytest.mark.parametrize("resolution, expected", [
    (FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, USABLE, OTHER, NO_TLSA)),
     ReportPolicy(PolicyType.TLSA, "a.test", (str(TLSA),))),             # records once, from every DANE host
    (FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, USABLE), policy=CachedPolicy("a.test", "1", STS, 0)),
     ReportPolicy(PolicyType.TLSA, "a.test", (str(TLSA),))),             # DANE wins over MTA-STS (RFC 8461 §2)
    (FakeResolution("a.test", dane=dane(DaneOutcome.ABSENT), policy=CachedPolicy("a.test", "1", STS, 0)),
     ReportPolicy(PolicyType.STS, "a.test", STS.lines, STS.mx)),
    (FakeResolution("a.test", policy=CachedPolicy("a.test", "1", StsPolicy(Mode.NONE, (), 60, ("mode: none",)), 0)),
     ReportPolicy(PolicyType.NO_POLICY_FOUND, "a.test")),
    (FakeResolution("a.test"), ReportPolicy(PolicyType.NO_POLICY_FOUND, "a.test")),
])
def test_policy_in_force(resolution, expected):
    assert policy_in_force(resolution) == expected


class FakeRoutes(RouteSource):
    """The kernel's answers of a host at 192.0.2.2 whose MX route to 192.0.2.25 leaves from 192.0.2.3."""

    def __call__(self, receiving_ip: str) -> str:
        return {"192.0.2.25": "192.0.2.3"}.get(receiving_ip, "")

    def towards_internet(self) -> str:
        return "192.0.2.2"


TXT = StsTxt("20260301", "v=STSv1; id=20260301")
FETCH_ERROR = StsFailure(FailureType.FETCH_ERROR, "HTTP 500")
ADDRESSED = HostResult("mx.a.test", HostStatus.UNUSABLE, "usage 1", (Lookup("mx.a.test", "A", ("192.0.2.25",)),),
                       tlsa_base="mx.a.test", tlsa=(TLSA,))
FAILED = HostResult("mx4.a.test", HostStatus.FAILED, "SERVFAIL", (Lookup("mx4.a.test", "A", failed=True),))


@pytest.mark.parametrize("resolution, policy, detail", [
    # nothing cached: the TXT record is what is known of the policy; no MX contacted: the route to the Internet
    (FakeResolution("a.test", TXT, FETCH_ERROR), ReportPolicy(PolicyType.STS, "a.test", (TXT.record,)),
     FailureDetail(ResultType.STS_POLICY_FETCH_ERROR, "192.0.2.2", failure_reason_code="HTTP 500")),
    # a cached policy still applies (RFC 8461 §5.1): it is the policy-string
    (FakeResolution("a.test", TXT, FETCH_ERROR, CachedPolicy("a.test", "1", STS, 0)),
     ReportPolicy(PolicyType.STS, "a.test", STS.lines, STS.mx),
     FailureDetail(ResultType.STS_POLICY_FETCH_ERROR, "192.0.2.2", failure_reason_code="HTTP 500")),
    # DANE: the route to the MX host's address when the walk found one
    (FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, ADDRESSED)),
     ReportPolicy(PolicyType.TLSA, "mx.a.test", (str(TLSA),)),
     FailureDetail(ResultType.TLSA_INVALID, "192.0.2.3", "mx.a.test", failure_reason_code="usage 1")),
    (FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, FAILED)), ReportPolicy(PolicyType.TLSA, "mx4.a.test"),
     FailureDetail(ResultType.DNSSEC_INVALID, "192.0.2.2", "mx4.a.test", failure_reason_code="SERVFAIL")),
    # the domain's verdict failed: the records read so far, if any
    (FakeResolution("a.test", dane=dane(DaneOutcome.TEMP, ADDRESSED, FAILED)),
     ReportPolicy(PolicyType.TLSA, "a.test", (str(TLSA),)),
     FailureDetail(ResultType.DNSSEC_INVALID, "192.0.2.2", failure_reason_code="test")),
])
def test_the_daemons_own_failures(resolution, policy, detail):
    [outcome] = resolution_outcomes(resolution, 5.0, FakeRoutes())
    assert (outcome.report_domain, outcome.policy, outcome.failures) == ("a.test", policy, (detail,))


def test_a_configured_sending_mta_ip_wins():
    [outcome] = resolution_outcomes(FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, ADDRESSED)), 5.0,
                                    RouteSource("203.0.113.9"))
    assert outcome.failures[0].sending_mta_ip == "203.0.113.9"
    assert RouteSource("203.0.113.9").towards_internet() == "203.0.113.9"


@pytest.mark.parametrize("resolution", [
    FakeResolution("a.test", TXT, StsPolicy(Mode.ENFORCE, (), 1, ())),       # fetched fine
    FakeResolution("a.test", StsTxt("1", "v=STSv1; id=1")),                   # nothing fetched
    FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, USABLE, NO_TLSA)),
])
def test_no_failure_no_outcome(resolution):
    assert resolution_outcomes(resolution, 5.0, FakeRoutes()) == []


def test_every_resolution_goes_to_the_spool_with_its_policies():
    calls = []
    sink = resolution_sink(lambda outcomes, policies=(): calls.append((outcomes, policies)), lambda: 5.0, FakeRoutes())
    sink(FakeResolution("a.test", dane=dane(DaneOutcome.DANE_ONLY, USABLE, NO_TLSA)))
    [(outcomes, policies)] = calls
    assert outcomes == []
    assert policies == [
        ("a.test", canonical_json(ReportPolicy(PolicyType.TLSA, "a.test", (str(TLSA),)).to_json())),
        ("mx:mx.a.test", canonical_json(ReportPolicy(PolicyType.TLSA, "mx.a.test", (str(TLSA),)).to_json()))]
    sink(FakeResolution("b.test"))
    assert calls[-1][1] == [("b.test", canonical_json(ReportPolicy(PolicyType.NO_POLICY_FOUND, "b.test").to_json()))]


def test_a_dane_session_counts_in_the_mx_hosts_own_report_too():
    domain_policy = ReportPolicy(PolicyType.TLSA, "a.test", (str(TLSA),))
    host_policy = ReportPolicy(PolicyType.TLSA, "mx.a.test", (str(TLSA),))
    hosts = {"mx.a.test": host_policy}
    postfix = PostfixLogCorrelator(lambda d: domain_policy, "", hosts.get)
    outcomes = postfix.feed("postfix/smtp[1]: Q1: to=<u@a.test>, relay=mx.a.test[192.0.2.1]:25, delay=1, "
                            "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host)", 0.0)
    assert [(o.report_domain, o.policy) for o in outcomes] == [("a.test", domain_policy), ("mx.a.test", host_policy)]
    assert outcomes[0].failures == outcomes[1].failures
    exim = EximLogCorrelator(lambda d: domain_policy, "", hosts.get)
    outcomes = exim.feed("2026-03-01 10:00:00 1rXyZw-000456-CD => u@a.test R=dnslookup T=remote_smtp H=mx.a.test "
                         "[192.0.2.1] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane", 0.0)
    assert [o.report_domain for o in outcomes] == ["a.test", "mx.a.test"]
    # an MX host without DANE of its own, or an MTA-STS domain: one report only
    assert len(PostfixLogCorrelator(lambda d: domain_policy, "", {}.get).feed(
        "postfix/smtp[1]: Q2: to=<u@a.test>, relay=mx9.a.test[192.0.2.9]:25, delay=1, dsn=4.7.4, "
        "status=deferred (TLS is required, but was not offered by host)", 0.0)) == 1


def test_a_feed_reads_what_another_worker_wrote(tmp_path):
    path = tmp_path / "cache.sqlite3"
    worker, feed_side = SqliteStore(path), SqliteStore(path)
    try:
        in_force = ReportPolicy(PolicyType.TLSA, "a.test", (str(TLSA),))
        writer = worker.outcome_writer()
        writer.add([], {}, {"a.test": (canonical_json(in_force.to_json()), 1.0)})
        writer.close()
        clock = Clock()
        fallback = lambda domain: ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)   # noqa: E731
        policy_for = stored_policy_lookup(feed_side.policy_in_force, fallback, clock.seconds)
        assert policy_for("a.test") == in_force
        assert policy_for("b.test") == fallback("b.test")
        # A DANE domain's session failing STARTTLS is reported under tlsa, not "no policy".
        correlator = PostfixLogCorrelator(policy_for)
        [outcome] = correlator.feed("postfix/smtp[1]: Q1: to=<u@a.test>, relay=mx.a.test[192.0.2.1]:25, delay=1, "
                                    "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host)", 0.0)
        assert outcome.policy == in_force
        # Exim's dane=yes keeps the records it learnt from the store.
        event = parse_event("tlsrpt-v1 event=msg:delivery domain=a.test host=mx.a.test ip=192.0.2.1 cipher=TLS1.3 "
                            "cv=dane dane=yes report=0 data=")
        assert event_outcomes(event, 0.0, policy_for)[0].policy == in_force
        # A newer policy is seen once the memo expires.
        newer = ReportPolicy(PolicyType.STS, "a.test", STS.lines, STS.mx)
        writer = worker.outcome_writer()
        writer.add([], {}, {"a.test": (canonical_json(newer.to_json()), 2.0)})
        writer.close()
        assert policy_for("a.test") == in_force
        clock.advance(POLICY_MEMO_S)
        assert policy_for("a.test") == newer
    finally:
        worker.close()
        feed_side.close()
