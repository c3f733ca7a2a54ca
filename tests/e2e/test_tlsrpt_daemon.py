"""The bugs of issue 11 that live in the daemon's feeds, each against the real daemon as a subprocess.

Each test starts its own daemon (real sockets, the real spool file) and
judges what the spool holds afterwards, or what a sender saw: the daemon's
own policy-fetch failures, a policy resolved by another worker, a Postfix
log backlog from yesterday, a steady datagram stream and SIGTERM during it,
hostile datagrams, Postfix >= 3.10 naming the MX host as DANE policy domain,
and Exim's ``OK`` surviving ``kill -9``.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.world import Route, Zone
from tests.world import libtlsrpt as lt
from tests.world.addresses import POLICY_IP
from tests.world.daemon import DaemonProcess, world_config
from tests.world.policy_server import sts_policy
from tests.world.postfix import private_workdir
from tests.world.tlsrpt import NET, kernel_source, spool_rows, spooled_sessions, wait_until

NOW = datetime.datetime.now(datetime.timezone.utc)
TODAY = NOW.strftime("%Y-%m-%d")
YESTERDAY = (NOW - datetime.timedelta(days=1)).strftime("%Y-%m-%d")
RECORD = "v=TLSRPTv1; rua=mailto:tlsrpt@rpt-fx.test"
STS_LINES = ["version: STSv1", "mode: enforce", "mx: mx.rpt-fx.test", "max_age: 86400"]
WORKER_INDEX_ENV = "MTASTS_RESOLVER_WORKER"   # app/workers.py


def daemon_in(work, tlsrpt: str, extra: str = "", flush_interval_s: float = 0.1) -> DaemonProcess:
    return DaemonProcess(work / "daemon", f"[tlsrpt]\nspool_flush_interval_s = {flush_interval_s}\n{tlsrpt}\n{extra}")


def cache_db(daemon: DaemonProcess):
    return daemon.workdir / "state" / "cache.sqlite3"


def by_domain(db, day: str = TODAY) -> dict[str, list[tuple[dict, str, dict | None, int]]]:
    """The spool's rows of ``day`` per report domain: (policy, kind, failure, sessions)."""
    rows: dict[str, list] = {}
    for domain, policy, kind, failure, sessions in spool_rows(db, day):
        rows.setdefault(domain, []).append((json.loads(policy), kind, json.loads(failure) if failure else None,
                                            sessions))
    return rows


# -- the daemon's own policy-fetch failures ---------------------------------------------------------------------

def test_own_fetch_failures_carry_sending_mta_ip_and_a_policy_string(dns_world, policy_server, pki):
    digest = pki.tlsa_data("mx.rpt-fx-dane.test")
    dns_world.add_zones([
        Zone("rpt-fx-fetch.test", ["@ IN MX 10 mx", f"mx IN A {NET}.40", '_mta-sts IN TXT "v=STSv1; id=fx1"',
                                   f"mta-sts IN A {POLICY_IP}"]),
        # PKIX-EE usage only: DANE applies, no record is usable (tlsa-invalid)
        Zone("rpt-fx-dane.test", ["@ IN MX 10 mx", f"mx IN A {NET}.41", f"_25._tcp.mx IN TLSA 1 1 1 {digest}"]),
    ])
    policy_server.set("mta-sts.rpt-fx-fetch.test", Route(status=500))
    with private_workdir("mtasts-rptfx-") as work:
        daemon = daemon_in(work, "", world_config(dns_world, pki) + '\n[dane]\nprobe_name = "test."\n'
                                                                    'probe_type = "SOA"\n')
        daemon.start()
        try:
            # a cold lookup may answer TEMP first: Postfix asks again
            wait_until(lambda: daemon.postmap("rpt-fx-dane.test") == (0, "dane"), 20, "the DANE answer")
            wait_until(lambda: daemon.postmap("rpt-fx-fetch.test")[0] == 1 and "in progress" not in
                       daemon.postmap("rpt-fx-fetch.test")[1], 20, "the MTA-STS answer")
            wait_until(lambda: len(by_domain(cache_db(daemon))) == 2, 20, f"both failures\n{daemon.log_tail()}")
            rows = by_domain(cache_db(daemon))
        finally:
            daemon.stop()
    [fetch] = [row for row in rows["rpt-fx-fetch.test"] if row[1] == "detail"]
    assert fetch[0] == {"policy-type": "sts", "policy-domain": "rpt-fx-fetch.test",
                        "policy-string": ["v=STSv1; id=fx1"]}    # nothing cached: the TXT record
    assert fetch[2]["result-type"] == "sts-policy-fetch-error" and "500" in fetch[2]["failure-reason-code"]
    internet = kernel_source("198.41.0.4") or kernel_source("2001:503:ba3e::2:30")
    assert fetch[2]["sending-mta-ip"] == internet and internet
    [dane] = [row for row in rows["rpt-fx-dane.test"] if row[1] == "detail"]
    assert dane[0] == {"policy-type": "tlsa", "policy-domain": "mx.rpt-fx-dane.test",
                       "policy-string": [f"1 1 1 {digest}"]}
    assert dane[2]["result-type"] == "tlsa-invalid" and dane[2]["receiving-mx-hostname"] == "mx.rpt-fx-dane.test"
    assert dane[2]["sending-mta-ip"] == kernel_source(f"{NET}.41") == "127.0.0.1"   # the route to the MX


# -- workers > 1: the feed knows a policy another worker resolved ---------------------------------------------

def worker_pids(parent: int) -> dict[int, int]:
    """worker index -> pid of a worker pool's children."""
    out = subprocess.run(["ps", "--ppid", str(parent), "-o", "pid="], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for pid in map(int, out.split()):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        index = next(v for k, _, v in (e.partition(b"=") for e in environ) if k == WORKER_INDEX_ENV.encode())
        found[int(index)] = pid
    return found


def postfix_lines(day: datetime.datetime, domain: str, mx: str, ip: str) -> str:
    """Postfix 3.7's lines of one session whose certificate names another host, dated ``day``."""
    stamp = day.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    return "".join(f"{stamp} sender postfix/smtp[4242]: {text}\n" for text in (
        f"server certificate verification failed for {mx}[{ip}]:25: num=62:hostname mismatch",
        f"Untrusted TLS connection established to {mx}[{ip}]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
        (f"4F00A1B2C3: to=<u@{domain}>, relay={mx}[{ip}]:25, delay=1, delays=0/0/1/0, dsn=4.7.5, "
         "status=deferred (Server certificate not verified)")))


def test_with_two_workers_the_feed_knows_the_policy_the_other_worker_fetched(dns_world, policy_server, pki):
    domain = "rpt-fx-pool.test"
    dns_world.add_zones([Zone(domain, ["@ IN MX 10 mx", f"mx IN A {NET}.42", '_mta-sts IN TXT "v=STSv1; id=p1"',
                                       f"mta-sts IN A {POLICY_IP}"])])
    policy_server.set(f"mta-sts.{domain}", Route(body=sts_policy(f"mx.{domain}")))
    with private_workdir("mtasts-rptpool-") as work:
        log = work / "maillog"
        log.write_text("")
        # worker 1's policy reaches the store up to 0.5 s after its answer; the feed reads the log every 0.1 s
        daemon = daemon_in(work, f'postfix_log = "{log}"\nlog_poll_interval_s = 0.1\n', world_config(dns_world, pki),
                           flush_interval_s=0.5)
        daemon.config_path.write_text(daemon.config_path.read_text().replace('log_level = "debug"',
                                                                             'log_level = "debug"\nworkers = 2'))
        daemon.start()
        try:
            workers = worker_pids(daemon.proc.pid)
            assert sorted(workers) == [0, 1]
            os.kill(workers[0], signal.SIGSTOP)   # worker 0 runs the feeds; worker 1 must resolve
            try:
                assert daemon.postmap(domain) == (0, "secure match=mx.rpt-fx-pool.test servername=hostname")
            finally:
                os.kill(workers[0], signal.SIGCONT)
            with log.open("a") as handle:   # at once, as Postfix would: before worker 1's commit, maybe
                handle.write(postfix_lines(NOW, domain, f"mx.{domain}", f"{NET}.42"))
            rows = wait_until(lambda: by_domain(cache_db(daemon)).get(domain), 10, f"the session\n{daemon.log_tail()}")
        finally:
            daemon.stop()
    kinds = {(kind, failure["result-type"] if failure else ""): n for _, kind, failure, n in rows}
    assert kinds == {("failure", ""): 1, ("detail", "certificate-host-mismatch"): 1}   # not a "success"
    assert {policy["policy-type"] for policy, *_ in rows} == {"sts"}
    assert rows[0][0]["policy-string"] == sts_policy(f"mx.{domain}").decode().splitlines()


# -- a backlog read after midnight --------------------------------------------------------------------------------

def test_a_postfix_backlog_counts_on_the_day_its_lines_say():
    with private_workdir("mtasts-rptbacklog-") as work:
        log = work / "maillog"
        evening = (NOW - datetime.timedelta(days=1)).replace(hour=23, minute=58)
        log.write_text(postfix_lines(evening, "rpt-fx-late.test", "mx.rpt-fx-late.test", f"{NET}.43"))
        daemon = daemon_in(work, f'postfix_log = "{log}"\nlog_poll_interval_s = 0.1\n')
        daemon.start()   # read now: today, after the midnight that followed the lines
        try:
            wait_until(lambda: spooled_sessions(cache_db(daemon)) >= 1, 10, f"the backlog\n{daemon.log_tail()}")
        finally:
            daemon.stop()
        assert "rpt-fx-late.test" in by_domain(cache_db(daemon), YESTERDAY)
        assert by_domain(cache_db(daemon), TODAY) == {}


# -- the datagram collector ---------------------------------------------------------------------------------------

def sts_datagram(domain: str) -> bytes:
    return lt.datagram(domain, RECORD, [lt.Policy(lt.TLSRPT_POLICY_STS, domain, STS_LINES)])


def collector_daemon(work, interval_s: float = 0.1, extra: str = "") -> DaemonProcess:
    daemon = DaemonProcess(work / "daemon", f'[tlsrpt]\ncollector_socket = "{work / "tlsrpt.sock"}"\n'
                                            f"spool_flush_interval_s = {interval_s}\n{extra}")
    return daemon


def send(path, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, str(path))


def test_a_steady_10_per_second_stream_is_committed_within_the_interval_and_sigterm_does_not_wait():
    interval_s = 0.5
    with private_workdir("mtasts-rptsteady-") as work:
        daemon = collector_daemon(work, interval_s)
        daemon.start()
        path, db = work / "tlsrpt.sock", cache_db(daemon)
        sent: list[float] = []
        stop = threading.Event()

        def stream() -> None:   # 10 datagrams a second, never pausing, until told to stop
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                while not stop.wait(0.1):
                    try:
                        sock.sendto(sts_datagram("rpt-fx-steady.test"), str(path))
                    except OSError:
                        return   # the socket is gone: the daemon stopped
                    sent.append(time.monotonic())
        thread = threading.Thread(target=stream)
        thread.start()
        try:
            lags = []
            for _ in range(6):   # while it flows: what was sent interval + 0.5 s ago is on disk
                time.sleep(0.5)
                committed, cutoff = spooled_sessions(db), time.monotonic() - interval_s - 0.5
                lags.append((committed, sum(1 for at in sent if at <= cutoff)))
            assert all(committed >= due for committed, due in lags), lags
            assert lags[-1][0] >= 20
            started = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)   # the stream goes on
            code = daemon.proc.wait(timeout=10)
            stopped_in = time.monotonic() - started
        finally:
            stop.set()
            thread.join()
            daemon.stop()
        print(f"\nSIGTERM under a 10/s stream: exit {code} after {stopped_in:.2f} s; committed while streaming "
              f"{lags}")
        assert code == 0 and stopped_in < 3.0
        assert spooled_sessions(db) >= len([at for at in sent if at <= started])   # what it read, it committed


def test_hostile_datagrams_cost_only_themselves():
    good = sts_datagram("rpt-fx-good.test")
    valid = json.loads(good)
    surrogate = json.dumps({**valid, "d": "rpt-fx-\ud800.test"}).encode()       # a lone surrogate, as \ud800
    list_for_number = json.dumps({**valid, "policies": [{**valid["policies"][0], "f": 1,
                                                          "failure-details": [{"c": [202]}]}]}).encode()
    deep = b'{"d": "rpt-fx-good.test","pr": "x","policies":' + b"[" * 30_000 + b"]" * 30_000 + b"}"   # valid JSON
    with private_workdir("mtasts-rpthostile-") as work:
        daemon = collector_daemon(work)
        daemon.start()
        path, db = work / "tlsrpt.sock", cache_db(daemon)
        try:
            # bad ones in the same batch as good ones, then good ones in later commits
            send(path, [good, surrogate, good, list_for_number, good, deep, good])
            send(path, [good, deep, good])
            wait_until(lambda: spooled_sessions(db) >= 6, 10, f"the good ones\n{daemon.log_tail()}")
            time.sleep(0.5)
            send(path, [good] * 3)   # later commits still work
            wait_until(lambda: spooled_sessions(db) >= 9, 10, f"commits after the bad ones\n{daemon.log_tail()}")
            time.sleep(0.3)
        finally:
            assert daemon.stop() == 0, daemon.log_tail()
        assert spooled_sessions(db) == 9
        assert set(by_domain(db)) == {"rpt-fx-good.test"}
        log = daemon.log_path.read_text()
        assert log.count("ignoring a datagram") == 4 and "Traceback" not in log, log[-3000:]


def test_postfix_3_10_dane_datagram_naming_the_mx_host_goes_to_both_reports():
    """libtlsrpt's policy-domain is the TLSA base (the MX host); "d" is the recipient domain."""
    records = ["3 1 1 " + "ab" * 32]
    policy = lt.Policy(lt.TLSRPT_POLICY_TLSA, "mx.rpt-fx-hoster.test", records, [],
                       [lt.Failure(lt.STARTTLS_NOT_SUPPORTED, "192.0.2.2", "mx.rpt-fx-hoster.test", None,
                                   "192.0.2.25")], final_failure=True)
    with private_workdir("mtasts-rpt310-") as work:
        daemon = collector_daemon(work)
        daemon.start()
        try:
            send(work / "tlsrpt.sock", [lt.datagram("rpt-fx-customer.test", RECORD, [policy])])
            wait_until(lambda: spooled_sessions(cache_db(daemon)) >= 2, 10, f"spooled\n{daemon.log_tail()}")
        finally:
            daemon.stop()
        rows = by_domain(cache_db(daemon))
    assert set(rows) == {"rpt-fx-customer.test", "mx.rpt-fx-hoster.test"}
    for report_domain, entries in rows.items():
        assert {p["policy-domain"] for p, *_ in entries} == {report_domain}   # never the MX host in the customer's
        assert {(kind, f["result-type"] if f else "") for _, kind, f, _ in entries} == {
            ("failure", ""), ("detail", "starttls-not-supported")}
        assert all(p["policy-type"] == "tlsa" and p["policy-string"] == records for p, *_ in entries)


# -- Exim's event socket --------------------------------------------------------------------------------------------

EVENT = ("tlsrpt-v1 event=tls:fail:connect domain=rpt-fx-exim.test host=mx.rpt-fx-exim.test ip=192.0.2.30 "
         "cipher= cv=no dane=no report=0 data=certificate verify failed\n")


@pytest.mark.parametrize("interval_s", [0.1, 2.0])
def test_an_exim_event_answered_ok_survives_kill_9(interval_s):
    """OK comes only after the commit: a kill -9 right after it loses nothing, whatever the interval."""
    with private_workdir("mtasts-rptexim-") as work:
        events = work / "exim-events.sock"
        daemon = DaemonProcess(work / "daemon", f'[tlsrpt]\nexim_event_socket = "{events}"\n'
                                                f"spool_flush_interval_s = {interval_s}\n")
        daemon.start()
        try:
            answers = []
            for _ in range(3):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.settimeout(interval_s + 5)
                    client.connect(str(events))
                    client.sendall(EVENT.encode())
                    client.shutdown(socket.SHUT_WR)   # as Exim's readsocket does
                    answers.append(client.recv(64))
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(10)
        finally:
            daemon.stop()
        assert answers == [b"OK\n"] * 3
        assert spooled_sessions(cache_db(daemon)) == 3
