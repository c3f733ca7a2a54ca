"""The feed parsers as tables (libtlsrpt datagrams, the Postfix 3.7-3.9 log correlator) and the Exim event
socket's answers."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mtasts_resolver.store import StoreError
from mtasts_resolver.tlsrpt.feeds.datagram import DatagramError, parse_datagram
from mtasts_resolver.tlsrpt.feeds.exim_events import EximEventFactory
from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator
from mtasts_resolver.tlsrpt.model import PolicyType, ReportPolicy, ResultType

STS_LINES = ("version: STSv1", "mode: enforce", "mx: mx.a.test", "max_age: 86400")


def datagram(policies: list[dict], **top) -> bytes:
    return json.dumps({"d": "a.test", "pr": "v=TLSRPTv1; rua=mailto:r@a.test", "dpv": "1", "policies": policies,
                       **top}).encode()


def policy(kind: int = 2, final: int = 0, details: list[dict] = (), **extra) -> dict:
    return {"policy-type": kind, "policy-domain": "a.test", "policy-string": list(STS_LINES),
            "mx-host": ["mx.a.test"], "failure-details": list(details), "t": len(details), "f": final, **extra}


@pytest.mark.parametrize("data, expected", [
    # (policy type, policy domain, failed, [result types])
    (datagram([policy()]), [(PolicyType.STS, "a.test", False, [])]),
    (datagram([policy(final=1, details=[{"c": 202, "n": "mx.a.test", "r": "192.0.2.1"}])]),
     [(PolicyType.STS, "a.test", True, [ResultType.CERTIFICATE_HOST_MISMATCH])]),
    # one MX failed, the next one worked: a detail in a successful session
    (datagram([policy(final=0, details=[{"c": 201}])]), [(PolicyType.STS, "a.test", False,
                                                           [ResultType.STARTTLS_NOT_SUPPORTED])]),
    (datagram([policy(kind=1)]), [(PolicyType.TLSA, "a.test", False, [])]),
    (datagram([policy(kind=9)]), [(PolicyType.NO_POLICY_FOUND, "a.test", False, [])]),
    (datagram([{"policy-type": 9, "f": 0}]), [(PolicyType.NO_POLICY_FOUND, "a.test", False, [])]),  # defaults
    (datagram([policy(), policy(kind=1, final=1, details=[{"c": 305}])]),
     [(PolicyType.STS, "a.test", False, []), (PolicyType.TLSA, "a.test", True, [ResultType.DNSSEC_INVALID])]),
    (datagram([policy()], d="A.Test."), [(PolicyType.STS, "a.test", False, [])]),          # normalised
])
def test_datagram_outcomes(data, expected):
    outcomes = parse_datagram(data, 1000.0)
    assert [(o.policy.type, o.policy.domain, o.failed, [f.result_type for f in o.failures]) for o in outcomes] \
        == expected
    assert all(o.report_domain == "a.test" and o.at == 1000.0 for o in outcomes)


def test_dane_under_the_mx_host_goes_both_ways():
    """Postfix >= 3.10 names the TLSA base domain (the MX host) as policy-domain: the recipient domain's
    report gets the session with policy-domain = the recipient, the MX host's own report with its name."""
    data = datagram([policy(kind=1, final=1, details=[{"c": 203, "n": "mx.a.test"}],
                            **{"policy-domain": "mx.a.test", "policy-string": ["3 1 1 abcd"], "mx-host": []})])
    outcomes = parse_datagram(data, 0.0)
    assert [(o.report_domain, o.policy.domain, o.policy.strings, o.failed) for o in outcomes] == [
        ("a.test", "a.test", ("3 1 1 abcd",), True), ("mx.a.test", "mx.a.test", ("3 1 1 abcd",), True)]
    assert all(o.policy.type is PolicyType.TLSA and o.failures == outcomes[0].failures for o in outcomes)


def test_datagram_detail_fields_are_copied():
    detail = {"c": 203, "s": "192.0.2.9", "n": "mx.a.test", "h": "helo.a.test", "r": "192.0.2.1",
              "a": "info", "f": "reason"}
    [outcome] = parse_datagram(datagram([policy(final=1, details=[detail])]), 0.0)
    assert outcome.failures[0].to_json() == {
        "result-type": "certificate-not-trusted", "sending-mta-ip": "192.0.2.9", "receiving-mx-hostname": "mx.a.test",
        "receiving-mx-helo": "helo.a.test", "receiving-ip": "192.0.2.1", "additional-information": "info",
        "failure-reason-code": "reason"}


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b"\xff", datagram([]), datagram([policy()], dpv="2"), datagram([policy()], d=7),
    datagram([policy()], d="[192.0.2.1]"), datagram([policy(kind=3)]), datagram([policy(final=2)]),
    datagram([policy(details=[{"c": 999}])]), datagram([policy(details=["x"])]), datagram(["x"]),
    datagram([policy(**{"failure-details": {}})]), datagram([policy(**{"mx-host": [1]})]),
    datagram([policy(**{"policy-string": "version: STSv1"})]), datagram([policy(kind=2.0)]),
])
def test_datagram_rejected(data):
    with pytest.raises(DatagramError):
        parse_datagram(data, 0.0)


# -- the Postfix log correlator -------------------------------------------------------------------------

P = "Mar  1 10:00:00 host postfix"
STS = ReportPolicy(PolicyType.STS, "a.test", STS_LINES, ("mx.a.test",))


def sts_for_a(domain: str) -> ReportPolicy:
    return STS if domain == "a.test" else ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)


def status(pid: int, qid: str, rcpt: str, relay: str, status_word: str, text: str) -> str:
    return (f"{P}/smtp[{pid}]: {qid}: to=<{rcpt}>, relay={relay}, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, "
            f"status={status_word} ({text})")


VERIFIED = f"{P}/smtp[10]: Verified TLS connection established to mx.a.test[192.0.2.1]:25: TLSv1.3 with cipher x"
CASES = [
    ("verified TLS session", [VERIFIED, status(10, "Q1", "u@a.test", "mx.a.test[192.0.2.1]:25", "sent", "250 ok")],
     [("a.test", [])]),
    ("two recipients, one session",
     [VERIFIED, status(10, "Q1", "u@a.test", "mx.a.test[192.0.2.1]:25", "sent", "250 ok"),
      status(10, "Q1", "v@a.test", "mx.a.test[192.0.2.1]:25", "sent", "250 ok")], [("a.test", [])]),
    ("hostname mismatch",
     [f"{P}/smtp[11]: server certificate verification failed for mx.a.test[192.0.2.1]:25: num=62:hostname mismatch",
      f"{P}/smtp[11]: Untrusted TLS connection established to mx.a.test[192.0.2.1]:25: TLSv1.3",
      status(11, "Q2", "u@a.test", "mx.a.test[192.0.2.1]:25", "deferred", "Server certificate not verified")],
     [("a.test", [ResultType.CERTIFICATE_HOST_MISMATCH])]),
    ("no STARTTLS", [status(12, "Q3", "u@a.test", "mx.a.test[192.0.2.1]:25", "deferred",
                            "TLS is required, but was not offered by host mx.a.test[192.0.2.1]")],
     [("a.test", [ResultType.STARTTLS_NOT_SUPPORTED])]),
    ("plaintext without a policy is not a TLS session",
     [status(13, "Q4", "u@b.test", "mx.b.test[192.0.2.2]:25", "sent", "250 ok")], []),
    ("no connection: nothing to count", [status(14, "Q5", "u@a.test", "none", "deferred", "connect refused")], []),
    ("the status text may contain status=", [VERIFIED, status(10, "Q6", "u@a.test", "mx.a.test[192.0.2.1]:25",
                                                              "sent", "250 status=ok (queued)")], [("a.test", [])]),
    ("the report's own mail is never counted",
     [f"{P}/cleanup[5]: Q7: message-id=<20260301.a.test.ab.tlsrpt@s.test>", VERIFIED,
      status(10, "Q7", "r@a.test", "mx.a.test[192.0.2.1]:25", "sent", "250 ok")], []),
    ("TLS of another host is not this session's",
     [f"{P}/smtp[15]: server certificate verification failed for mx.x.test[192.0.2.9]:25: certificate has expired",
      status(15, "Q8", "u@a.test", "mx.a.test[192.0.2.1]:25", "deferred", "Server certificate not verified")],
     [("a.test", [ResultType.CERTIFICATE_NOT_TRUSTED])]),
]


@pytest.mark.parametrize("lines, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_postfix_correlator(lines, expected):
    correlator = PostfixLogCorrelator(sts_for_a, "203.0.113.9")
    outcomes = [o for line in lines for o in correlator.feed(line, 0.0)]
    assert [(o.report_domain, [f.result_type for f in o.failures]) for o in outcomes] == expected
    for outcome in outcomes:
        assert outcome.policy == sts_for_a(outcome.report_domain)
        assert all(f.sending_mta_ip == "203.0.113.9" and f.receiving_ip == "192.0.2.1" for f in outcome.failures)


# -- the Exim event socket: OK only once committed, answers in order ------------------------------------

class HeldSpool:
    """A spool whose commits the test completes by hand."""

    def __init__(self) -> None:
        self.added: list = []
        self.waiting: list[Deferred] = []

    def add(self, outcomes, cursor=None) -> None:
        self.added += outcomes

    def when_committed(self) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d


def exim_event(name: str, cipher: str = "TLS1.3:x:256") -> bytes:
    return (f"tlsrpt-v1 event={name} domain=a.test host=mx.a.test ip=192.0.2.1 cipher={cipher} cv=yes dane=no "
            f"report=0 data=\n").encode()


def test_exim_ok_comes_after_the_commit_and_in_order():
    spool = HeldSpool()
    protocol = EximEventFactory(spool, sts_for_a, "", Clock()).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(exim_event("msg:delivery") + b"garbage\n" + exim_event("msg:delivery"))
    assert transport.value() == b"" and len(spool.added) == 2      # nothing answered before the commit
    spool.waiting[0].callback(None)
    assert transport.value().split(b"\n")[:2] == [b"OK", b"ERR expected 'tlsrpt-v1 ... data=...'"]
    protocol.readConnectionLost()                                   # Exim half-closes: wait for the last answer
    assert not transport.disconnecting
    spool.waiting[1].errback(StoreError("stopped with 1 TLS-RPT sessions not spooled"))
    assert transport.value().split(b"\n")[2].startswith(b"ERR not spooled")
    assert transport.disconnecting
