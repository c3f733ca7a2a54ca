"""Prove the integration-test world behaves as the daemon's tests assume.

If these fail, failures elsewhere are about the world, not the daemon: the
validating resolver must set AD only for secure data and SERVFAIL bogus
data, the plain resolver must never set AD, changes must be visible at
once, and the policy server must present exactly the certificate asked for.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import dns.flags
import pytest

from tests.world import DnsWorld, PolicyServer, Route, TestPKI, Zone
from tests.world.addresses import DANE_NET, SPARE_POLICY_IP, SPARE_POLICY_PORT
from tests.world.policy_server import WELL_KNOWN_PATH, sts_policy


def _flags(dig_output: str) -> set[str]:
    match = re.search(r";; flags: ([a-z ]+);", dig_output)
    assert match, dig_output
    return set(match.group(1).split())


def _status(dig_output: str) -> str:
    match = re.search(r"status: ([A-Z]+)", dig_output)
    assert match, dig_output
    return match.group(1)


@pytest.fixture(scope="module")
def zones(dns_world: DnsWorld) -> DnsWorld:
    """Child zones of every kind, added while the world already runs."""
    dns_world.add_zones([
        Zone("world-secure.test", [f"mx1 IN A {DANE_NET}.1", "@ IN MX 10 mx1"]),
        Zone("world-insecure.test", [f"mx1 IN A {DANE_NET}.2"], delegation="insecure"),
        Zone("world-unsigned.test", [f"mx1 IN A {DANE_NET}.3"], signed=False),
        Zone("world-bogus.test", [f"mx1 IN A {DANE_NET}.4"], delegation="bogus"),
        Zone("world-replace.test", [f"mx1 IN A {DANE_NET}.5"]),
    ])
    return dns_world


# -- DNS --------------------------------------------------------------------

def test_secure_zone_is_validated(zones: DnsWorld) -> None:
    out = zones.dig("mx1.world-secure.test", "A")
    assert _status(out) == "NOERROR" and f"{DANE_NET}.1" in out
    assert "ad" in _flags(out)
    plain = zones.dig("mx1.world-secure.test", "A", validating=False)
    assert f"{DANE_NET}.1" in plain and "ad" not in _flags(plain)


@pytest.mark.parametrize("name,addr", [("world-insecure.test", f"{DANE_NET}.2"),
                                       ("world-unsigned.test", f"{DANE_NET}.3")])
def test_insecure_zone_answers_without_ad(zones: DnsWorld, name: str, addr: str) -> None:
    out = zones.dig(f"mx1.{name}", "A")
    assert _status(out) == "NOERROR" and addr in out
    assert "ad" not in _flags(out)


def test_bogus_zone_servfails_only_when_validating(zones: DnsWorld) -> None:
    assert _status(zones.dig("mx1.world-bogus.test", "A")) == "SERVFAIL"
    plain = zones.dig("mx1.world-bogus.test", "A", validating=False)
    assert _status(plain) == "NOERROR" and f"{DANE_NET}.4" in plain


def test_nothing_outside_test_resolves(zones: DnsWorld) -> None:
    assert _status(zones.dig("example.com", "A")) == "REFUSED"
    assert _status(zones.dig("example.com", "A", validating=False)) == "REFUSED"


def test_parent_record_changes_are_visible_at_once(dns_world: DnsWorld) -> None:
    saved = list(dns_world.parent_records)  # other tests may rely on theirs
    try:
        for policy_id in ("1", "2"):
            txt = f'_mta-sts.world-parent 60 IN TXT "v=STSv1; id={policy_id}"'
            dns_world.set_parent_records([*saved, txt])
            out = dns_world.dig("_mta-sts.world-parent.test", "TXT")
            assert f'"v=STSv1; id={policy_id}"' in out and "ad" in _flags(out)
    finally:
        dns_world.set_parent_records(saved)
    assert _status(dns_world.dig("_mta-sts.world-parent.test", "TXT")) == "NXDOMAIN"


def test_replace_zone_is_visible_at_once(zones: DnsWorld, pki: TestPKI) -> None:
    digest = pki.tlsa_data("mx1.world-replace.test")
    assert _status(zones.dig("_25._tcp.mx1.world-replace.test", "TLSA")) == "NXDOMAIN"
    zones.replace_zone("world-replace.test", [
        f"mx1 IN A {DANE_NET}.9", f"_25._tcp.mx1 IN TLSA 3 1 1 {digest}"])
    out = zones.dig("_25._tcp.mx1.world-replace.test", "TLSA")
    assert digest in out.replace(" ", "").lower() and "ad" in _flags(out)
    answer = zones.query("mx1.world-replace.test", "A")
    assert f"{DANE_NET}.9" in answer.to_text() and answer.flags & dns.flags.AD


# -- policy server ----------------------------------------------------------

def _get(server: PolicyServer, pki: TestPKI, host: str, path: str = WELL_KNOWN_PATH,
         timeout: float = 5.0) -> tuple[http.client.HTTPResponse, bytes, bytes]:
    """GET over verified TLS; returns (response, body, peer cert DER)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with socket.create_connection((server.address, server.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                        "Connection: close\r\n\r\n".encode())
            resp = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
            resp.begin()
            return resp, resp.read(), tls.getpeercert(binary_form=True) or b""


POLICY = sts_policy("mx1.x.test", eol="\r\n")


def test_policy_route_is_served(policy_server: PolicyServer, pki: TestPKI) -> None:
    host = "mta-sts.world-x.test"
    policy_server.set(host, Route(body=POLICY))
    before = policy_server.hits(host)
    resp, body, cert = _get(policy_server, pki, host)
    assert (resp.status, body, resp.getheader("Content-Type")) == (200, POLICY, "text/plain")
    assert cert == pki.cert_der(host)
    assert policy_server.hits(host) == before + 1
    resp, _, _ = _get(policy_server, pki, host, path="/other")
    assert resp.status == 404
    assert policy_server.hits(host) == before + 1  # only the policy path counts
    policy_server.reset_hits()
    assert policy_server.hits(host) == 0


def test_route_can_change_while_running(policy_server: PolicyServer, pki: TestPKI) -> None:
    host = "mta-sts.world-redirect.test"
    policy_server.set(host, Route(status=301, location="https://elsewhere.test/",
                                  content_type="text/html"))
    resp, _, _ = _get(policy_server, pki, host)
    assert resp.status == 301 and resp.getheader("Location") == "https://elsewhere.test/"
    policy_server.set(host, Route(body=b"new"))
    assert _get(policy_server, pki, host)[1] == b"new"
    policy_server.remove(host)
    with pytest.raises(ssl.SSLCertVerificationError):  # unknown: wrong-name cert
        _get(policy_server, pki, host)


@pytest.mark.parametrize("kind,reason", [("wrong-name", "mismatch"), ("expired", "expired"),
                                         ("self-signed", "self")])
def test_bad_certificates_fail_verification(policy_server: PolicyServer, pki: TestPKI,
                                            kind: str, reason: str) -> None:
    host = f"mta-sts.world-{kind}.test"
    policy_server.set(host, Route(body=POLICY, cert=kind))
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        _get(policy_server, pki, host)
    assert policy_server.handshakes(host) >= 1 and policy_server.hits(host) == 0


def test_slow_route_does_not_block_others(policy_server: PolicyServer, pki: TestPKI) -> None:
    policy_server.set("mta-sts.world-slow.test", Route(body=b"slow", delay_s=1.5))
    policy_server.set("mta-sts.world-fast.test", Route(body=b"fast"))
    results: dict[str, bytes] = {}
    slow = threading.Thread(target=lambda: results.update(
        slow=_get(policy_server, pki, "mta-sts.world-slow.test")[1]))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert _get(policy_server, pki, "mta-sts.world-fast.test")[1] == b"fast"
    assert time.monotonic() - started < 1.0
    assert slow.is_alive()  # still sleeping server-side
    slow.join(5)
    assert results["slow"] == b"slow"


@pytest.fixture
def spare_server(pki: TestPKI) -> Iterator[PolicyServer]:
    with PolicyServer(pki, address=SPARE_POLICY_IP, port=SPARE_POLICY_PORT) as server:
        yield server


def test_stop_does_not_wait_for_sleeping_handlers(spare_server: PolicyServer,
                                                  pki: TestPKI) -> None:
    host = "mta-sts.world-stuck.test"
    spare_server.set(host, Route(body=b"never", delay_s=60))
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            _get(spare_server, pki, host, timeout=10)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    client = threading.Thread(target=fetch)
    client.start()
    deadline = time.monotonic() + 5
    while spare_server.hits(host) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    spare_server.stop()
    assert time.monotonic() - started < 2.0
    client.join(5)
    assert not client.is_alive() and errors  # the client saw the connection drop
