"""Deliberately broken inbound setups for ``mtasts-resolver audit``: one domain per finding.

Each :class:`Broken` starts from a clean setup (signed zone, MX with a good
certificate and STARTTLS, an enforce policy covering every MX with a week's
max_age, a TLS-RPT record, a DANE-EE plus a DANE-TA TLSA record) and breaks
one thing; ``expected`` is the exact set of finding codes the audit must
report for it, ``status`` its exit status alone.  The MX hosts are real
STARTTLS servers on their own ``MX_NET`` addresses, port 25.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.world.addresses import MX_NET, POLICY_IP
from tests.world.daemon import run_cli, world_config
from tests.world.dns import Zone
from tests.world.policy_server import Route, sts_policy
from tests.world.smtp_host import SmtpHost

FIRST_MX = 100   # MX_NET.100 and up: clear of mta.py's hosts
WEEK_S = 604800


@dataclass(frozen=True)
class Mx:
    label: str = "mx"
    cert: str = "good"
    starttls: bool = True
    listening: bool = True
    plain_twin: bool = False   # a second address whose server offers no STARTTLS


@dataclass(frozen=True)
class Broken:
    domain: str
    expected: frozenset[str]
    status: int
    mx: tuple[Mx, ...] = (Mx(),)
    mode: str = "enforce"
    patterns: tuple[str, ...] | None = None   # None: every MX host
    max_age: int = WEEK_S
    txt: tuple[str, ...] = ("v=STSv1; id=1",)
    tlsrpt: bool = True
    tlsa: str = "rollover"                    # rollover | single | mismatch | unusable
    signed: bool = True
    delegation: str = "secure"
    policy_cert: str = "good"
    policy_status: int = 200
    policy_body: bytes | None = None           # None: the policy of mode, patterns and max_age

    def host(self, mx: Mx) -> str:
        return f"{mx.label}.{self.domain}"


def _case(domain: str, expected: set[str], status: int, **broken: object) -> Broken:
    return Broken(f"{domain}.test", frozenset(expected), status, **broken)


CASES = [
    _case("audit-clean", set(), 0),
    _case("audit-uncovered", {"mx-not-covered", "pattern-without-mx"}, 2, mx=(Mx("mx1"), Mx("mx2")),
          patterns=("mx1.audit-uncovered.test", "*.gone.audit-uncovered.test")),
    _case("audit-nostarttls", {"starttls-missing"}, 2, mx=(Mx(starttls=False),)),
    _case("audit-selfsigned", {"mx-cert-untrusted"}, 2, mx=(Mx(cert="self-signed"),)),
    _case("audit-wrongname", {"mx-cert-name"}, 2, mx=(Mx(cert="wrong-name"),)),
    _case("audit-expiring", {"mx-cert-expiring"}, 1, mx=(Mx(cert="expiring"),)),
    _case("audit-expired", {"mx-cert-expired", "mx-cert-untrusted"}, 2, mx=(Mx(cert="expired"),)),
    _case("audit-unreachable", {"mx-unreachable"}, 1, mx=(Mx(listening=False),)),
    _case("audit-twin", {"starttls-missing"}, 2, mx=(Mx(plain_twin=True),)),
    _case("audit-policycert-expiring", {"policy-cert-expiring"}, 1, policy_cert="expiring"),
    _case("audit-policycert-name", {"policy-cert-invalid"}, 2, policy_cert="wrong-name"),
    _case("audit-policy-404", {"policy-fetch-failed"}, 2, policy_status=404),
    _case("audit-policy-invalid", {"policy-invalid"}, 2, policy_body=b"version: STSv1\nmode: enforce\n"),
    _case("audit-txt-malformed", {"sts-txt-malformed"}, 2, txt=("v=STSv1; id=not-an-id!",)),
    _case("audit-txt-two", {"sts-txt-multiple"}, 2, txt=("v=STSv1; id=1", "v=STSv1; id=2")),
    _case("audit-testing", {"mode-testing"}, 0, mode="testing"),
    _case("audit-mode-none", {"mode-none"}, 0, mode="none"),
    _case("audit-noreport", {"enforce-without-tlsrpt"}, 1, tlsrpt=False),
    _case("audit-shortage", {"max-age-short"}, 1, max_age=86400),
    _case("audit-tlsa-mismatch", {"tlsa-mismatch"}, 2, tlsa="mismatch"),
    _case("audit-tlsa-single", {"tlsa-no-rollover"}, 1, tlsa="single"),
    _case("audit-tlsa-unusable", {"tlsa-unusable"}, 2, tlsa="unusable"),
    _case("audit-tlsa-unsigned", {"tlsa-insecure", "mx-insecure"}, 1, signed=False),
    _case("audit-bogus", {"dnssec-bogus", "sts-txt-lookup-failed", "tlsrpt-lookup-failed"}, 2, delegation="bogus"),
]


def _tlsa(case: Broken, mx: Mx, pki) -> list[str]:
    ee = f"3 1 1 {pki.tlsa_data(case.host(mx), mx.cert)}"
    if case.tlsa == "single":
        return [ee]
    if case.tlsa == "unusable":   # PKIX usages: not for SMTP (RFC 7672 §3.1.3)
        return [f"1 1 1 {pki.tlsa_data(case.host(mx), mx.cert)}", f"0 1 1 {pki.ca_tlsa_data()}"]
    if case.tlsa == "mismatch":   # the keys of some other host: a rollover gone wrong
        other = f"other.{case.domain}"
        return [f"3 1 1 {pki.tlsa_data(other)}", f"3 0 1 {pki.tlsa_data(other, selector=0)}"]
    return [ee, f"2 1 1 {pki.ca_tlsa_data()}"]


def zone(case: Broken, addresses: dict[str, str], pki) -> Zone:
    records = [f"mta-sts IN A {POLICY_IP}", *(f'_mta-sts IN TXT "{txt}"' for txt in case.txt)]
    if case.tlsrpt:
        records.append(f'_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{case.domain}"')
    for preference, mx in enumerate(case.mx, start=1):
        records += [f"@ IN MX {10 * preference} {mx.label}", f"{mx.label} IN A {addresses[case.host(mx)]}",
                    *(f"_25._tcp.{mx.label} IN TLSA {record}" for record in _tlsa(case, mx, pki))]
        if mx.plain_twin:
            records.append(f"{mx.label} IN A {addresses[_twin(case.host(mx))]}")
    return Zone(case.domain, records, signed=case.signed, delegation=case.delegation)


def _twin(host: str) -> str:
    """The key of a host's second address in :attr:`AuditWorld.addresses`."""
    return f"{host} (twin)"


@dataclass
class AuditWorld:
    config: Path
    addresses: dict[str, str]            # MX host -> its address
    hosts: list[SmtpHost] = field(default_factory=list)

    def audit(self, *args: str, config: Path | None = None) -> CompletedProcess[str]:
        return run_cli("-c", str(config or self.config), "audit", *args)


def audit_config(dns_world, pki, state_dir: Path, *, validating: bool = True) -> str:
    """A configuration pointing at the test world, its cache and spool in ``state_dir``.

    ``validating=False`` points it at the world's non-validating resolver instead.
    """
    tables = world_config(dns_world, pki, http_timeout_s=5)
    if not validating:
        tables = tables.replace(f'"{dns_world.resolver()[0]}"', f'"{dns_world.resolver(validating=False)[0]}"')
    return f'[daemon]\nstate_dir = "{state_dir}"\n\n[dane]\nprobe_name = "test."\nprobe_type = "SOA"\n\n' + tables


@pytest.fixture(scope="module")
def audit_world(dns_world, policy_server, pki, tmp_path_factory) -> Iterator[AuditWorld]:
    """Every :data:`CASES` domain published, its policy served, its MX hosts listening on port 25."""
    cases = CASES
    hosts = [(case, mx) for case in cases for mx in case.mx]
    names = [name for case, mx in hosts for name in (case.host(mx), *([_twin(case.host(mx))] if mx.plain_twin else []))]
    addresses = {name: f"{MX_NET}.{FIRST_MX + i}" for i, name in enumerate(names)}
    dns_world.add_zones([zone(case, addresses, pki) for case in cases])
    for case in cases:
        patterns = case.patterns or tuple(case.host(mx) for mx in case.mx)
        body = sts_policy(*(() if case.mode == "none" else patterns), mode=case.mode, max_age=case.max_age)
        policy_server.set(f"mta-sts.{case.domain}",
                          Route(case.policy_status, case.policy_body or body, cert=case.policy_cert))
    workdir = tmp_path_factory.mktemp("audit")
    config = workdir / "config.toml"
    config.write_text(audit_config(dns_world, pki, workdir / "state"))
    world = AuditWorld(config, addresses)
    try:
        for case, mx in hosts:
            if mx.listening:
                host = case.host(mx)
                context = pki.server_context(host, mx.cert) if mx.starttls else None
                world.hosts.append(SmtpHost(host, addresses[host], context))
                if mx.plain_twin:
                    world.hosts.append(SmtpHost(host, addresses[_twin(host)], None))
        for smtp in world.hosts:
            smtp.start()
        yield world
    finally:
        for smtp in world.hosts:
            smtp.stop()
