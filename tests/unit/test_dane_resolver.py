"""The DANE walk (MX → A/AAAA → TLSA) against a table of made-up resolver answers.

The fake DNS answers at once, so the walk runs to completion synchronously:
no reactor, no network.  The same scenarios run against real nsd + unbound
in test_dane_e2e.py.
"""

from __future__ import annotations

import hashlib

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from mtasts_resolver.config import DaneConfig
from mtasts_resolver.net.dane_resolver import DaneWalk
from mtasts_resolver.net.dns import DnsFailure, RRAnswer
from mtasts_resolver.net.dns_wire import Address, Mx
from mtasts_resolver.policy.dane import DaneOutcome, HostStatus, TlsaRecord

DIGEST = hashlib.sha256(b"key").hexdigest()


def rr(rdtype: str, *texts: str) -> tuple:
    """Records as DnsClient returns them, from their presentation form ("10 mx.example.", "3 1 1 ab12")."""
    def one(text: str):
        if rdtype in ("A", "AAAA"):
            return Address(text)
        if rdtype == "MX":
            preference, host = text.split()
            return Mx(int(preference), host.rstrip(".").lower() or ".")
        usage, selector, mtype, data = text.split(maxsplit=3)
        return TlsaRecord(int(usage), int(selector), int(mtype), bytes.fromhex(data.replace(" ", "")))
    return tuple(one(text) for text in texts)


def ok(rdtype: str, *texts: str, secure: bool = True, ttl: int = 300, canonical: str = "",
       cnames: tuple = ()) -> RRAnswer:
    return RRAnswer(rr(rdtype, *texts), secure, ttl, canonical_name=canonical, cnames=cnames)


def nodata(secure: bool = True, ttl: int = 60) -> RRAnswer:
    return RRAnswer((), secure, ttl)


def nxdomain(secure: bool = True, ttl: int = 60) -> RRAnswer:
    return RRAnswer((), secure, ttl, nxdomain=True)


SERVFAIL = DnsFailure("no server answered (SERVFAIL or refused)")


class FakeDns:
    """Answers from a dict; a name/type not in it is a validated NXDOMAIN."""

    def __init__(self, answers: dict[tuple[str, str], RRAnswer | DnsFailure], nameservers=("127.0.0.1",)) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []
        self.nameservers = list(nameservers)

    def query(self, name: str, rdtype: str) -> Deferred:
        self.asked.append((name, rdtype))
        answer = self.answers.get((name, rdtype), nxdomain())
        return fail(answer) if isinstance(answer, DnsFailure) else succeed(answer)


def host_ok(name: str, addr: str = "192.0.2.1", *, secure: bool = True, tlsa: tuple[str, ...] | None = None,
            tlsa_secure: bool = True) -> dict:
    out = {(name, "A"): ok("A", addr, secure=secure), (name, "AAAA"): nodata(secure)}
    if tlsa is not None:
        out[(f"_25._tcp.{name}", "TLSA")] = ok("TLSA", *tlsa, secure=tlsa_secure, ttl=120)
    return out


def walk(answers: dict, domain: str = "example.test", settings: DaneConfig = DaneConfig()):
    fake = FakeDns(answers)
    results = []
    DaneWalk(Clock(), fake, settings).resolve(domain).addCallback(results.append)
    assert results, "the walk did not complete synchronously"
    return results[0], fake


EE = f"3 1 1 {DIGEST}"
TA = f"2 0 1 {DIGEST}"


def scenario(mx: RRAnswer | DnsFailure, *hosts: dict) -> dict:
    answers: dict = {("example.test", "MX"): mx}
    for h in hosts:
        answers.update(h)
    return answers


WALK_TABLE = {
    "all-ee": (scenario(ok("MX", "10 mx1.example.test.", "20 mx2.example.test."),
                        host_ok("mx1.example.test", tlsa=(EE,)), host_ok("mx2.example.test", tlsa=(EE,))),
               DaneOutcome.DANE_ONLY),
    "ta": (scenario(ok("MX", "10 mx1.example.test."), host_ok("mx1.example.test", tlsa=(TA,))),
           DaneOutcome.DANE_ONLY),
    "only-unusable": (scenario(ok("MX", "10 mx1.example.test."),
                               host_ok("mx1.example.test", tlsa=(f"0 0 1 {DIGEST}", f"3 1 1 {DIGEST[:40]}"))),
                      DaneOutcome.DANE),
    "no-tlsa": (scenario(ok("MX", "10 mx1.example.test."), host_ok("mx1.example.test")), DaneOutcome.ABSENT),
    "insecure-mx": (scenario(ok("MX", "10 mx1.example.test.", secure=False),
                             host_ok("mx1.example.test", tlsa=(EE,))), DaneOutcome.ABSENT),
    "insecure-host": (scenario(ok("MX", "10 mx1.other.test."), host_ok("mx1.other.test", secure=False)),
                      DaneOutcome.ABSENT),
    "partial-no-tlsa": (scenario(ok("MX", "10 mx1.example.test.", "20 mx2.example.test."),
                                 host_ok("mx1.example.test", tlsa=(EE,)), host_ok("mx2.example.test")),
                        DaneOutcome.DANE),
    "partial-insecure-host": (scenario(ok("MX", "10 mx1.example.test.", "20 mx2.other.test."),
                                       host_ok("mx1.example.test", tlsa=(EE,)),
                                       host_ok("mx2.other.test", secure=False)), DaneOutcome.DANE),
    "partial-failed-host": (scenario(ok("MX", "10 mx1.example.test.", "20 mx2.bogus.test."),
                                     host_ok("mx1.example.test", tlsa=(EE,)),
                                     {("mx2.bogus.test", "A"): SERVFAIL, ("mx2.bogus.test", "AAAA"): SERVFAIL}),
                            DaneOutcome.DANE),
    "tlsa-servfail-only-host": (scenario(ok("MX", "10 mx1.example.test."),
                                         {**host_ok("mx1.example.test"),
                                          ("_25._tcp.mx1.example.test", "TLSA"): SERVFAIL}), DaneOutcome.TEMP),
    "insecure-tlsa": (scenario(ok("MX", "10 mx1.example.test."),
                               host_ok("mx1.example.test", tlsa=(EE,), tlsa_secure=False)), DaneOutcome.ABSENT),
    "mx-servfail": (scenario(SERVFAIL), DaneOutcome.TEMP),
    "null-mx": (scenario(ok("MX", "0 .")), DaneOutcome.ABSENT),
    "nxdomain": (scenario(nxdomain()), DaneOutcome.ABSENT),
    "insecure-nxdomain": (scenario(nxdomain(secure=False)), DaneOutcome.ABSENT),
    "implicit-mx": (scenario(nodata(), host_ok("example.test", tlsa=(EE,))), DaneOutcome.DANE_ONLY),
    "implicit-mx-no-address": (scenario(nodata(), {("example.test", "A"): nodata(),
                                                   ("example.test", "AAAA"): nodata()}), DaneOutcome.ABSENT),
    "mx-without-address-ignored": (scenario(ok("MX", "10 mx1.example.test.", "20 gone.example.test."),
                                            host_ok("mx1.example.test", tlsa=(EE,))), DaneOutcome.DANE_ONLY),
    "one-family-fails-other-secure": (scenario(ok("MX", "10 mx1.example.test."),
                                               {**host_ok("mx1.example.test", tlsa=(EE,)),
                                                ("mx1.example.test", "AAAA"): SERVFAIL}), DaneOutcome.DANE_ONLY),
    "one-family-fails-other-insecure": (scenario(ok("MX", "10 mx1.example.test."),
                                                 {**host_ok("mx1.example.test", secure=False),
                                                  ("mx1.example.test", "AAAA"): SERVFAIL}), DaneOutcome.TEMP),
}


@pytest.mark.parametrize("name", list(WALK_TABLE))
def test_walk(name):
    answers, outcome = WALK_TABLE[name]
    result, _ = walk(answers)
    assert result.outcome is outcome, result.reason


def cname_host(alias: str, target: str, *, secure: bool = True) -> dict:
    chain = ((alias, target),)
    return {(alias, "A"): ok("A", "192.0.2.7", secure=secure, canonical=target, cnames=chain),
            (alias, "AAAA"): RRAnswer((), secure, 60, canonical_name=target, cnames=chain)}


def test_cname_mx_host_tlsa_at_the_expanded_name_first():
    answers = scenario(ok("MX", "10 mail.example.test."), cname_host("mail.example.test", "mx.hoster.test"),
                       {("_25._tcp.mx.hoster.test", "TLSA"): ok("TLSA", EE),
                        ("_25._tcp.mail.example.test", "TLSA"): ok("TLSA", TA)})
    result, fake = walk(answers)
    assert result.outcome is DaneOutcome.DANE_ONLY
    assert result.hosts[0].tlsa_base == "mx.hoster.test"
    assert ("_25._tcp.mail.example.test", "TLSA") not in fake.asked


def test_cname_mx_host_falls_back_to_the_original_name():
    answers = scenario(ok("MX", "10 mail.example.test."), cname_host("mail.example.test", "mx.hoster.test"),
                       {("_25._tcp.mx.hoster.test", "TLSA"): nxdomain(),
                        ("_25._tcp.mail.example.test", "TLSA"): ok("TLSA", EE)})
    result, _ = walk(answers)
    assert result.outcome is DaneOutcome.DANE_ONLY
    assert result.hosts[0].tlsa_base == "mail.example.test"


def test_cname_into_an_unsigned_zone_is_insecure():
    answers = scenario(ok("MX", "10 mail.example.test."),
                       cname_host("mail.example.test", "mx.unsigned.test", secure=False),
                       {("_25._tcp.mail.example.test", "TLSA"): ok("TLSA", EE)})
    result, fake = walk(answers)
    assert result.outcome is DaneOutcome.ABSENT
    assert result.hosts[0].status is HostStatus.INSECURE
    assert not any(rdtype == "TLSA" for _, rdtype in fake.asked)


def test_no_tlsa_lookup_for_insecure_hosts_and_host_details():
    answers = WALK_TABLE["partial-insecure-host"][0]
    result, fake = walk(answers)
    assert ("_25._tcp.mx2.other.test", "TLSA") not in fake.asked
    mx1, mx2 = result.hosts
    assert (mx1.status, mx2.status) == (HostStatus.USABLE, HostStatus.INSECURE)
    assert [str(lookup) for lookup in mx1.lookups] == [
        "mx1.example.test A [AD]: 192.0.2.1", "mx1.example.test AAAA [AD]: NODATA",
        f"_25._tcp.mx1.example.test TLSA [AD]: 3 1 1 {DIGEST}"]
    assert str(result.mx) == "example.test MX [AD]: 10 mx1.example.test, 20 mx2.other.test"


def test_ttl_is_the_smallest_of_mx_addresses_and_tlsa():
    result, _ = walk(WALK_TABLE["all-ee"][0])
    assert result.ttl == 60   # the AAAA NODATA's negative TTL


def test_mx_hosts_are_looked_up_with_bounded_concurrency():
    hosts = [f"mx{i}.example.test" for i in range(10)]
    answers = {("example.test", "MX"): ok("MX", *(f"10 {h}." for h in hosts))}
    pending: list[Deferred] = []

    class SlowDns(FakeDns):
        def query(self, name, rdtype):
            if rdtype == "MX":
                return super().query(name, rdtype)
            self.asked.append((name, rdtype))
            d: Deferred = Deferred()
            pending.append(d)
            return d

    fake = SlowDns(answers)
    DaneWalk(Clock(), fake, DaneConfig(host_concurrency=3)).resolve("example.test")
    hosts_started = {name for name, rdtype in fake.asked if rdtype == "A"}
    assert len(hosts_started) == 3


def test_the_whole_walk_has_one_deadline():
    clock = Clock()

    class HangingDns(FakeDns):
        def query(self, name, rdtype):
            self.asked.append((name, rdtype))
            return Deferred()

    results = []
    DaneWalk(clock, HangingDns({}), DaneConfig(timeout_s=4)).resolve("example.test").addCallback(results.append)
    clock.advance(3.9)
    assert results == []
    clock.advance(0.2)
    assert results[0].outcome is DaneOutcome.TEMP and "longer than 4 s" in results[0].reason
