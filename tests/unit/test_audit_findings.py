"""The audit's rules as a table: a clean domain, then one thing broken per row, and the exact findings."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from mtasts_resolver.audit.facts import (
    Certificate,
    DomainFacts,
    MxHost,
    SmtpSession,
    Spool,
    TlsaAnswer,
    TlsSession,
)
from mtasts_resolver.audit.findings import (
    EXIT_STATUS,
    Finding,
    Severity,
    exit_status,
    findings,
)
from mtasts_resolver.policy.dane import (
    DaneOutcome,
    DaneResult,
    HostResult,
    HostStatus,
    Lookup,
    TlsaRecord,
    temp,
)
from mtasts_resolver.policy.model import (
    CachedPolicy,
    FailureType,
    NoStsTxt,
    StsFailure,
    StsTxt,
)
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.tlsrpt.report.record import NoTlsrpt, parse_tlsrpt_records

NOW = 1_800_000_000.0
DAY = 86400.0
DOMAIN = "example.org"
MX = "mx.example.org"


def cert(name: str, days_left: float = 300) -> Certificate:
    return Certificate(f"der-{name}".encode(), f"spki-{name}".encode(), (name,), NOW + days_left * DAY)


def tls(name: str = MX, *, days_left: float = 300, errors: tuple[str, ...] = (), name_ok: bool = True) -> TlsSession:
    return TlsSession(chain=(cert(name, days_left), cert("ca", 3000)), verify_errors=errors, name_ok=name_ok)


def ee(name: str) -> TlsaRecord:
    return TlsaRecord(3, 1, 1, hashlib.sha256(f"spki-{name}".encode()).digest())


TA = TlsaRecord(2, 1, 1, hashlib.sha256(b"spki-ca").digest())


def policy(mode: str = "enforce", *mx: str, max_age: int = 604800):
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in (mx or (MX,))), f"max_age: {max_age}"]
    return parse_policy("\n".join(lines).encode())


def mx_host(host: str = MX, *, smtp: tuple[SmtpSession, ...] = (), tlsa: TlsaAnswer | None = None) -> MxHost:
    return MxHost(host, 10, ("192.0.2.1",), smtp=smtp or (SmtpSession("192.0.2.1", starttls=True, tls=tls(host)),),
                  tlsa=tlsa or TlsaAnswer(f"_25._tcp.{host}", (ee(host), TA), secure=True))


def dane(*hosts: HostResult, outcome: DaneOutcome = DaneOutcome.DANE_ONLY, secure: bool = True) -> DaneResult:
    return DaneResult(outcome, "test", Lookup(DOMAIN, "MX", (f"10 {MX}",), secure), hosts)


def usable(host: str = MX, *records: TlsaRecord) -> HostResult:
    return HostResult(host, HostStatus.USABLE, "test", tlsa_base=host, tlsa=records or (ee(host), TA))


CLEAN = DomainFacts(
    DOMAIN, mx=(mx_host(),), sts_records=("v=STSv1; id=1",), sts_txt=StsTxt("1", "v=STSv1; id=1"), policy=policy(),
    policy_tls=tls(f"mta-sts.{DOMAIN}"), tlsrpt=parse_tlsrpt_records([f"v=TLSRPTv1; rua=mailto:r@{DOMAIN}"]),
    dane=dane(usable()))


def no_sts(records: tuple[str, ...], reason: str) -> dict:
    return {"sts_records": records, "sts_txt": NoStsTxt(reason), "policy": None, "policy_tls": None}


def smtp(**session) -> dict:
    return {"mx": (mx_host(smtp=(SmtpSession("192.0.2.1", **session),)),)}


TWO_MX = (mx_host(), mx_host("mx2.example.org"))

# (name, changes to CLEAN, expected finding codes)
CASES = [
    ("clean", {}, set()),
    ("mx not covered, enforce", {"mx": TWO_MX, "dane": dane(usable(), usable("mx2.example.org"))},
     {"mx-not-covered"}),
    ("pattern without mx", {"policy": policy("enforce", MX, "*.old.example.org")}, {"pattern-without-mx"}),
    ("a one-label wildcard covers", {"policy": policy("enforce", "*.example.org")}, set()),
    ("a wildcard covers one label only", {"policy": policy("enforce", "*.example.org"),
                                          "mx": (mx_host("mx.eu.example.org"),)},
     {"mx-not-covered", "pattern-without-mx"}),
    ("policy invalid", {"policy": policy("enforce", "*.org")}, {"policy-invalid"}),
    ("no STARTTLS", smtp(starttls=False), {"starttls-missing"}),
    ("port 25 closed", smtp(error="connection refused"), {"mx-unreachable"}),
    ("one of two addresses without STARTTLS", {"mx": (mx_host(smtp=(
        SmtpSession("192.0.2.1", starttls=True, tls=tls()), SmtpSession("2001:db8::1", starttls=False))),)},
     {"starttls-missing"}),
    ("the TLSA records match one address's key only", {"mx": (mx_host(smtp=(
        SmtpSession("192.0.2.1", starttls=True, tls=tls()), SmtpSession("192.0.2.2", starttls=True, tls=tls("new")))),
        ), "dane": dane(usable(MX, ee(MX), ee("next")))}, {"tlsa-mismatch"}),   # a key change half done
    ("TLS fails after STARTTLS", smtp(starttls=True, tls=TlsSession(error="handshake failure")), {"tls-failed"}),
    ("chain invalid", smtp(starttls=True, tls=tls(errors=("self-signed certificate",))), {"mx-cert-untrusted"}),
    ("name mismatch", smtp(starttls=True, tls=tls(name_ok=False)), {"mx-cert-name"}),
    ("expiring within warn days", smtp(starttls=True, tls=tls(days_left=5)), {"mx-cert-expiring"}),
    ("expiring after warn days", smtp(starttls=True, tls=tls(days_left=30)), set()),
    ("expired", smtp(starttls=True, tls=tls(days_left=-2)), {"mx-cert-expired"}),
    ("policy host cert expiring", {"policy_tls": tls(f"mta-sts.{DOMAIN}", days_left=3)}, {"policy-cert-expiring"}),
    ("policy host cert misnamed", {"policy_tls": tls(f"mta-sts.{DOMAIN}", name_ok=False),
                                   "policy": StsFailure(FailureType.WEBPKI_INVALID, "not valid")},
     {"policy-cert-invalid"}),
    ("policy fetch fails", {"policy": StsFailure(FailureType.FETCH_ERROR, "404"), "policy_tls": None},
     {"policy-fetch-failed"}),
    ("TXT malformed", no_sts(("v=STSv1; id=a-b",), "malformed field"), {"sts-txt-malformed"}),
    ("two TXT records", no_sts(("v=STSv1; id=1", "v=STSv1; id=2"), "2 records"), {"sts-txt-multiple"}),
    ("no MTA-STS", no_sts(("v=spf1 -all",), "no v=STSv1 TXT record"), {"no-mta-sts"}),
    ("TXT lookup fails", {"sts_txt": StsFailure(FailureType.FETCH_ERROR, "SERVFAIL"), "policy": None,
                          "policy_tls": None}, {"sts-txt-lookup-failed"}),
    ("mode testing", {"policy": policy("testing")}, {"mode-testing"}),
    ("mode testing, mx not covered", {"policy": policy("testing", "other.example.org")},
     {"mode-testing", "mx-not-covered", "pattern-without-mx"}),
    ("mode none", {"policy": parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n")}, {"mode-none"}),
    ("enforce without TLS-RPT", {"tlsrpt": NoTlsrpt("0 v=TLSRPTv1 records")}, {"enforce-without-tlsrpt"}),
    ("testing without TLS-RPT", {"tlsrpt": NoTlsrpt("0 records"), "policy": policy("testing")},
     {"mode-testing", "no-tlsrpt"}),
    ("max_age short in enforce", {"policy": policy(max_age=86400)}, {"max-age-short"}),
    ("max_age short in testing", {"policy": policy("testing", max_age=86400)}, {"mode-testing"}),
    ("id not bumped", {"cached": CachedPolicy(DOMAIN, "1", policy(max_age=999999), NOW - DAY)}, {"id-not-bumped"}),
    ("id bumped", {"cached": CachedPolicy(DOMAIN, "0", policy(max_age=999999), NOW - DAY)}, set()),
    ("TLSA mismatch", {"dane": dane(usable(MX, ee("old"), ee("older")))}, {"tlsa-mismatch"}),
    ("TLSA matching by the CA", {"dane": dane(usable(MX, ee("old"), TA))}, set()),
    ("TLSA matching by the CA, misnamed", {"dane": dane(usable(MX, ee("old"), TA)), "policy_tls": None,
                                           **no_sts((), "none"), **smtp(starttls=True, tls=tls(name_ok=False))},
     {"tlsa-ta-name", "no-mta-sts"}),
    ("TLSA matching the key, misnamed", {"dane": dane(usable(MX, ee(MX), TA)), **no_sts((), "none"),
                                         **smtp(starttls=True, tls=tls(name_ok=False))},
     {"no-mta-sts"}),   # DANE-EE: names do not matter (RFC 7672 §3.1.1)
    ("one TLSA record", {"dane": dane(usable(MX, ee(MX)))}, {"tlsa-no-rollover"}),
    ("TLSA none usable", {"dane": dane(HostResult(MX, HostStatus.UNUSABLE, "t", tlsa=(TlsaRecord(1, 1, 1, b"x"),)))},
     {"tlsa-unusable"}),
    ("TLSA in an insecure zone", {"dane": DaneResult(DaneOutcome.ABSENT, "insecure", Lookup(DOMAIN, "MX")),
                                  "mx": (mx_host(tlsa=TlsaAnswer(f"_25._tcp.{MX}", (ee(MX),), secure=False)),)},
     {"tlsa-insecure", "mx-insecure"}),
    ("DNSSEC bogus", {"dane": temp("MX lookup failed: SERVFAIL"), "mx": (), "mx_error": "SERVFAIL"}, {"dnssec-bogus"}),
    ("one MX host bogus", {"dane": dane(usable(), HostResult("mx2.example.org", HostStatus.FAILED, "SERVFAIL"),
                                        outcome=DaneOutcome.DANE)}, {"dnssec-bogus"}),
    ("MX lookup fails", {"dane": None, "mx": (), "mx_error": "timed out"}, {"mx-lookup-failed"}),
    ("null MX", {"mx": (), "policy": parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n")},
     {"no-mail", "mode-none"}),
    ("TLS-RPT rua unusable", {"tlsrpt": parse_tlsrpt_records([f"v=TLSRPTv1; rua=mailto:r@{DOMAIN},ftp://x"])},
     {"tlsrpt-rua-unusable"}),
]


@pytest.mark.parametrize("changes, expected", [pytest.param(c, e, id=n) for n, c, e in CASES])
def test_findings(changes, expected):
    found = findings(replace(CLEAN, **changes), NOW, 21)
    assert {f.code for f in found} == expected, found
    assert all(f.explanation and f.fix and f.subject for f in found)


@pytest.mark.parametrize("mode, severity", [("enforce", Severity.ERROR), ("testing", Severity.WARNING)])
def test_webpki_problems_weigh_by_mode(mode, severity):
    facts = replace(CLEAN, policy=policy(mode), **smtp(starttls=True, tls=tls(name_ok=False)))
    assert [f.severity for f in findings(facts, NOW, 21) if f.code == "mx-cert-name"] == [severity]


def test_without_mta_sts_webpki_is_not_judged():
    """A DANE-only domain's MX may have a private CA's certificate: DANE-TA/EE do not need WebPKI."""
    facts = replace(CLEAN, **no_sts((), "none"), **smtp(starttls=True, tls=tls(name_ok=False, errors=("x",))))
    assert {f.code for f in findings(facts, NOW, 21)} == {"no-mta-sts"}


@pytest.mark.parametrize("spool, text", [
    (None, "keeps no TLS-RPT spool"),
    (Spool(0, 0, 0), "no TLS-RPT data"),
    (Spool(9, 120, 3), "9 days of TLS-RPT data in this daemon's spool, 3 of 120 sessions failed"),
])
def test_mode_testing_says_what_the_spool_knows(spool, text):
    found = findings(replace(CLEAN, policy=policy("testing"), spool=spool), NOW, 21)
    assert text in next(f.explanation for f in found if f.code == "mode-testing")


def test_warn_days_moves_the_expiry_warning():
    facts = replace(CLEAN, **smtp(starttls=True, tls=tls(days_left=30)))
    assert [f.code for f in findings(facts, NOW, 45)] == ["mx-cert-expiring"]
    assert findings(facts, NOW, 29) == ()


def f(severity: Severity) -> Finding:
    return Finding(severity, "x", "s", "e", "f")


@pytest.mark.parametrize("severities, status", [
    ((), 0), ((Severity.NOTE,), 0), ((Severity.NOTE, Severity.WARNING), 1),
    ((Severity.WARNING, Severity.ERROR, Severity.NOTE), 2),
])
def test_exit_status_is_the_worst_severity(severities, status):
    assert exit_status(tuple(f(s) for s in severities)) == status
    assert set(EXIT_STATUS.values()) == {0, 1, 2}


def test_errors_come_first():
    facts = replace(CLEAN, policy=policy(max_age=60), **smtp(starttls=False))
    assert [x.severity for x in findings(facts, NOW, 21)] == [Severity.ERROR, Severity.WARNING]
