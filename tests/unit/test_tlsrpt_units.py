"""Pure parts of TLS-RPT: the _smtp._tls grammar, Exim events and log lines, aggregation, back-off,
and the spool's loud refusal to drop outcomes when SQLite is full."""

from __future__ import annotations

import time

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogPublisher

from mtasts_resolver.config import TlsrptConfig
from mtasts_resolver.store import DeliveryRow
from mtasts_resolver.store.sqlite import SqliteStore
from mtasts_resolver.tlsrpt.report.aggregate import build_report
from mtasts_resolver.tlsrpt.feeds.exim_events import EximLogCorrelator, event_outcomes, parse_event
from mtasts_resolver.tlsrpt.model import FailureDetail, Outcome, PolicyType, ReportPolicy, ResultType
from mtasts_resolver.tlsrpt.report.record import Destination, NoTlsrpt, TlsrptRecord, parse_tlsrpt_records
from mtasts_resolver.store import FAILED, PENDING
from mtasts_resolver.tlsrpt.report.reporter import next_attempt
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

STS = ReportPolicy(PolicyType.STS, "a.test", ("version: STSv1", "mode: enforce", "mx: mx.a.test", "max_age: 9"),
                   ("mx.a.test",))


@pytest.mark.parametrize("records, expected", [
    (["v=TLSRPTv1; rua=mailto:r@a.test"], (Destination("mailto", "r@a.test"),)),
    (["v=TLSRPTv1;rua=mailto:r@a.test,https://c.test/x"],
     (Destination("mailto", "r@a.test"), Destination("https", "https://c.test/x"))),
    (["v=TLSRPTv1; rua=mailto:tls%2Dr@a.test ; ext=1;"], (Destination("mailto", "tls-r@a.test"),)),
    (["v=spf1 -all", "v=TLSRPTv1; rua=https://c.test/x"], (Destination("https", "https://c.test/x"),)),
    (["v=TLSRPTv1; rua=ftp://c.test/x,mailto:r@a.test"], (Destination("mailto", "r@a.test"),)),
])
def test_tlsrpt_record_parses(records, expected):
    result = parse_tlsrpt_records(records)
    assert isinstance(result, TlsrptRecord) and result.destinations == expected


@pytest.mark.parametrize("records", [
    [], ["v=TLSRPTv1; rua=mailto:r@a.test", "v=TLSRPTv1; rua=mailto:s@a.test"],   # exactly one
    ["v=TLSRPTv1"], ["v=TLSRPTv1; ext=1"],                                        # rua required
    ["v=TLSRPTv1; rua=mailto:r@a.test; rua=mailto:s@a.test"],                     # rua once
    ["v=TLSRPTv2; rua=mailto:r@a.test"], ["v=TLSRPTv1; rua=mailto:r@a.test;bad field"],
    ["v=TLSRPTv1; rua=https://c.test/a;b"], ["v=TLSRPTv1; rua=ftp://c.test/x"],
])
def test_tlsrpt_record_rejected(records):
    assert isinstance(parse_tlsrpt_records(records), NoTlsrpt)


def event(name: str, data: str = "", cipher: str = "", dane: str = "no", report: str = "0") -> str:
    return (f"tlsrpt-v1 event={name} domain=a.test host=mx.a.test ip=192.0.2.1 cipher={cipher} cv=yes "
            f"dane={dane} report={report} data={data}")


@pytest.mark.parametrize("line, expected", [
    (event("msg:delivery", cipher="TLS1.3:TLS_AES_256_GCM_SHA384:256"), (PolicyType.STS, None)),
    (event("msg:delivery"), None),                                    # plaintext: not a TLS session
    (event("tls:fail:connect", "certificate verify failed: hostname mismatch"),
     (PolicyType.STS, ResultType.CERTIFICATE_HOST_MISMATCH)),
    (event("tls:fail:connect", "(SSL_connect): certificate has expired"), (PolicyType.STS, ResultType.CERTIFICATE_EXPIRED)),
    (event("dane:fail", "dane-required"), (PolicyType.TLSA, ResultType.DANE_REQUIRED)),
    (event("dane:fail", "something new"), (PolicyType.TLSA, ResultType.VALIDATION_FAILURE)),
    (event("msg:host:defer", "a TLS session is required, but the server did not offer TLS support"),
     (PolicyType.STS, ResultType.STARTTLS_NOT_SUPPORTED)),
    (event("msg:host:defer", "Connection refused"), None),           # transient, not TLS
    # outbound certificate failures reach Exim's event_action as host defers
    (event("msg:host:defer", "TLS session: (SSL_connect): error:0A000086:SSL routines::certificate verify failed"),
     (PolicyType.STS, ResultType.VALIDATION_FAILURE)),
    (event("msg:host:defer", "TLS session: (SSL_connect): certificate has expired"),
     (PolicyType.STS, ResultType.CERTIFICATE_EXPIRED)),
    (event("msg:delivery", cipher="TLS1.3:x:256", report="1"), None),  # our own report mail
])
def test_exim_events(line, expected):
    outcomes = event_outcomes(parse_event(line), 0.0, lambda domain: STS)
    if expected is None:
        assert outcomes == []
        return
    [outcome] = outcomes
    assert outcome.policy.type is expected[0] and outcome.report_domain == "a.test"
    assert [f.result_type for f in outcome.failures] == ([] if expected[1] is None else [expected[1]])


def test_exim_event_format_is_strict():
    with pytest.raises(ValueError):
        parse_event("tlsrpt-v1 event=msg:delivery domain=a.test data=x")


def test_exim_main_log_lines():
    correlator = EximLogCorrelator(lambda domain: STS, "203.0.113.9")
    lines = [
        "2026-01-01 10:00:00 1rAbCd-000123-AB <= a@s.test H=localhost [127.0.0.1] P=esmtp S=9 id=x.tlsrpt@s.test",
        "2026-01-01 10:00:01 1rAbCd-000123-AB => r@a.test R=dnslookup T=remote_smtp H=mx.a.test [192.0.2.1] "
        "X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 OK\"",                      # report mail: skipped
        "2026-01-01 10:00:02 1rXyZw-000456-CD <= b@s.test H=localhost [127.0.0.1] P=esmtp S=9 id=y@s.test",
        "2026-01-01 10:00:03 1rXyZw-000456-CD => u@a.test R=dnslookup T=remote_smtp H=mx.a.test [192.0.2.1] "
        "X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 OK\"",
        "2026-01-01 10:00:04 1rXyZw-000456-CD == v@b.test R=dnslookup T=remote_smtp defer (-37) H=mx.b.test "
        "[192.0.2.2]: TLS session: (certificate verification failed): certificate has expired",
        "2026-01-01 10:00:05 1rXyZw-000456-CD == w@c.test R=dnslookup T=remote_smtp defer (-38) H=mx.c.test "
        "[192.0.2.3]: a TLS session is required, but the server did not offer TLS support",
        "2026-01-01 10:00:06 1rXyZw-000456-CD == x@d.test R=dnslookup T=remote_smtp defer (111) H=mx.d.test "
        "[192.0.2.4]: Connection refused",
    ]
    outcomes = [o for line in lines for o in correlator.feed(line, 0.0)]
    assert [(o.report_domain, [f.result_type for f in o.failures]) for o in outcomes] == [
        ("a.test", []), ("b.test", [ResultType.CERTIFICATE_EXPIRED]), ("c.test", [ResultType.STARTTLS_NOT_SUPPORTED])]
    assert outcomes[1].failures[0].sending_mta_ip == "203.0.113.9"
    assert outcomes[1].failures[0].receiving_ip == "192.0.2.2"


def test_aggregate_counts_sessions_once_and_details_per_type():
    session = Outcome(0.0, "a.test", STS, (FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_ip="192.0.2.1"),
                                           FailureDetail(ResultType.CERTIFICATE_HOST_MISMATCH)))
    rows = {}
    for outcome in [session, session, Outcome(0.0, "a.test", STS)]:
        for key in outcome.keys():
            rows[key] = rows.get(key, 0) + 1
    report = build_report("1970-01-01", [(k[2], k[3], k[4], n) for k, n in sorted(rows.items())],
                          organization_name="o", contact_info="c@s.test", report_id="r")
    [entry] = report["policies"]
    assert entry["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 2}
    assert sorted((d["result-type"], d["failed-session-count"]) for d in entry["failure-details"]) == [
        ("certificate-expired", 2), ("certificate-host-mismatch", 2)]
    assert entry["policy"] == {"policy-type": "sts", "policy-domain": "a.test", "mx-host": ["mx.a.test"],
                               "policy-string": list(STS.strings)}


def test_retry_backoff_doubles_and_stops_after_the_window():
    settings = TlsrptConfig(retry_initial_s=300, retry_window_s=86400)
    delivery = DeliveryRow("r", "https://c.test/", "sending", 1, 0.0, 1000.0)
    assert next_attempt(delivery, 1010.0, settings) == (PENDING, 1310.0)
    delivery = DeliveryRow("r", "https://c.test/", "sending", 4, 0.0, 1000.0)
    assert next_attempt(delivery, 5000.0, settings) == (PENDING, 5000.0 + 2400)
    assert next_attempt(delivery, 1000.0 + 86000, settings) == (PENDING, 1000.0 + 86400)   # capped at the window
    assert next_attempt(delivery, 1000.0 + 86400, settings)[0] == FAILED


def test_spool_full_database_is_loud_and_keeps_the_outcomes(tmp_path):
    """SQLite's max_page_count gives the same SQLITE_FULL error as a full disk."""
    store = SqliteStore(tmp_path / "spool.sqlite3")
    writer = store.outcome_writer()
    pages = writer.connection.execute("PRAGMA page_count").fetchone()[0]
    writer.connection.execute(f"PRAGMA max_page_count={pages}")
    spool = OutcomeSpool(global_reactor, writer, 0.01)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        outcomes = [Outcome(0.0, f"d{n}.test", STS) for n in range(2000)]
        spool.add(outcomes)
        deadline = time.monotonic() + 10   # a loaded machine may take a while; the first failure is enough
        while not any(e.get("log_level") is LogLevel.critical for e in events) and time.monotonic() < deadline:
            global_reactor.iterate(0.01)
        critical = [e for e in events if e.get("log_level") is LogLevel.critical]
        assert critical and "NOT spooled" in critical[0]["log_format"] and critical[0]["sessions"] == 2000
        assert spool.pending_sessions == 2000 and spool.spooled_sessions == 0
        writer.connection.execute("PRAGMA max_page_count=1073741823")
        _run(spool.stop())
        assert sum(n for *_, kind, _, n in [(r[0], r[1], r[2], r[3]) for r in store.outcome_counts(
            "1970-01-01", "d5.test")] if kind == "success") == 1
        assert len(store.unreported(["1970-01-01"])) == 2000
    finally:
        globalLogPublisher.removeObserver(events.append)
        store.close()


def _run(d: Deferred) -> None:
    """Spin the global reactor until ``d`` fires (the spool uses a real thread pool)."""
    result = []
    d.addBoth(result.append)
    while not result:
        global_reactor.iterate(0.01)
    if hasattr(result[0], "raiseException"):
        result[0].raiseException()
