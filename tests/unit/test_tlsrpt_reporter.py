"""The reporter's state machine on a real SQLite file, with a fake clock, fake DNS and fake deliverers:
which (day, domain) gets a report, what each destination's delivery goes through, and that one bad
record, destination or deliverer never stops the others."""

from __future__ import annotations

import gzip
import random
import json

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mtasts_resolver.app.report import run_status
from mtasts_resolver.config import TlsrptConfig
from mtasts_resolver.net.dns import DnsFailure
from mtasts_resolver.store import FAILED, NO_RECORD, PENDING, READY, SENDING, SENT, SKIPPED, UNCERTAIN, DeliveryRow
from mtasts_resolver.store.sqlite import SqliteStore
from mtasts_resolver.tlsrpt.model import FailureDetail, Outcome, ReportPolicy, PolicyType, ResultType, day_bounds
from mtasts_resolver.tlsrpt.report.deliver import DeliveryFailed
from mtasts_resolver.tlsrpt.report.reporter import Deliverers, Reporter

DAY = "2026-03-01"
DAY_END = day_bounds(DAY)[1]
SETTINGS = TlsrptConfig(organization_name="Org", contact_info="tlsrpt@s.test", dkim_selector="k",
                        dkim_key_file="/nonexistent", send_delay_max_s=0, retry_initial_s=300, retry_window_s=3600)

RECORDS = {
    "a.test": ["v=TLSRPTv1; rua=mailto:r@a.test,https://c.test/r"],
    "b.test": [],
    "c.test": ["v=TLSRPTv1; rua=https://[x"],                          # a stranger's broken record
    "e.test": ["v=TLSRPTv1; rua=https://a_b.test/r,mailto:r@e.test"],  # one unusable destination
}


class FakeDns:
    async def txt(self, name: str) -> list[str]:
        domain = name.removeprefix("_smtp._tls.")
        if domain not in RECORDS:
            raise DnsFailure(f"{name}: SERVFAIL")
        return RECORDS[domain]


class FakeMail:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.fail_with: Exception | None = None

    async def submit(self, mail_from: str, rcpt: str, message: bytes) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((mail_from, rcpt, message))
        return f"submitted to {rcpt}"


class FakeHttps:
    def __init__(self) -> None:
        self.posted: list[tuple[str, bytes]] = []
        self.fail_with: Exception | None = None

    async def post(self, url: str, body: bytes) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.posted.append((url, body))
        return f"POST {url}: HTTP 200"


class FakeDkim:
    def sign(self, message: bytes) -> bytes:
        return b"DKIM-Signature: fake\r\n" + message


@pytest.fixture
def world(tmp_path):
    store = SqliteStore(tmp_path / "cache.sqlite3")
    clock = Clock()
    mail, https = FakeMail(), FakeHttps()
    reporter = Reporter(clock, store, FakeDns(), SETTINGS, Deliverers(mail, https, FakeDkim()))
    yield store, clock, mail, https, reporter
    store.close()


def spool(store, day_start: float, *domains: str, failure: bool = True) -> None:
    writer = store.outcome_writer()
    rows = {}
    for domain in domains:
        policy = ReportPolicy(PolicyType.STS, domain, ("version: STSv1",), (f"mx.{domain}",))
        details = (FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_ip="192.0.2.1"),) if failure else ()
        for key in Outcome(day_start + 60, domain, policy, details).keys():
            rows[key] = rows.get(key, 0) + 1
    writer.add([(*key, n) for key, n in rows.items()], {})
    writer.close()


def run(reporter: Reporter, *days: str) -> list[str]:
    result = []
    Deferred.fromCoroutine(reporter.run(days)).addBoth(result.append)
    assert result, "the fakes answer at once: the run must finish without the reactor"
    if hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


def states(store) -> dict[str, tuple[str, dict[str, str]]]:
    return {r.report_domain: (r.state, {d.destination: d.state for d in store.deliveries(r.report_id)})
            for r in store.reports()}


def test_one_run_reports_every_domain_and_isolates_the_bad_ones(world):
    store, clock, mail, https, reporter = world
    spool(store, day_bounds(DAY)[0], "a.test", "b.test", "c.test", "d.test", "e.test")
    clock.advance(DAY_END)
    problems = run(reporter)
    assert states(store) == {
        "a.test": (READY, {"mailto:r@a.test": SENT, "https://c.test/r": SENT}),
        "b.test": (NO_RECORD, {}),
        "c.test": (NO_RECORD, {}),
        "e.test": (READY, {"mailto:r@e.test": SENT, "https://a_b.test/r": FAILED}),
    }
    [c_report] = [r for r in store.reports() if r.report_domain == "c.test"]
    assert "https://[x" in c_report.detail
    [e_report] = [r for r in store.reports() if r.report_domain == "e.test"]
    [rejected] = [a for a in store.attempts(e_report.report_id) if a.destination == "https://a_b.test/r"]
    assert rejected.result == "rejected" and "a_b.test" in rejected.detail
    assert [p.split(" ")[0] for p in problems] == ["d.test"]       # the DNS failure, tried again next run
    # b.test publishes nothing (it wants no reports); c.test's record and e.test's a_b rua are theirs to fix
    assert [u.split(" ")[0] for u in reporter.unusable] == ["c.test", e_report.report_id]
    assert [rcpt for _, rcpt, _ in mail.sent] == ["r@a.test", "r@e.test"]
    [(url, body)] = https.posted
    report = json.loads(gzip.decompress(body))
    assert report["date-range"]["start-datetime"] == "2026-03-01T00:00:00Z"
    assert report["policies"][0]["summary"] == {"total-successful-session-count": 0,
                                                "total-failure-session-count": 1}
    # The next run finds d.test's record again failing, everything else already decided.
    assert [p.split(" ")[0] for p in run(reporter)] == ["d.test"]
    assert len(mail.sent) == 2


def test_unfinished_day_waits_unless_asked_for(world):
    store, clock, mail, https, reporter = world
    spool(store, day_bounds(DAY)[0], "a.test")
    clock.advance(DAY_END - 3600)
    assert run(reporter) == [] and store.reports() == []
    assert run(reporter, DAY) == []
    assert states(store)["a.test"][0] == READY and len(mail.sent) == 1


def test_failed_attempts_back_off_then_give_up(world):
    store, clock, mail, https, reporter = world
    spool(store, day_bounds(DAY)[0], "a.test")
    clock.advance(DAY_END)
    https.fail_with = DeliveryFailed("POST https://c.test/r: HTTP 503")
    problems = run(reporter)
    assert len(problems) == 1 and "HTTP 503" in problems[0]
    [delivery] = [d for d in store.deliveries() if d.destination.startswith("https:")]
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (PENDING, 1, DAY_END + 300)
    clock.advance(299)
    run(reporter)                                                        # not due yet
    assert [d.attempts for d in store.deliveries() if d.destination.startswith("https:")] == [1]
    clock.advance(1)
    run(reporter)                                                        # second attempt, next after 600 s
    [delivery] = [d for d in store.deliveries() if d.destination.startswith("https:")]
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (PENDING, 2, DAY_END + 300 + 600)
    https.fail_with = None
    clock.advance(600)
    assert run(reporter) == []
    [delivery] = [d for d in store.deliveries() if d.destination.startswith("https:")]
    assert (delivery.state, delivery.attempts) == (SENT, 3)


def test_retry_window_ends_in_failed(world):
    store, clock, mail, https, reporter = world
    spool(store, day_bounds(DAY)[0], "a.test")
    clock.advance(DAY_END)
    mail.fail_with = DeliveryFailed("sendmail exited 75")
    for _ in range(20):
        run(reporter)
        clock.advance(SETTINGS.retry_window_s / 4)
    [delivery] = [d for d in store.deliveries() if d.destination.startswith("mailto:")]
    assert delivery.state == FAILED
    assert delivery.attempts >= 3


def test_an_unexpected_error_is_a_failed_attempt_not_a_stuck_sending(world):
    store, clock, mail, https, reporter = world
    spool(store, day_bounds(DAY)[0], "a.test")
    clock.advance(DAY_END)
    https.fail_with = ValueError("a URL the HTTP client could not take")
    problems = run(reporter)
    assert len(problems) == 1 and "unexpected error" in problems[0]
    [delivery] = [d for d in store.deliveries() if d.destination.startswith("https:")]
    assert delivery.state == PENDING and delivery.attempts == 1
    [attempt] = [a for a in store.attempts(delivery.report_id) if a.destination == delivery.destination]
    assert attempt.result == "error" and "ValueError" in attempt.detail


def test_a_crashed_run_leaves_uncertain_never_resent(world):
    store, clock, mail, https, reporter = world
    spool(store, day_bounds(DAY)[0], "a.test")
    clock.advance(DAY_END - 10)
    run(reporter, DAY)
    [mailto] = [d for d in store.deliveries() if d.destination.startswith("mailto:")]
    store.set_delivery(DeliveryRow(mailto.report_id, mailto.destination, SENDING, 1, 0.0, 0.0))
    clock.advance(3600)
    run(reporter)
    [mailto] = [d for d in store.deliveries() if d.destination.startswith("mailto:")]
    assert mailto.state == UNCERTAIN and len(mail.sent) == 1


def test_success_only_day_is_skipped_when_configured(tmp_path):
    store = SqliteStore(tmp_path / "cache.sqlite3")
    clock = Clock()
    settings = TlsrptConfig(**{**SETTINGS.__dict__, "report_all_success_days": False})
    reporter = Reporter(clock, store, FakeDns(), settings, Deliverers(FakeMail(), FakeHttps(), FakeDkim()))
    spool(store, day_bounds(DAY)[0], "a.test", failure=False)
    clock.advance(DAY_END)
    assert run(reporter) == []
    assert states(store) == {"a.test": (SKIPPED, {})}
    store.close()


def test_a_day_asked_for_goes_out_at_once_even_when_over(tmp_path):
    def reporter_for(name: str):
        store = SqliteStore(tmp_path / f"{name}.sqlite3")
        clock, mail = Clock(), FakeMail()
        settings = TlsrptConfig(**{**SETTINGS.__dict__, "send_delay_max_s": 14400})
        spool(store, day_bounds(DAY)[0], "a.test")
        clock.advance(DAY_END + 60)
        return store, mail, Reporter(clock, store, FakeDns(), settings, Deliverers(mail, FakeHttps(), FakeDkim()),
                                     random.Random(1))

    store, mail, reporter = reporter_for("timer")
    assert run(reporter) == [] and states(store)["a.test"][0] == READY
    assert mail.sent == [] and all(d.next_attempt_at > DAY_END + 60 for d in store.deliveries())  # random delay
    store.close()
    store, mail, reporter = reporter_for("asked")
    assert run(reporter, DAY) == []
    assert len(mail.sent) == 1                                                          # report --day: now
    store.close()


@pytest.mark.parametrize("problems, unusable, status", [
    ([], [], 0),
    (["d.test 2026-03-01: _smtp._tls lookup failed"], [], 75),
    ([], ["c.test 2026-03-01: malformed rua 'https://[x'"], 65),
    (["d.test 2026-03-01: _smtp._tls lookup failed"], ["c.test 2026-03-01: malformed rua"], 75),   # ours first
])
def test_a_runs_exit_status(problems, unusable, status):
    assert run_status(problems, unusable) == status
