"""``mtasts-resolver audit`` against the real world: one deliberately broken domain per finding.

Real nsd/unbound with signed, unsigned and bogus zones, the HTTPS policy
host with good, expiring and misnamed certificates, and real STARTTLS MX
hosts on port 25; the audit runs as the command an admin runs.
"""

from __future__ import annotations

import json
import time

import pytest

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world.audit_world import CASES, audit_config, audit_world  # noqa: F401 (the fixture)
from tests.world.policy_server import sts_policy

BY_DOMAIN = {case.domain: case for case in CASES}


@pytest.fixture(scope="module")
def report(audit_world):  # noqa: F811
    """One ``audit --json`` run over every domain (the way monitoring runs it)."""
    result = audit_world.audit("--json", *BY_DOMAIN)
    assert result.stdout, result.stderr
    return result, {entry["domain"]: entry for entry in json.loads(result.stdout)["domains"]}


@pytest.mark.parametrize("domain", BY_DOMAIN)
def test_each_broken_domain_gets_exactly_its_findings(report, domain):
    _, domains = report
    entry, case = domains[domain], BY_DOMAIN[domain]
    assert {f["code"] for f in entry["findings"]} == case.expected, json.dumps(entry, indent=1)
    assert entry["status"] == case.status
    assert all(f["explanation"] and f["fix"] for f in entry["findings"])


def test_the_exit_status_is_the_worst_domain(report):
    result, _ = report
    assert result.returncode == 2 == json.loads(result.stdout)["status"]



@pytest.mark.parametrize("domain, status", [("audit-clean.test", 0), ("audit-shortage.test", 1),
                                            ("audit-uncovered.test", 2)])
def test_the_table_and_exit_status_of_one_domain(audit_world, domain, status):  # noqa: F811
    result = audit_world.audit(domain)
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stderr == ""   # DANE checked (the resolver validates), no warning of any library
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{domain}: ")
    assert any(line.startswith("  MX       10 mx") and "STARTTLS, certificate" in line for line in lines)
    assert any(line.startswith("  MTA-STS  \"v=STSv1; id=1\"; policy enforce") for line in lines)
    for code in BY_DOMAIN[domain].expected:
        row = next(i for i, line in enumerate(lines) if line.split()[1:2] == [code])
        assert lines[row + 2].lstrip().startswith("fix: ")
    if status == 0:
        assert lines[0] == f"{domain}: no findings"


def test_the_audit_reads_no_cache_it_would_have_to_create(audit_world):  # noqa: F811
    audit_world.audit("audit-clean.test")
    assert not (audit_world.config.parent / "state").exists()


def test_a_domain_that_is_not_one_is_a_usage_error(audit_world):  # noqa: F811
    result = audit_world.audit("[mx.audit-clean.test]")
    assert result.returncode == 64 and "not a domain" in result.stderr and result.stdout == ""


def test_the_spool_and_the_cache_inform_the_audit(audit_world, dns_world, pki, tmp_path):  # noqa: F811
    """Days of TLS-RPT data for a domain in testing; a cached policy with the same id but other lines."""
    state = tmp_path / "state"
    state.mkdir()
    store = SqliteStore(state / "cache.sqlite3")
    store.save_policy(CachedPolicy("audit-testing.test", "1", parse_policy(sts_policy(
        "mx.audit-testing.test", mode="testing", max_age=86400)), time.time() - 3600))
    writer = store.outcome_writer()
    writer.add([("2026-11-28", "audit-testing.test", "{}", "success", "", 40),
                ("2026-11-29", "audit-testing.test", "{}", "success", "", 10),
                ("2026-11-29", "audit-testing.test", "{}", "failure", "", 2),
                ("2026-11-30", "other.test", "{}", "success", "", 99)], {})
    writer.close()
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(audit_config(dns_world, pki, state))
    result = audit_world.audit("--json", "audit-testing.test", config=config)
    found = {f["code"]: f for f in json.loads(result.stdout)["domains"][0]["findings"]}
    assert set(found) == {"mode-testing", "id-not-bumped"}
    assert "2 days of TLS-RPT data in this daemon's spool, 2 of 52 sessions failed" in found["mode-testing"]["explanation"]
    assert result.returncode == 1


def test_without_a_validating_resolver_dane_is_not_judged(audit_world, dns_world, pki, tmp_path):  # noqa: F811
    """The daemon's own probe decides: no DNSSEC validation, no DANE findings, and stderr says why."""
    config = tmp_path / "config.toml"
    config.write_text(audit_config(dns_world, pki, tmp_path / "state", validating=False))
    result = audit_world.audit("--json", "audit-tlsa-mismatch.test", "audit-tlsa-unsigned.test", config=config)
    assert "DANE not checked" in result.stderr and "does not validate DNSSEC" in result.stderr
    domains = json.loads(result.stdout)["domains"]
    assert [(d["findings"], "dane" in d["seen"]) for d in domains] == [([], False), ([], False)]
    assert result.returncode == 0
