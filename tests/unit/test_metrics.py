"""Metrics: counting at the service's edges, snapshots and their sum, the text exposition, the HTTP listener."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.metrics.counting import (
    MAX_MAP_LABELS,
    OTHER_MAP,
    CountingLookups,
    Tally,
    both,
    failure_types,
    sts_outcome,
)
from mtasts_resolver.metrics.exposition import deliveries_by_transport, render
from mtasts_resolver.metrics.http import MAX_BODY_BYTES, MetricsResource, MetricsSite
from mtasts_resolver.metrics.share import read_snapshots, running, write_snapshot
from mtasts_resolver.metrics.snapshot import Snapshot, combine
from mtasts_resolver.policy.dane import DaneOutcome, DaneResult, HostResult, HostStatus
from mtasts_resolver.policy.model import FailureType, NoStsTxt, StsFailure, StsTxt
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.tlsrpt.model import ResultType

TXT = StsTxt("1", "v=STSv1; id=1")
FETCH_ERROR = StsFailure(FailureType.FETCH_ERROR, "timed out")
WEBPKI = StsFailure(FailureType.WEBPKI_INVALID, "expired")


def resolution(txt=TXT, fetched=None, dane=None) -> SimpleNamespace:
    return SimpleNamespace(domain="example.com", txt=txt, fetched=fetched, policy=None, dane=dane)


def host(status: HostStatus) -> HostResult:
    return HostResult("mx.example.com", status, "")


@pytest.mark.parametrize("res, outcome, failures", [
    (resolution(NoStsTxt("no record")), "none", []),
    (resolution(fetched=None), "cached", []),
    (resolution(fetched=object()), "cached", []),
    (resolution(fetched=WEBPKI), "failed", [ResultType.STS_WEBPKI_INVALID]),
    (resolution(txt=FETCH_ERROR), "failed", [ResultType.STS_POLICY_FETCH_ERROR]),
    (resolution(NoStsTxt("none"), dane=DaneResult(DaneOutcome.TEMP, "servfail")), "none",
     [ResultType.DNSSEC_INVALID]),
    (resolution(NoStsTxt("none"), dane=DaneResult(DaneOutcome.DANE, "", hosts=(
        host(HostStatus.USABLE), host(HostStatus.UNUSABLE), host(HostStatus.FAILED)))), "none",
     [ResultType.TLSA_INVALID, ResultType.DNSSEC_INVALID]),
])
def test_resolution_outcomes_and_failure_types(res, outcome, failures):
    assert sts_outcome(res) == outcome
    assert failure_types(res) == failures


def test_a_fetched_policy_is_fetched():
    policy = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")
    assert sts_outcome(resolution(fetched=policy)) == "fetched"


def test_tally_counts_resolutions_by_kind_and_failures_by_type():
    tally = Tally()
    tally.resolution(resolution(fetched=FETCH_ERROR, dane=DaneResult(DaneOutcome.ABSENT, "no TLSA")))
    tally.resolution(resolution(fetched=FETCH_ERROR))
    assert dict(tally.counters) == {("resolutions_total", "sts", "failed"): 2,
                                    ("resolutions_total", "dane", "absent"): 1,
                                    ("policy_failures_total", "sts-policy-fetch-error"): 2}


def test_a_counting_bug_never_reaches_the_lookup():
    tally = Tally()
    tally.resolution(SimpleNamespace(domain="broken.example"))   # no txt: counting raises inside
    assert not tally.counters


class FakeService:
    def __init__(self) -> None:
        self.pending: Deferred[Answer] | None = None

    def lookup(self, map_name: str, key: str) -> Answer | Deferred[Answer]:
        if key == "cold.example":
            self.pending = Deferred()
            return self.pending
        return Answer(AnswerKind.FOUND, "secure") if key == "hot.example" else NOT_FOUND


def test_counting_lookups_tells_hot_from_cold():
    tally, service = Tally(), FakeService()
    lookups = CountingLookups(service, tally)
    assert lookups.lookup("postfix", "hot.example") == Answer(AnswerKind.FOUND, "secure")
    lookups.lookup("postfix", ".bad")
    answers = []
    lookups.lookup("tlsrpt", "cold.example").addCallback(answers.append)
    assert ("lookups_total", "tlsrpt", "temp", "cold") not in tally.counters   # not answered yet
    service.pending.callback(Answer(AnswerKind.TEMP, "later"))
    assert answers == [Answer(AnswerKind.TEMP, "later")]
    assert dict(tally.counters) == {("lookups_total", "postfix", "found", "hot"): 1,
                                    ("lookups_total", "postfix", "notfound", "hot"): 1,
                                    ("lookups_total", "tlsrpt", "temp", "cold"): 1}


def test_map_names_a_client_makes_up_are_bounded():
    tally = Tally()
    for index in range(MAX_MAP_LABELS + 50):
        tally.lookup(f"map{index}", NOT_FOUND, "hot")
    tally.lookup("map0", NOT_FOUND, "hot")   # one of the first ones keeps its own series
    maps = {series[1] for series in tally.counters}
    assert len(maps) == MAX_MAP_LABELS + 1
    assert tally.counters[("lookups_total", OTHER_MAP, "notfound", "hot")] == 50
    assert tally.counters[("lookups_total", "map0", "notfound", "hot")] == 2


def test_both_calls_every_hook():
    seen = []
    both(seen.append, lambda r: seen.append(("second", r)))("r")
    assert seen == ["r", ("second", "r")]


def snapshot(worker: int, lookups: int, domains: float) -> Snapshot:
    return Snapshot(worker, 100 + worker, 1.0, 2.0, {("lookups_total", "postfix", "found", "hot"): lookups},
                    {("cached_domains",): domains}, {"dane": "DANE on"})


def test_snapshot_round_trips_through_json():
    original = snapshot(1, 7, 3.0)
    assert Snapshot.from_json(original.to_json()) == original


@pytest.mark.parametrize("snapshots, counters, gauges", [
    ([], {}, {}),
    ([snapshot(0, 3, 5)], {("lookups_total", "postfix", "found", "hot"): 3}, {("cached_domains", "0"): 5}),
    ([snapshot(0, 3, 5), snapshot(1, 4, 6)], {("lookups_total", "postfix", "found", "hot"): 7},
     {("cached_domains", "0"): 5, ("cached_domains", "1"): 6}),
])
def test_counters_add_up_and_gauges_stay_per_worker(snapshots, counters, gauges):
    assert combine(snapshots) == (counters, gauges)


def test_exposition_has_prefix_units_and_escaped_labels():
    text = render({("lookups_total", "post\"fix", "found", "hot"): 3, ("limit_hits_total", "daemon.max_connections"): 2},
                  {("cached_domains", "0"): 5.0},
                  deliveries_by_transport([("mailto:a@b.example", "sent"), ("mailto:c@d.example", "sent"),
                                           ("https://r.example/v1", "failed")])).decode()
    assert 'mtasts_resolver_lookups_total{map="post\\"fix",path="hot",result="found"} 3.0' in text
    assert 'mtasts_resolver_limit_hits_total{limit="daemon.max_connections"} 2.0' in text
    assert 'mtasts_resolver_cached_domains{worker="0"} 5.0' in text
    assert 'mtasts_resolver_report_deliveries{state="sent",transport="mailto"} 2.0' in text
    assert 'mtasts_resolver_report_deliveries{state="failed",transport="https"} 1.0' in text
    assert "# TYPE mtasts_resolver_resolutions_total counter" in text   # said even before the first one


def connect(site: MetricsSite) -> tuple[object, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    if channel is None:
        return None, StringTransport()
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


@pytest.fixture
def site():
    hits = []
    made = MetricsSite(MetricsResource(lambda: b"metrics text\n"), 2, 10, lambda key, detail: hits.append(key))
    made.hits = hits
    return made


@pytest.mark.parametrize("request_line, status, body", [
    (b"GET /metrics HTTP/1.1", b"200", b"metrics text\n"),
    (b"GET /other HTTP/1.1", b"404", b"only /metrics is here\n"),
    (b"POST /metrics HTTP/1.1", b"405", None),
])
def test_only_get_metrics_is_served(site, request_line, status, body):
    channel, transport = connect(site)
    channel.dataReceived(request_line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    reply = transport.value()
    assert reply.startswith(b"HTTP/1.1 " + status)
    if body is not None:
        assert reply.endswith(body)
    if status == b"200":
        assert b"text/plain; version=0.0.4" in reply


def test_connections_past_the_cap_are_refused_and_counted(site):
    first, _ = connect(site)
    second, _ = connect(site)
    third, _ = connect(site)
    assert first is not None and second is not None and third is None
    assert site.hits == ["metrics.max_connections"]
    first.connectionLost(None)
    assert connect(site)[0] is not None   # a slot is free again


def test_a_request_body_is_dropped_and_a_large_one_aborts(site):
    channel, transport = connect(site)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    channel.dataReceived(b"x" * (MAX_BODY_BYTES + 1))
    assert transport.disconnecting
    assert not transport.value()   # aborted before any reply


def test_snapshot_files_are_replaced_and_torn_ones_skipped(tmp_path):
    write_snapshot(tmp_path, snapshot(0, 1, 1))
    write_snapshot(tmp_path, snapshot(0, 2, 1))   # replaced, not appended
    (tmp_path / "worker-1.json").write_text('{"worker": 1, "pid"')
    write_snapshot(tmp_path, snapshot(3, 9, 9))   # outside workers 0..2: not read
    assert read_snapshots(tmp_path, 3) == [snapshot(0, 2, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-0.json", "worker-1.json", "worker-3.json"]


def test_a_snapshot_of_a_gone_process_is_not_running():
    import os

    assert running(dataclasses.replace(snapshot(0, 1, 1), pid=os.getpid()))
    assert not running(dataclasses.replace(snapshot(0, 1, 1), pid=2 ** 22 + 1))   # above pid_max's default
