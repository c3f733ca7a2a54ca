"""RFC 7672 rules as pure functions: TLSA usability, TLSA base domains, MX handling, the domain verdict."""

from __future__ import annotations

import hashlib

import pytest

from mtasts_resolver.policy.dane import (
    DaneOutcome,
    HostResult,
    HostStatus,
    Lookup,
    TlsaRecord,
    combine,
    mx_hosts,
    null_mx,
    tlsa_bases,
    tlsa_problem,
    tlsa_status,
)

SHA256 = hashlib.sha256(b"spki").digest()
SHA512 = hashlib.sha512(b"spki").digest()
# A minimal DER SEQUENCE standing in for a certificate / SPKI (matching type 0 carries it whole).
DER = bytes([0x30, 0x03, 0x02, 0x01, 0x05])
LONG_DER = bytes([0x30, 0x82, 0x01, 0x00]) + bytes(256)


@pytest.mark.parametrize("record,problem", [
    (TlsaRecord(3, 1, 1, SHA256), None),
    (TlsaRecord(3, 0, 1, SHA256), None),
    (TlsaRecord(3, 1, 2, SHA512), None),
    (TlsaRecord(2, 1, 1, SHA256), None),
    (TlsaRecord(2, 0, 2, SHA512), None),
    (TlsaRecord(3, 1, 0, DER), None),
    (TlsaRecord(2, 0, 0, LONG_DER), None),
    (TlsaRecord(0, 0, 1, SHA256), "usage 0 (PKIX-TA) is not used for SMTP"),
    (TlsaRecord(1, 1, 1, SHA256), "usage 1 (PKIX-EE) is not used for SMTP"),
    (TlsaRecord(4, 1, 1, SHA256), "unknown certificate usage 4"),
    (TlsaRecord(3, 2, 1, SHA256), "unknown selector 2"),
    (TlsaRecord(3, 1, 3, SHA256), "unknown matching type 3"),
    (TlsaRecord(3, 1, 1, SHA256[:20]), "needs a 32-octet digest, got 20"),
    (TlsaRecord(3, 1, 1, SHA512), "needs a 32-octet digest, got 64"),
    (TlsaRecord(3, 1, 2, SHA256), "needs a 64-octet digest, got 32"),
    (TlsaRecord(3, 1, 0, b"\x01\x02"), "not a DER SubjectPublicKeyInfo"),
    (TlsaRecord(3, 0, 0, DER + b"\x00"), "not a DER certificate"),
    (TlsaRecord(3, 0, 0, bytes([0x30, 0x82, 0x01])), "not a DER certificate"),
])
def test_tlsa_usability(record, problem):
    found = tlsa_problem(record)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_one_usable_record_makes_the_rrset_usable():
    assert tlsa_status([TlsaRecord(0, 0, 1, SHA256), TlsaRecord(3, 1, 1, SHA256)]) is HostStatus.USABLE
    assert tlsa_status([TlsaRecord(0, 0, 1, SHA256), TlsaRecord(3, 1, 1, b"x")]) is HostStatus.UNUSABLE


@pytest.mark.parametrize("host,canonical,secure,bases", [
    ("mx.a.example", "mx.a.example", True, ("mx.a.example",)),
    ("mx.a.example", "", True, ("mx.a.example",)),
    # RFC 7672 §2.2.2: a secure CNAME chain: the expanded name first, then the MX host name
    ("mail.a.example", "mx.b.example", True, ("mx.b.example", "mail.a.example")),
    ("mail.a.example", "mx.b.example", False, ("mail.a.example",)),
])
def test_tlsa_base_domains(host, canonical, secure, bases):
    assert tlsa_bases(host, canonical, secure) == bases


def test_null_mx_and_host_order():
    assert null_mx([(0, ".")])
    assert not null_mx([(0, "."), (10, "mx.example")])
    assert not null_mx([(10, ".")])  # RFC 7505 §3: preference 0; "." hosts are dropped anyway
    assert mx_hosts([(20, "b.example"), (10, "a.example"), (10, "c.example"), (30, "a.example"), (0, ".")]) == (
        "a.example", "c.example", "b.example")


def host(name, status, ttl=300):
    return HostResult(name, status, status.value, ttl=ttl)


U, X, N, I, A, F = (HostStatus.USABLE, HostStatus.UNUSABLE, HostStatus.NO_TLSA, HostStatus.INSECURE,
                    HostStatus.NO_ADDRESS, HostStatus.FAILED)

# MX host statuses -> the domain's outcome.  The deliberate choices:
# - one broken (FAILED) or unsigned host among hosts with DANE gives "dane", never TEMP:
#   RFC 7672 §2.2 lets the client skip that host (Postfix does) and use the others;
# - a failure is TEMP only when no other host proves DANE present, since the failed data
#   then decides between DANE and MTA-STS;
# - hosts without addresses can receive no mail and do not count.
COMBINE_TABLE = [
    ([U], DaneOutcome.DANE_ONLY),
    ([U, U], DaneOutcome.DANE_ONLY),
    ([U, A], DaneOutcome.DANE_ONLY),
    ([U, N], DaneOutcome.DANE),
    ([U, I], DaneOutcome.DANE),
    ([U, X], DaneOutcome.DANE),
    ([U, F], DaneOutcome.DANE),
    ([X], DaneOutcome.DANE),
    ([X, N], DaneOutcome.DANE),
    ([N], DaneOutcome.ABSENT),
    ([I], DaneOutcome.ABSENT),
    ([N, I, A], DaneOutcome.ABSENT),
    ([A], DaneOutcome.ABSENT),
    ([F], DaneOutcome.TEMP),
    ([N, F], DaneOutcome.TEMP),
    ([I, F], DaneOutcome.TEMP),
]


@pytest.mark.parametrize("statuses,outcome", COMBINE_TABLE,
                         ids=["+".join(s.name for s in row[0]) for row in COMBINE_TABLE])
def test_domain_outcome_from_hosts(statuses, outcome):
    hosts = tuple(host(f"mx{i}.example", s) for i, s in enumerate(statuses))
    result = combine(Lookup("example", "MX", secure=True), hosts, mx_ttl=600)
    assert result.outcome is outcome, result.reason


def test_verdict_ttl_is_the_smallest_ttl_seen():
    hosts = (host("mx1.example", U, ttl=120), host("mx2.example", U, ttl=30))
    assert combine(Lookup("example", "MX", secure=True), hosts, mx_ttl=600).ttl == 30
    assert combine(Lookup("example", "MX", secure=True), hosts[:1], mx_ttl=60).ttl == 60


def test_temp_reason_names_the_failed_hosts():
    hosts = (HostResult("mx1.example", F, "TLSA lookup failed: SERVFAIL"), host("mx2.example", N))
    result = combine(Lookup("example", "MX", secure=True), hosts, mx_ttl=600)
    assert result.outcome is DaneOutcome.TEMP
    assert "mx1.example: TLSA lookup failed: SERVFAIL" in result.reason
