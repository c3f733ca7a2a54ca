"""A fleet on one real PostgreSQL store: 3 daemons count outcomes into one day, 2 reporters send it once.

Three daemons (three "hosts": each its own state directory, collector
socket and config) take libtlsrpt datagrams for three domains; one daemon is
killed with SIGKILL mid-day, after its outcomes were committed, and the
other two take more.  Then two reporters run on "different hosts" (their
own configs): the first is killed while its first report is on the wire
(the receiver holds the request), the second meanwhile finds the fleet's
report lock taken (exit 75), then takes over.  Every domain must get exactly
one report, whose counts are every session of every daemon, once; the
delivery the killed run had on the wire is ``uncertain``, never sent again.
"""

from __future__ import annotations

import datetime
import gzip
import json
import signal
import socket
from collections import Counter

import pytest

from tests.world import libtlsrpt as lt
from tests.world.daemon import DaemonProcess, world_config
from tests.world.postfix import private_workdir
from tests.world.receiver import ReportReceiver
from tests.world.tlsrpt import (
    DKIM_SELECTOR,
    NET,
    dkim_key,
    report_problems,
    run_report,
    start_report,
    txt_record,
    wait_until,
)

TODAY = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
SUBMITTER = "fleet-sender.test"
COLLECT = "fleet-collect.test"
RECEIVER_IP = f"{NET}.60"
DOMAINS = ("fleet-a.test", "fleet-b.test", "fleet-c.test")
STS = ["version: STSv1", "mode: enforce", "mx: mx.fleet.test", "max_age: 86400"]


def record(domain: str) -> str:
    return f"v=TLSRPTv1; rua=https://{COLLECT}/{domain}"


def session(domain: str, failed: bool) -> bytes:
    failures = [lt.Failure(lt.CERTIFICATE_EXPIRED, "192.0.2.2", "mx.fleet.test", None, "192.0.2.25")] if failed else []
    policy = lt.Policy(lt.TLSRPT_POLICY_STS, domain, STS, ["mx.fleet.test"], failures, final_failure=failed)
    return lt.datagram(domain, record(domain), [policy])


class Fleet:
    """The daemons, what each was sent, and the PostgreSQL database they share."""

    def __init__(self, work, postgres, dns_world, pki, key_file) -> None:
        self.postgres = postgres
        self.dsn = postgres.database("fleet")
        self.sent: Counter[tuple[str, bool]] = Counter()   # (domain, failed) -> sessions
        self.daemons = [DaemonProcess(work / f"host{n}", f"""
[cache]
backend = "postgresql"
dsn = "{self.dsn}"

[tlsrpt]
collector_socket = "{work / f'host{n}' / 'tlsrpt.sock'}"
spool_flush_interval_s = 0.1
organization_name = "fleet test"
contact_info = "tlsrpt@{SUBMITTER}"
dkim_selector = "{DKIM_SELECTOR}"
dkim_key_file = "{key_file}"
ca_file = "{pki.ca_file}"
send_delay_max_s = 0
delivery_timeout_s = 30

{world_config(dns_world, pki)}""") for n in range(3)]

    def send(self, daemon: DaemonProcess, domain: str, successes: int, failures: int) -> None:
        path = daemon.config_path.parent / "tlsrpt.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            for failed in [False] * successes + [True] * failures:
                sock.sendto(session(domain, failed), str(path))
                self.sent[(domain, failed)] += 1

    def committed(self) -> Counter[tuple[str, bool]]:
        rows = self.postgres.sql(self.dsn, "SELECT report_domain, kind, sum(sessions) FROM tlsrpt_outcome "
                                           "WHERE day = %s AND kind IN ('success', 'failure') "
                                           "GROUP BY report_domain, kind", (TODAY,))
        return Counter({(domain, kind == "failure"): int(total) for domain, kind, total in rows})


@pytest.fixture
def fleet(tmp_path, postgres, dns_world, pki):
    base = list(dns_world.parent_records)
    with private_workdir("mtasts-fleet-") as work:
        key_file, dkim_txt = dkim_key(work)
        records = [f"fleet-collect 60 IN A {RECEIVER_IP}",
                   txt_record(f"{DKIM_SELECTOR}._domainkey.fleet-sender", dkim_txt)]
        records += [f'_smtp._tls.{domain.removesuffix(".test")} 60 IN TXT "{record(domain)}"' for domain in DOMAINS]
        dns_world.set_parent_records(base + records)
        receiver = ReportReceiver(RECEIVER_IP, pki.server_context(COLLECT))
        fleet = Fleet(work, postgres, dns_world, pki, key_file)
        receiver.start()
        try:
            for daemon in fleet.daemons:
                daemon.start()
            yield fleet, receiver
        finally:
            for daemon in fleet.daemons:
                daemon.stop()
            receiver.stop()
            dns_world.set_parent_records(base)


def test_three_daemons_two_reporters_one_killed_of_each_one_report_per_domain(fleet):
    fleet, receiver = fleet
    first, killed, third = fleet.daemons
    for n, daemon in enumerate(fleet.daemons):
        for domain in DOMAINS:
            fleet.send(daemon, domain, successes=n + 1, failures=1)
    wait_until(lambda: fleet.committed() == fleet.sent, 15, f"every daemon's outcomes committed: {fleet.sent}")
    killed.stop(signal.SIGKILL)   # mid-day: what it committed counts, it takes no more
    fleet.send(first, DOMAINS[0], successes=5, failures=0)
    fleet.send(third, DOMAINS[2], successes=0, failures=2)
    wait_until(lambda: fleet.committed() == fleet.sent, 15, "the survivors' outcomes committed")

    receiver.hang_s = 120   # the first report's POST is held: the first reporter is killed while sending it
    reporter = start_report(first.config_path, "--day", TODAY)
    try:
        assert receiver.request_seen.wait(30), "the first reporter never posted"
        locked = run_report(third.config_path, "--day", TODAY)   # another host, meanwhile
        assert locked.returncode == 75 and "another report run" in locked.stderr, locked
        reporter.send_signal(signal.SIGKILL)
        reporter.wait(10)
    finally:
        reporter.kill()
        reporter.wait()
    takeover = run_report(third.config_path, "--day", TODAY)
    assert takeover.returncode == 0, takeover.stdout + takeover.stderr
    assert "stopped while sending; not sending again" in takeover.stderr, takeover.stderr
    again = run_report(first.config_path, "--day", TODAY)
    assert again.returncode == 0, again

    posts = receiver.received()
    assert sorted(post.path for post in posts) == sorted(f"/{domain}" for domain in DOMAINS)   # once each
    for post in posts:
        report = json.loads(gzip.decompress(post.body))
        assert report_problems(report) == [], report
        [entry] = report["policies"]
        domain = entry["policy"]["policy-domain"]
        assert post.path == f"/{domain}"
        assert entry["summary"] == {"total-successful-session-count": fleet.sent[(domain, False)],
                                    "total-failure-session-count": fleet.sent[(domain, True)]}, (domain, fleet.sent)
    states = fleet.postgres.sql(fleet.dsn, "SELECT r.report_domain, d.state FROM tlsrpt_report r "
                                           "JOIN tlsrpt_delivery d USING (report_id) ORDER BY 1")
    assert len(states) == len(DOMAINS) and sorted(state for _, state in states) == ["sent", "sent", "uncertain"]
