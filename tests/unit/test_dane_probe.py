"""The DNSSEC validation probe: DANE only while the resolver demonstrably validates."""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
from twisted.logger import LogLevel, capturedLogs

from mtasts_resolver.config import DaneConfig
from mtasts_resolver.net.dane_resolver import DaneResolver, DaneWalk
from mtasts_resolver.net.dnssec_probe import ValidationProbe, is_loopback
from mtasts_resolver.net.dns import DnsFailure, RRAnswer
from mtasts_resolver.policy.dane import DaneOutcome
from twisted.internet.task import Clock


class ProbeDns:
    def __init__(self, nameservers=("127.0.0.1",)) -> None:
        self.nameservers = list(nameservers)
        self.answer: RRAnswer | DnsFailure = RRAnswer(("DNSKEY",), True, 300)
        self.asked: list[tuple[str, str]] = []

    def query(self, name, rdtype):
        self.asked.append((name, rdtype))
        return fail(self.answer) if isinstance(self.answer, DnsFailure) else succeed(self.answer)


def run(probe: ValidationProbe) -> list[dict]:
    with capturedLogs() as events:
        probe.check()
    return events


def test_validating_resolver_enables_dane():
    dns = ProbeDns()
    probe = ValidationProbe(dns, DaneConfig(probe_name="test."))
    changes: list[bool] = []
    probe.subscribe(changes.append)
    waiting = []
    probe.when_checked().addCallback(waiting.append)
    assert not probe.validating and waiting == []
    run(probe)
    assert probe.validating and waiting == [None]
    probe.when_checked().addCallback(waiting.append)
    assert waiting == [None, None]
    assert dns.asked == [("test.", "DNSKEY")]
    assert changes == [True]
    run(probe)
    assert changes == [True]  # no change, no notification


def test_missing_ad_bit_disables_dane_loudly_and_recovers():
    dns = ProbeDns()
    dns.answer = RRAnswer(("DNSKEY",), False, 300)
    probe = ValidationProbe(dns, DaneConfig())
    changes: list[bool] = []
    probe.subscribe(changes.append)
    events = run(probe)
    assert not probe.validating and changes == [False]
    assert "does not validate DNSSEC" in probe.status
    errors = [e for e in events if e["log_level"] is LogLevel.error]
    assert errors and "DANE DISABLED" in errors[0]["log_format"]
    dns.answer = RRAnswer(("DNSKEY",), True, 300)
    run(probe)
    assert probe.validating and changes == [False, True]


def test_failures_and_empty_answers_disable_dane():
    dns = ProbeDns()
    probe = ValidationProbe(dns, DaneConfig())
    dns.answer = DnsFailure("./DNSKEY: timed out")
    run(probe)
    assert not probe.validating and "timed out" in probe.status
    dns.answer = RRAnswer((), True, 0)
    run(probe)
    assert not probe.validating and "no records" in probe.status


def test_remote_resolver_is_refused_unless_allowed():
    dns = ProbeDns(nameservers=("192.0.2.53",))
    probe = ValidationProbe(dns, DaneConfig())
    run(probe)
    assert not probe.validating and "not on a loopback address" in probe.status
    assert dns.asked == []
    relaxed = ValidationProbe(dns, DaneConfig(require_loopback=False))
    run(relaxed)
    assert relaxed.validating


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("127.53.1.2") and is_loopback("::1")
    assert not is_loopback("192.0.2.1") and not is_loopback("https://dns.example/dns-query")


def test_resolver_makes_no_dane_lookups_while_disabled():
    dns = ProbeDns()
    dns.answer = RRAnswer(("DNSKEY",), False, 300)
    probe = ValidationProbe(dns, DaneConfig())
    resolver = DaneResolver(DaneWalk(Clock(), dns, DaneConfig()).resolve, probe)
    out = []
    resolver.resolve("example.test").addCallback(out.append)   # before the first check: waits for it
    assert out == []
    run(probe)
    assert out[0].outcome is DaneOutcome.DISABLED
    resolver.resolve("example.test").addCallback(out.append)
    assert out[1].outcome is DaneOutcome.DISABLED and "does not validate" in out[1].reason
    assert dns.asked == [(".", "DNSKEY")]
