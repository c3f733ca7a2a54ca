"""Receiving side of the real-MTA tests: MX hosts, their DNS and policies, and the daemon.

Each destination domain is a DNSSEC-signed child zone of the world with one
MX host on its own loopback address (``addresses.MX_NET``.x, port 25), served by
a small STARTTLS SMTP server presenting the certificate the case needs.
The sending MTA (Postfix or Exim) asks the daemon for each domain's policy;
what the MX hosts received is what the tests judge.

| domain                 | published                                   | MX certificate      | expected |
|------------------------|---------------------------------------------|---------------------|----------|
| mta-sts-good.test      | MTA-STS enforce, mx: mx.mta-sts-good.test   | good                | sent, verified |
| mta-sts-badcert.test   | MTA-STS enforce                             | wrong name          | deferred |
| mta-sts-outside.test   | MTA-STS enforce, mx not covering its MX     | good (for its name) | deferred |
| mta-dane-good.test     | TLSA 3 1 1 matching the MX key              | good                | sent (dane-only) |
| mta-dane-bad.test      | TLSA 3 1 1 of another key                   | good                | deferred |
| mta-plain.test         | nothing                                     | self-signed         | sent, opportunistic TLS |
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.world.daemon import DaemonProcess, free_port
from tests.world.smtp_host import SmtpHost
from tests.world import Route, Zone
from tests.world.policy_server import sts_policy
from tests.world.addresses import MX_NET, POLICY_IP


@dataclass(frozen=True)
class Case:
    domain: str
    address: str
    cert: str                    # pki kind the MX presents
    sts_mx: tuple[str, ...] = ()  # MTA-STS enforce policy mx lines; () for none
    tlsa: str = ""               # "match" | "mismatch" | ""
    delivered: bool = True

    @property
    def mx(self) -> str:
        return f"mx.{self.domain}"


CASES = {case.domain: case for case in (
    Case("mta-sts-good.test", f"{MX_NET}.1", "good", sts_mx=("mx.mta-sts-good.test",)),
    Case("mta-sts-badcert.test", f"{MX_NET}.2", "wrong-name", sts_mx=("mx.mta-sts-badcert.test",),
         delivered=False),
    Case("mta-sts-outside.test", f"{MX_NET}.3", "good", sts_mx=("*.elsewhere.test",), delivered=False),
    Case("mta-dane-good.test", f"{MX_NET}.4", "good", tlsa="match"),
    Case("mta-dane-bad.test", f"{MX_NET}.5", "good", tlsa="mismatch", delivered=False),
    Case("mta-plain.test", f"{MX_NET}.6", "self-signed"),
)}


def _zone(case: Case, pki) -> Zone:
    records = ["@ IN MX 10 mx", f"mx IN A {case.address}"]
    if case.sts_mx:
        records += ['_mta-sts IN TXT "v=STSv1; id=mta1"', f"mta-sts IN A {POLICY_IP}"]
    if case.tlsa:
        key_of = case.mx if case.tlsa == "match" else f"other.{case.domain}"
        records.append(f"_25._tcp.mx IN TLSA 3 1 1 {pki.tlsa_data(key_of)}")
    return Zone(case.domain, records)


@dataclass
class MtaWorld:
    mx_hosts: dict[str, SmtpHost]   # by domain
    daemon: DaemonProcess
    readsocket_port: int
    resolver: str                   # the validating resolver's address (port 53)
    ca_file: Path
    exim_event_socket: Path         # the daemon's TLS-RPT feed for Exim's event_action

    def spooled(self) -> list[tuple[str, str, str]]:
        """(report domain, kind, failure JSON) rows of the daemon's TLS-RPT spool."""
        with sqlite3.connect(self.daemon.workdir / "state" / "cache.sqlite3") as db:
            return db.execute("SELECT report_domain, kind, failure FROM tlsrpt_outcome").fetchall()

    def received(self, domain: str, marker: str) -> list:
        return [m for m in self.mx_hosts[domain].received() if marker.encode() in m.data]


@pytest.fixture(scope="module")
def mta_world(dns_world, policy_server, pki, tmp_path_factory) -> Iterator[MtaWorld]:
    """The MX hosts, their zones and policies, and a daemon that answers for them."""
    dns_world.add_zones([_zone(case, pki) for case in CASES.values()])
    for case in CASES.values():
        if case.sts_mx:
            policy_server.set(f"mta-sts.{case.domain}", Route(body=sts_policy(*case.sts_mx)))
    resolver_ip, resolver_port = dns_world.resolver()
    assert resolver_port == 53, "the MTAs' libc resolver only speaks to port 53"
    readsocket_port = free_port()
    sockets = Path(tempfile.mkdtemp(prefix="mta-sockets-"))
    sockets.chmod(0o755)   # Exim's deliveries (Debian-exim) connect to the event socket
    daemon = DaemonProcess(tmp_path_factory.mktemp("mta-daemon"), f"""
[[listen]]
protocol = "readsocket"
tcp = "127.0.0.1:{readsocket_port}"
map_name = "exim"

[dns]
nameservers = ["{resolver_ip}"]
timeout_s = 3

[dane]
probe_name = "test."
probe_type = "SOA"

[mta_sts]
ca_file = "{pki.ca_file}"

[tlsrpt]
exim_event_socket = "{sockets / 'exim-events.sock'}"
exim_event_socket_mode = "0666"
""")
    hosts: dict[str, SmtpHost] = {}
    try:
        for case in CASES.values():
            host = SmtpHost(case.mx, case.address, pki.server_context(case.mx, case.cert))
            host.start()
            hosts[case.domain] = host
        daemon.start()
        yield MtaWorld(hosts, daemon, readsocket_port, resolver_ip, pki.ca_file, sockets / "exim-events.sock")
    finally:
        daemon.stop()
        shutil.rmtree(sockets, ignore_errors=True)
        for host in hosts.values():
            host.stop()
