"""End to end: the real daemon, real DNS (nsd + unbound), a real HTTPS policy host, real postmap.

Every scenario of RFC 8461 discovery is a domain under ``test.`` with its
own TXT record and policy-host route; the assertions are what Postfix's own
``postmap -q`` gets back over socketmap and tcp_table.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.world.daemon import DaemonProcess, world_config
from tests.world import Route
from tests.world.policy_server import sts_policy
from tests.world.addresses import POLICY_IP
HTTP_TIMEOUT_S = 2


# domain -> (TXT records, policy route or None for no policy host address, expected postmap value or None)
SCENARIOS: dict[str, tuple[list[str], Route | None, str | None]] = {
    "enforce-one": (["v=STSv1; id=1"], Route(body=sts_policy("mx1.enforce-one.test")),
                    "secure match=mx1.enforce-one.test servername=hostname"),
    "enforce-many": (["v=STSv1; id=1"], Route(body=sts_policy("mx1.enforce-many.test", "mx2.backup.test")),
                     "secure match=mx1.enforce-many.test:mx2.backup.test servername=hostname"),
    "wildcard": (["v=STSv1; id=w1"], Route(body=sts_policy("*.wildcard.test")),
                 "secure match=.wildcard.test servername=hostname"),
    "crlf": (["v=STSv1; id=1"], Route(body=sts_policy("mx.crlf.test", eol="\r\n")),
             "secure match=mx.crlf.test servername=hostname"),
    "charset": (["v=STSv1; id=1"], Route(body=sts_policy("mx.charset.test"),
                                         content_type="text/plain; charset=utf-8"),
                "secure match=mx.charset.test servername=hostname"),
    "split-txt": (['"v=STSv1; " "id=split1"'], Route(body=sts_policy("mx.split-txt.test")),
                  "secure match=mx.split-txt.test servername=hostname"),
    "testing": (["v=STSv1; id=1"], Route(body=sts_policy("mx.testing.test", mode="testing")), None),
    "none": (["v=STSv1; id=1"], Route(body=sts_policy(mode="none")), None),
    "no-txt": ([], Route(body=sts_policy("mx.no-txt.test")), None),
    "two-txt": (["v=STSv1; id=1", "v=STSv1; id=2"], Route(body=sts_policy("mx.two-txt.test")), None),
    "no-policy-host": (["v=STSv1; id=1"], None, None),
    "redirect": (["v=STSv1; id=1"], Route(status=301, location="https://mta-sts.enforce-one.test/.well-known/mta-sts.txt",
                                          body=sts_policy("mx.redirect.test")), None),
    "wrong-type": (["v=STSv1; id=1"], Route(body=sts_policy("mx.wrong-type.test"), content_type="text/html"), None),
    "wrong-name": (["v=STSv1; id=1"], Route(body=sts_policy("mx.wrong-name.test"), cert="wrong-name"), None),
    "expired": (["v=STSv1; id=1"], Route(body=sts_policy("mx.expired.test"), cert="expired"), None),
    "oversize": (["v=STSv1; id=1"], Route(body=sts_policy("mx.oversize.test") + b"x: y\n" * 20000), None),
    "slow": (["v=STSv1; id=1"], Route(body=sts_policy("mx.slow.test"), delay_s=HTTP_TIMEOUT_S + 3), None),
    "notfound": (["v=STSv1; id=1"], Route(status=404, body=b"not here"), None),
    "bad-version": (["v=STSv1; id=1"], Route(body=sts_policy("mx.bad-version.test").replace(b"STSv1", b"STSv2")), None),
    "bad-maxage": (["v=STSv1; id=1"], Route(body=sts_policy("mx.bad-maxage.test", max_age=31557601)), None),
    "xn--bcher-kva": (["v=STSv1; id=1"], Route(body=sts_policy("mx.xn--bcher-kva.test")),
                      "secure match=mx.xn--bcher-kva.test servername=hostname"),
    "idchange": (["v=STSv1; id=1"], Route(body=sts_policy("mx1.idchange.test")),
                 "secure match=mx1.idchange.test servername=hostname"),
    "persist": (["v=STSv1; id=1"], Route(body=sts_policy("mx.persist.test")),
                "secure match=mx.persist.test servername=hostname"),
}


_BASE_RECORDS: list[str] = []   # whatever other tests put in the parent zone


def parent_records(overrides: dict[str, list[str]] | None = None) -> list[str]:
    records = list(_BASE_RECORDS)
    for label, (txts, route, _) in SCENARIOS.items():
        for txt in (overrides or {}).get(label, txts):
            quoted = txt if txt.startswith('"') else f'"{txt}"'
            records.append(f"_mta-sts.{label} 60 IN TXT {quoted}")
        if route is not None:
            records.append(f"mta-sts.{label} 60 IN A {POLICY_IP}")
    return records


@pytest.fixture(scope="module")
def sts_world(dns_world, policy_server):
    _BASE_RECORDS[:] = dns_world.parent_records
    dns_world.set_parent_records(parent_records())
    for label, (_, route, _) in SCENARIOS.items():
        if route is not None:
            policy_server.set(f"mta-sts.{label}.test", route)
    yield dns_world, policy_server
    dns_world.set_parent_records(_BASE_RECORDS)


@pytest.fixture(scope="module")
def daemon(sts_world, pki, dns_world, tmp_path_factory):
    proc = DaemonProcess(tmp_path_factory.mktemp("daemon"), world_config(
        dns_world, pki, http_timeout_s=HTTP_TIMEOUT_S, txt_recheck_s=1, failure_ttl_s=0, negative_ttl_s=0))
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("label", list(SCENARIOS))
def test_scenario_over_socketmap_and_tcp_table(daemon, label):
    expected = SCENARIOS[label][2]
    for table in (daemon.socketmap_map(), daemon.tcp_map(), f"socketmap:unix:{daemon.unix_path}:postfix"):
        code, out = daemon.postmap(f"{label}.test", table)
        if expected is None:
            assert (code, out) == (1, ""), f"{table}: {out}\n{daemon.log_tail()}"
        else:
            assert (code, out) == (0, expected), f"{table}\n{daemon.log_tail()}"


def test_rejected_policies_are_logged_with_reasons(daemon):
    for label in ("wrong-name", "expired", "redirect", "wrong-type", "oversize", "notfound", "slow", "bad-maxage"):
        daemon.postmap(f"{label}.test")
    log = daemon.log_path.read_text()
    assert "wrong-name.test: sts-webpki-invalid" in log
    assert "expired.test: sts-webpki-invalid" in log
    assert "redirect.test: sts-policy-fetch-error" in log and "HTTP 301" in log
    assert "wrong-type.test: sts-policy-invalid" in log and "text/html" in log
    assert "oversize.test: sts-policy-fetch-error" in log and "larger than 65536" in log
    assert "notfound.test: sts-policy-fetch-error" in log and "HTTP 404" in log
    assert "slow.test: sts-policy-fetch-error" in log
    assert "bad-maxage.test: sts-policy-invalid" in log
    assert "delivering as if no MTA-STS policy" in log


def test_no_txt_means_no_fetch(daemon, policy_server):
    daemon.postmap("no-txt.test")
    daemon.postmap("two-txt.test")
    assert policy_server.hits("mta-sts.no-txt.test") == 0
    assert policy_server.hits("mta-sts.two-txt.test") == 0


def test_slow_policy_host_times_out_without_blocking_others(daemon):
    started = time.monotonic()
    assert daemon.postmap("slow.test") == (1, "")
    assert time.monotonic() - started < HTTP_TIMEOUT_S + 2.5


def test_idn_key_in_unicode(daemon):
    assert daemon.postmap("bücher.test")[1] == "secure match=mx.xn--bcher-kva.test servername=hostname"
    assert daemon.postmap("BÜCHER.TEST.")[1] == "secure match=mx.xn--bcher-kva.test servername=hostname"


def test_parent_probes_and_explicit_hosts_are_notfound_without_dns(daemon):
    for key in (".enforce-one.test", ".test", "[mx1.enforce-one.test]", "[mx1.enforce-one.test]:25"):
        assert daemon.postmap(key) == (1, "")


def test_tlsrpt_attributes_only_for_the_tlsrpt_map(daemon):
    code, out = daemon.postmap("enforce-one.test", daemon.socketmap_map("postfix-tlsrpt"))
    assert code == 0
    assert out.startswith("secure match=mx1.enforce-one.test servername=hostname policy_type=sts "
                          "policy_domain=enforce-one.test mx_host_pattern=mx1.enforce-one.test")
    assert "{ policy_string = mode: enforce }" in out
    assert "policy_type" not in daemon.postmap("enforce-one.test")[1]


def test_txt_id_change_is_picked_up(daemon, sts_world):
    dns_world, policy_server = sts_world
    assert daemon.postmap("idchange.test")[1] == "secure match=mx1.idchange.test servername=hostname"
    policy_server.set("mta-sts.idchange.test", Route(body=sts_policy("mx2.idchange.test")))
    assert daemon.postmap("idchange.test")[1] == "secure match=mx1.idchange.test servername=hostname"
    dns_world.set_parent_records(parent_records({"idchange": ["v=STSv1; id=2"]}))
    deadline = time.monotonic() + 15
    answer = None
    while time.monotonic() < deadline:
        answer = daemon.postmap("idchange.test")[1]
        if answer == "secure match=mx2.idchange.test servername=hostname":
            break
        time.sleep(0.3)
    assert answer == "secure match=mx2.idchange.test servername=hostname", daemon.log_tail()
    dns_world.set_parent_records(parent_records())


def test_policy_survives_restart_with_policy_host_down(daemon, sts_world):
    dns_world, policy_server = sts_world
    assert daemon.postmap("persist.test")[1] == "secure match=mx.persist.test servername=hostname"
    daemon.stop()
    # The attacker's view: a new TXT id and a policy host that fails.
    policy_server.set("mta-sts.persist.test", Route(status=503, body=b"down"))
    dns_world.set_parent_records(parent_records({"persist": ["v=STSv1; id=attacker"]}))
    try:
        daemon.start()
        for _ in range(3):
            assert daemon.postmap("persist.test")[1] == "secure match=mx.persist.test servername=hostname"
            time.sleep(1.2)   # past txt_recheck_s: the failed re-fetch must not drop the policy
    finally:
        dns_world.set_parent_records(parent_records())
        policy_server.set("mta-sts.persist.test", SCENARIOS["persist"][1])


def test_notify_ready_came_after_listening(daemon):
    assert any("READY=1" in n for n in daemon.notifications)
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=5):
        pass
