"""The libtlsrpt datagram collector and crash safety, with the real daemon as a subprocess.

The daemon runs in its own network namespace with systemd's default
``net.unix.max_dgram_qlen`` (512); its collector socket is a file path that
senders in the host namespace reach as Postfix would.  kill -9 semantics:
an outcome is acknowledged when the daemon logs the commit that holds it
("spooled N ... (T since start)"); every acknowledged outcome survives
kill -9, and once the daemon is idle for spool_flush_interval_s every
datagram it received is acknowledged.
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
import signal
import socket
import threading
import time

import pytest

from tests.world.daemon import DaemonProcess
from tests.world import libtlsrpt as lt
from tests.world.postfix import private_workdir
from tests.world.receiver import ReportReceiver
from tests.world.tlsrpt import (NET, dkim_key, in_own_netns, run_report, spool_rows, spooled_sessions, start_report,
                                    wait_until)

TODAY = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
RECORD = "v=TLSRPTv1; rua=mailto:tlsrpt@rpt-dg.test"
STS_LINES = ["version: STSv1", "mode: enforce", "mx: *.mail.rpt-dg.test", "max_age: 86400"]
BURST_DATAGRAMS = 10_000
BURST_RATE_PER_S = 10_000
_SPOOLED = re.compile(r"spooled \d+ TLS-RPT sessions in \d+ counters \((\d+) since start\)")


def make_daemon(work, extra: str = "") -> DaemonProcess:
    daemon = DaemonProcess(work / "daemon", f"""
[tlsrpt]
collector_socket = "{work / 'tlsrpt.sock'}"
spool_flush_interval_s = 0.1
{extra}""")
    daemon.command_prefix = in_own_netns()
    return daemon


@pytest.fixture
def collector():
    with private_workdir("mtasts-rptdg-") as work:
        daemon = make_daemon(work)
        daemon.start()
        try:
            yield daemon, str(work / "tlsrpt.sock"), daemon.workdir / "state" / "cache.sqlite3"
        finally:
            daemon.stop()


def send(path: str, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, path)


def test_libtlsrpt_datagrams_become_spool_counters(collector):
    daemon, path, db = collector
    sts = lt.Policy(lt.TLSRPT_POLICY_STS, "rpt-dg.test", STS_LINES, ["*.mail.rpt-dg.test"])
    failed = lt.Policy(lt.TLSRPT_POLICY_STS, "rpt-dg.test", STS_LINES, ["*.mail.rpt-dg.test"], [
        lt.Failure(lt.CERTIFICATE_EXPIRED, "192.0.2.1", "mx1.mail.rpt-dg.test", "helo.rpt-dg.test", "198.51.100.7",
                   "https://example.test/info", "X509_V_ERR_CERT_HAS_EXPIRED"),
        lt.Failure(lt.CERTIFICATE_HOST_MISMATCH, "192.0.2.1", "mx2.mail.rpt-dg.test", None, "198.51.100.8")],
        final_failure=True)
    recovered = lt.Policy(lt.TLSRPT_POLICY_TLSA, "rpt-dg.test", ["3 1 1 " + "ab" * 32], [],
                          [lt.Failure(lt.TLSA_INVALID, "192.0.2.1", "mx1.mail.rpt-dg.test")], final_failure=False)
    send(path, [
        lt.datagram("rpt-dg.test", RECORD, [sts]),
        lt.datagram("RPT-DG.test.", RECORD, [sts]),               # case and root dot are folded
        lt.datagram("rpt-dg.test", RECORD, [failed]),
        lt.datagram("rpt-dg.test", RECORD, [recovered, lt.Policy(lt.TLSRPT_NO_POLICY_FOUND, None)]),
        b"not json", b'{"d": "rpt-dg.test","pr": "x","policies":[{"policy-type":7,"t":0,"f":0}]}',
    ])
    wait_until(lambda: spooled_sessions(db) >= 5, 10, f"spooled datagrams\n{daemon.log_tail()}")
    counts = {(json.loads(p)["policy-type"], kind, json.loads(f)["result-type"] if f else ""): n
              for domain, p, kind, f, n in spool_rows(db, TODAY)}
    assert counts == {("sts", "success", ""): 2, ("sts", "failure", ""): 1,
                      ("sts", "detail", "certificate-expired"): 1, ("sts", "detail", "certificate-host-mismatch"): 1,
                      ("tlsa", "success", ""): 1, ("tlsa", "detail", "tlsa-invalid"): 1,
                      ("no-policy-found", "success", ""): 1}
    details = [json.loads(f) for _, _, kind, f, _ in spool_rows(db, TODAY) if "expired" in f]
    assert details == [{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
                        "receiving-mx-hostname": "mx1.mail.rpt-dg.test", "receiving-mx-helo": "helo.rpt-dg.test",
                        "receiving-ip": "198.51.100.7", "additional-information": "https://example.test/info",
                        "failure-reason-code": "X509_V_ERR_CERT_HAS_EXPIRED"}]
    assert {domain for domain, *_ in spool_rows(db, TODAY)} == {"rpt-dg.test"}
    log = daemon.log_path.read_text()
    assert "not JSON" in log and "unknown policy-type 7" in log


def test_burst_of_10000_in_a_second_none_lost(collector):
    """Sent non-blocking like libtlsrpt: a datagram the kernel refuses (EAGAIN) is a lost one."""
    daemon, path, db = collector
    datagrams = [lt.datagram(f"rpt-b{n % 50}.test", RECORD, [lt.Policy(lt.TLSRPT_POLICY_STS, f"rpt-b{n % 50}.test",
                                                                      STS_LINES)]) for n in range(BURST_DATAGRAMS)]
    refused = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        start = time.perf_counter()
        for n, data in enumerate(datagrams):
            while time.perf_counter() - start < n / BURST_RATE_PER_S:
                pass
            try:
                sock.sendto(data, socket.MSG_DONTWAIT, path)
            except BlockingIOError:
                refused += 1
        elapsed = time.perf_counter() - start
    print(f"\n{BURST_DATAGRAMS} datagrams in {elapsed:.3f} s ({BURST_DATAGRAMS / elapsed:.0f}/s), {refused} refused")
    assert elapsed <= 1.05   # the sender really sent them within about a second
    assert refused == 0
    wait_until(lambda: spooled_sessions(db) >= BURST_DATAGRAMS, 30, "the burst in the spool")
    time.sleep(0.3)
    assert spooled_sessions(db) == BURST_DATAGRAMS


def _acknowledged(daemon: DaemonProcess) -> int:
    totals = [int(m) for m in _SPOOLED.findall(daemon.log_path.read_text())]
    return totals[-1] if totals else 0


def test_kill_9_mid_burst_keeps_every_acknowledged_outcome():
    with private_workdir("mtasts-rptkill-") as work:
        daemon = make_daemon(work)
        path, db = str(work / "tlsrpt.sock"), daemon.workdir / "state" / "cache.sqlite3"
        daemon.start()
        data = lt.datagram("rpt-kill.test", RECORD, [lt.Policy(lt.TLSRPT_POLICY_STS, "rpt-kill.test", STS_LINES)])
        sent = [0]
        stop = threading.Event()

        def sender() -> None:   # blocking sends: every datagram reaches the socket queue while the daemon lives
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1)
                while not stop.is_set() and sent[0] < 200_000:
                    try:
                        sock.sendto(data, path)
                    except OSError:
                        return
                    sent[0] += 1
                    if sent[0] % 100 == 0:
                        time.sleep(0.005)
        thread = threading.Thread(target=sender)
        try:
            thread.start()
            wait_until(lambda: _acknowledged(daemon) >= 3000, 30, "acknowledged outcomes")
            daemon.stop(signal.SIGKILL)
            acknowledged = _acknowledged(daemon)
            stop.set()
            thread.join()
            assert daemon.proc.returncode == -signal.SIGKILL
            daemon.start()
            after = spooled_sessions(db)
            print(f"\nsent {sent[0]}, acknowledged {acknowledged}, in the spool after restart {after}")
            assert acknowledged <= after <= sent[0]
            # Idle: everything received is acknowledged within spool_flush_interval_s, and survives kill -9.
            send(path, [data] * 5000)
            wait_until(lambda: _acknowledged(daemon) >= 5000, 30, "the second batch acknowledged")
            daemon.stop(signal.SIGKILL)
            daemon.start()
            assert spooled_sessions(db) == after + 5000
        finally:
            stop.set()
            daemon.stop()


def test_kill_9_of_the_reporter_mid_send_never_sends_twice(dns_world, pki):
    with private_workdir("mtasts-rptrep-") as work:
        base = list(dns_world.parent_records)
        receiver = ReportReceiver(f"{NET}.21", pki.server_context("rpt-collect2.test"))
        key_file, _ = dkim_key(work)
        records = [f"rpt-collect2 60 IN A {NET}.21"]
        records += [f'_smtp._tls.rpt-k{n} 60 IN TXT "v=TLSRPTv1; rua=https://rpt-collect2.test/r{n}"' for n in (1, 2)]
        dns_world.set_parent_records(base + records)
        resolver_ip, resolver_port = dns_world.resolver()
        daemon = make_daemon(work, f"""
organization_name = "rpt kill test"
contact_info = "tlsrpt@rpt-sender.test"
dkim_selector = "sel1"
dkim_key_file = "{key_file}"
ca_file = "{pki.ca_file}"
send_delay_max_s = 0

[dns]
nameservers = ["{resolver_ip}"]
port = {resolver_port}
""")
        receiver.start()
        daemon.start()
        try:
            send(str(work / "tlsrpt.sock"), [lt.datagram(f"rpt-k{n}.test", RECORD, [lt.Policy(
                lt.TLSRPT_POLICY_STS, f"rpt-k{n}.test", STS_LINES)]) for n in (1, 2)])
            db = daemon.workdir / "state" / "cache.sqlite3"
            wait_until(lambda: spooled_sessions(db) >= 2, 10, "spooled")
            receiver.hang_s = 30   # the first POST is received but not answered
            reporter = start_report(daemon.config_path, "--day", TODAY)
            try:
                assert receiver.request_seen.wait(30), reporter.stdout.read1() if reporter.stdout else ""
                reporter.send_signal(signal.SIGKILL)
                reporter.wait(10)
            finally:
                if reporter.poll() is None:
                    reporter.kill()
            result = run_report(daemon.config_path)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "not sending again" in result.stderr
            result = run_report(daemon.config_path)   # and again: nothing more goes out
            assert result.returncode == 0
            posts = receiver.received()
            ids = [json.loads(gzip.decompress(p.body))["report-id"] for p in posts]
            assert len(posts) == 2 and len(set(ids)) == 2, ids   # each report seen once
            status = run_report(daemon.config_path, "--status").stdout
            states = sorted(line.split(": ")[1].split(",")[0] for line in status.splitlines()
                            if "https://rpt-collect2.test/" in line and "attempt(s)" in line)
            assert states == ["sent", "uncertain"], status
        finally:
            daemon.stop()
            receiver.stop()
            dns_world.set_parent_records(base)
