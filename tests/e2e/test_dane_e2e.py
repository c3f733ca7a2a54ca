"""End to end DANE: the real daemon, nsd serving DNSSEC-signed zones, a validating unbound, real postmap.

Every scenario of RFC 7672 is a child zone of ``test.`` signed with real keys
(secure, unsigned, or bogus delegation); the assertions are what Debian's
``postmap -q`` gets over socketmap and tcp_table.  A second daemon points at
the world's non-validating unbound and must give no DANE answer, loudly.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.world.daemon import DaemonProcess, run_cli
from tests.world import Route, Zone
from tests.world.policy_server import sts_policy
from tests.world.addresses import DANE_NET as NET, POLICY_IP


def zones(pki) -> list[Zone]:
    def ee(host: str) -> str:
        return f"3 1 1 {pki.tlsa_data(host)}"

    ta = f"2 1 1 {pki.ca_tlsa_data()}"
    digest = pki.tlsa_data("mx1.dane-unusable.test")
    sts = ['_mta-sts IN TXT "v=STSv1; id=1"', f"mta-sts IN A {POLICY_IP}"]
    return [
        Zone("dane-ee.test", ["@ IN MX 10 mx1", "@ IN MX 20 mx2", f"mx1 IN A {NET}.1", f"mx2 IN A {NET}.2",
                              f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-ee.test')}",
                              f"_25._tcp.mx2 IN TLSA {ee('mx2.dane-ee.test')}"]),
        Zone("dane-ta.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.3", f"_25._tcp.mx1 IN TLSA {ta}"]),
        # PKIX usages, a SHA-256 digest too short, a "SHA-512" digest of 32 octets: all unusable
        Zone("dane-unusable.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.4",
                                    f"_25._tcp.mx1 IN TLSA 0 0 1 {digest}", f"_25._tcp.mx1 IN TLSA 1 1 1 {digest}",
                                    f"_25._tcp.mx1 IN TLSA 3 1 1 {digest[:40]}",
                                    f"_25._tcp.mx1 IN TLSA 3 1 2 {digest}"]),
        Zone("dane-notlsa.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.5"]),
        # an unsigned zone (insecure delegation): its TLSA record must be ignored
        Zone("dane-plainzone.test", [f"mx1 IN A {NET}.6", f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-plainzone.test')}"],
             signed=False),
        Zone("dane-unsignedhost.test", ["@ IN MX 10 mx1.dane-plainzone.test."]),
        Zone("dane-partial.test", ["@ IN MX 10 mx1", "@ IN MX 20 mx2", f"mx1 IN A {NET}.7", f"mx2 IN A {NET}.8",
                                   f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-partial.test')}"]),
        Zone("dane-partial-unsigned.test", ["@ IN MX 10 mx1", "@ IN MX 20 mx1.dane-plainzone.test.",
                                            f"mx1 IN A {NET}.9",
                                            f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-partial-unsigned.test')}"]),
        Zone("dane-boguszone.test", [f"mx1 IN A {NET}.10", f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-boguszone.test')}"],
             delegation="bogus"),
        Zone("dane-partial-bogus.test", ["@ IN MX 10 mx1", "@ IN MX 20 mx1.dane-boguszone.test.",
                                         f"mx1 IN A {NET}.11",
                                         f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-partial-bogus.test')}"]),
        Zone("dane-onlybogus.test", ["@ IN MX 10 mx1.dane-boguszone.test."]),
        Zone("dane-bogus.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.12",
                                 f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-bogus.test')}", *sts], delegation="bogus"),
        Zone("dane-hoster.test", [f"mx IN A {NET}.13", f"_25._tcp.mx IN TLSA {ee('mx.dane-hoster.test')}",
                                  f"notlsa IN A {NET}.14"]),
        Zone("dane-cname.test", ["@ IN MX 10 mail", "mail IN CNAME mx.dane-hoster.test."]),
        Zone("dane-cname-orig.test", ["@ IN MX 10 mail", "mail IN CNAME notlsa.dane-hoster.test.",
                                      f"_25._tcp.mail IN TLSA {ee('mail.dane-cname-orig.test')}"]),
        Zone("dane-cname-unsigned.test", ["@ IN MX 10 mail", "mail IN CNAME mx1.dane-plainzone.test.",
                                          f"_25._tcp.mail IN TLSA {ee('mail.dane-cname-unsigned.test')}"]),
        Zone("dane-implicit.test", [f"@ IN A {NET}.15", f"_25._tcp IN TLSA {ee('dane-implicit.test')}"]),
        Zone("dane-nullmx.test", ["@ IN MX 0 .", f"@ IN A {NET}.16", f"_25._tcp IN TLSA {ee('dane-nullmx.test')}"]),
        Zone("dane-insecure-mx.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.17",
                                       f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-insecure-mx.test')}"], signed=False),
        Zone("dane-sts.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.18",
                               f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-sts.test')}", *sts]),
        Zone("dane-sts-notlsa.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.19", *sts]),
        # 41 TLSA records (~2 KB): the answer does not fit in the 1232 octets of EDNS over UDP
        Zone("dane-bigtlsa.test", ["@ IN MX 10 mx1", f"mx1 IN A {NET}.20",
                                   f"_25._tcp.mx1 IN TLSA {ee('mx1.dane-bigtlsa.test')}",
                                   *[f"_25._tcp.mx1 IN TLSA 3 1 1 {hashlib.sha256(bytes([i])).hexdigest()}"
                                     for i in range(40)]]),
    ]


SECURE_STS = "secure match=mx1.dane-sts-notlsa.test servername=hostname"
TEMP = "TEMP"

# domain -> what postmap shows: a policy, None for NOTFOUND, TEMP for a deferral
EXPECTED: dict[str, str | None] = {
    "dane-ee.test": "dane-only",                 # TLSA 3 1 1 on every MX
    "dane-ta.test": "dane-only",                 # TLSA 2 1 1
    "dane-unusable.test": "dane",                # TLSA present, none usable: Postfix uses mandatory TLS
    "dane-notlsa.test": None,                    # signed, no TLSA: DANE proven absent
    "dane-unsignedhost.test": None,              # the MX host is in an unsigned zone
    "dane-partial.test": "dane",                 # some MX with TLSA, some without
    "dane-partial-unsigned.test": "dane",        # one MX host in an unsigned zone
    "dane-partial-bogus.test": "dane",           # one bogus MX host among good ones: not the whole domain
    "dane-onlybogus.test": TEMP,                 # the only MX host is bogus: DANE status unknown
    "dane-bogus.test": TEMP,                     # wrong DS: the MX RRset itself is bogus
    "dane-cname.test": "dane-only",              # MX host via CNAME, TLSA at the expanded name
    "dane-cname-orig.test": "dane-only",         # ... TLSA only at the original MX host name
    "dane-cname-unsigned.test": None,            # ... CNAME into an unsigned zone: insecure
    "dane-implicit.test": "dane-only",           # no MX: the domain itself (implicit MX)
    "dane-nullmx.test": None,                    # null MX: no mail at all
    "dane-insecure-mx.test": None,               # unsigned domain: insecure MX RRset
    "dane-sts.test": "dane-only",                # DANE and MTA-STS: DANE wins (RFC 8461 §2)
    "dane-sts-notlsa.test": SECURE_STS,          # DANE proven absent: MTA-STS applies
    "dane-bigtlsa.test": "dane-only",            # truncated over UDP, asked again over TCP
}


@pytest.fixture(scope="module")
def dane_world(dns_world, policy_server, pki):
    dns_world.add_zones(zones(pki))
    for domain in ("dane-sts.test", "dane-sts-notlsa.test", "dane-bogus.test"):
        mx = f"mx1.{domain}"
        policy_server.set(f"mta-sts.{domain}", Route(body=sts_policy(mx)))
    return dns_world


def config(resolver: tuple[str, int], pki) -> str:
    ip, port = resolver
    return f"""
[dns]
nameservers = ["{ip}"]
port = {port}
timeout_s = 2

[mta_sts]
http_timeout_s = 3
ca_file = "{pki.ca_file}"
failure_ttl_s = 0
negative_ttl_s = 0

[dane]
probe_name = "test."
probe_interval_s = 60
min_ttl_s = 1
failure_ttl_s = 0
timeout_s = 6
"""


@pytest.fixture(scope="module")
def daemon(dane_world, pki, tmp_path_factory):
    proc = DaemonProcess(tmp_path_factory.mktemp("dane-daemon"), config(dane_world.resolver(), pki))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def blind_daemon(dane_world, pki, tmp_path_factory):
    """A daemon whose resolver does not validate (the world's plain unbound)."""
    proc = DaemonProcess(tmp_path_factory.mktemp("blind-daemon"), config(dane_world.resolver(validating=False), pki))
    proc.start()
    yield proc
    proc.stop()


def show(daemon: DaemonProcess, domain: str, table: str | None = None) -> str | None:
    code, out = daemon.postmap(domain, table)
    if code == 0:
        return out
    if code == 1 and out == "":
        return None
    # TEMP (socketmap) / 400 (tcp_table): Postfix's table layer reports a retryable query error
    assert code == 1 and "query error" in out, out
    return TEMP


@pytest.mark.parametrize("domain", list(EXPECTED))
def test_dane_scenario(daemon, domain):
    for table in (daemon.socketmap_map(), daemon.tcp_map()):
        assert show(daemon, domain, table) == EXPECTED[domain], f"{table}\n{daemon.log_tail()}"


def test_tlsrpt_map_gets_the_bare_dane_level(daemon):
    assert show(daemon, "dane-sts.test", daemon.socketmap_map("postfix-tlsrpt")) == "dane-only"


def test_temp_is_logged_with_its_reason(daemon):
    show(daemon, "dane-bogus.test")
    log = daemon.log_path.read_text()
    assert "dane-bogus.test: DANE status unknown (MX lookup failed" in log
    assert "answering TEMP" in log


def test_validating_resolver_is_reported_in_status(daemon):
    assert daemon.wait_for("DANE on", 10), daemon.notifications
    assert "DANE enabled: resolver" in daemon.log_path.read_text()


def test_query_tool_explains_dane(daemon):
    result = run_cli("-c", str(daemon.config_path), "query", "dane-unusable.test")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "verdict: dane:" in out
    assert "dane-unusable.test MX [AD]: 10 mx1.dane-unusable.test" in out
    assert "mx1.dane-unusable.test A [AD]: " in out
    assert "unusable: usage 0 (PKIX-TA)" in out and "needs a 32-octet digest, got 20 octets" in out
    assert "needs a 64-octet digest, got 32 octets" in out
    assert "answer:  OK dane" in out
    assert "DANE applies and wins over MTA-STS" in out

    partial = run_cli("-c", str(daemon.config_path), "query", "dane-partial-unsigned.test").stdout
    assert "mx1.dane-plainzone.test: not DNSSEC-validated" in partial
    assert "mx1.dane-plainzone.test A [no AD]: " in partial
    assert "usable (DANE-EE, SubjectPublicKeyInfo, SHA2-256)" in partial


def test_non_validating_resolver_means_no_dane_and_a_loud_warning(blind_daemon):
    assert show(blind_daemon, "dane-ee.test") is None
    assert show(blind_daemon, "dane-cname.test") is None
    assert show(blind_daemon, "dane-sts.test") == "secure match=mx1.dane-sts.test servername=hostname"
    log = blind_daemon.log_path.read_text()
    assert "error: DANE DISABLED: resolver" in log and "does not validate DNSSEC" in log, log
    assert blind_daemon.wait_for("DANE DISABLED: resolver", 10), blind_daemon.notifications
