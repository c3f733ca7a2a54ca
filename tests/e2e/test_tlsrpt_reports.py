"""The bugs of issue 11 in ``mtasts-resolver report``, against real receivers.

One spool (libtlsrpt datagrams through the real collector) holds a day for
five domains; their ``_smtp._tls`` records are in the test world's DNS: a
good one, a malformed one (``rua=https://[x``), one whose first rua host has
an underscore, one whose https host refuses connections, and a mailto one
delivered with ``mail_submission = "smtp"`` to a sink on 127.0.0.1 that
presents a self-signed ("snakeoil") certificate.  Each https report must
satisfy a strict RFC 8460 reading (:func:`report_problems`); the mail's DKIM
signature must verify on the bytes that arrived.
"""

from __future__ import annotations

import datetime
import gzip
import json
import socket
import time

import dkim
import pytest

from tests.world import libtlsrpt as lt
from tests.world.daemon import DaemonProcess, free_port, world_config
from tests.world.postfix import private_workdir
from tests.world.receiver import ReportReceiver
from tests.world.smtp_host import SmtpHost
from tests.world.tlsrpt import (DKIM_SELECTOR, NET, dkim_key, dnsfunc, report_problems, run_report, spooled_sessions,
                                txt_record, wait_until)

TODAY = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
SUBMITTER = "rpt-rp-sender.test"
COLLECT = "rpt-rp-collect.test"
RUA = {"rpt-rp-good": f"https://{COLLECT}/good",
       "rpt-rp-bracket": "https://[x",
       "rpt-rp-under": f"https://a_b.{COLLECT}/under,https://{COLLECT}/under",
       "rpt-rp-down": "https://rpt-rp-down.test/r",
       "rpt-rp-mail": "mailto:tlsrpt@rpt-rp-mail.test"}


@pytest.fixture(scope="module")
def reports(dns_world, pki):
    base = list(dns_world.parent_records)
    with private_workdir("mtasts-rptrp-") as work:
        key_file, dkim_txt = dkim_key(work)
        records = [f"rpt-rp-collect 60 IN A {NET}.30", f"rpt-rp-down 60 IN A {NET}.31",
                   txt_record(f"{DKIM_SELECTOR}._domainkey.rpt-rp-sender", dkim_txt)]
        records += [f'_smtp._tls.{label} 60 IN TXT "v=TLSRPTv1; rua={rua}"' for label, rua in RUA.items()]
        dns_world.set_parent_records(base + records)
        receiver = ReportReceiver(f"{NET}.30", pki.server_context(COLLECT))
        sink = SmtpHost("localhost", "127.0.0.1", pki.server_context("localhost", "self-signed"), port=free_port())
        daemon = DaemonProcess(work / "daemon", f"""
[tlsrpt]
collector_socket = "{work / 'tlsrpt.sock'}"
spool_flush_interval_s = 0.1
organization_name = "rpt reports test"
contact_info = "tlsrpt@{SUBMITTER}"
dkim_selector = "{DKIM_SELECTOR}"
dkim_key_file = "{key_file}"
mail_submission = "smtp"
smtp_server = "127.0.0.1:{sink.port}"
ca_file = "{pki.ca_file}"
send_delay_max_s = 0
retry_initial_s = 1
delivery_timeout_s = 10

{world_config(dns_world, pki)}""")
        receiver.start()
        sink.start()
        daemon.start()
        try:
            policy = lt.Policy(lt.TLSRPT_POLICY_STS, None, ["version: STSv1", "mode: enforce", "mx: mx.x.test",
                                                            "max_age: 86400"], ["mx.x.test"],
                               [lt.Failure(lt.CERTIFICATE_EXPIRED, "192.0.2.2", "mx.x.test", None, "192.0.2.25")],
                               final_failure=True)
            datagrams = []
            for label, rua in RUA.items():
                policy.domain = f"{label}.test"
                datagrams.append(lt.datagram(f"{label}.test", f"v=TLSRPTv1; rua={rua}", [policy]))
            lt_send(work / "tlsrpt.sock", datagrams)
            db = daemon.workdir / "state" / "cache.sqlite3"
            wait_until(lambda: spooled_sessions(db) >= len(RUA), 10, f"spooled\n{daemon.log_tail()}")
            yield daemon, receiver, sink
        finally:
            daemon.stop()
            sink.stop()
            receiver.stop()
            dns_world.set_parent_records(base)


def lt_send(path, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, str(path))


def status_lines(daemon: DaemonProcess) -> str:
    return run_report(daemon.config_path, "--status").stdout


def test_one_bad_record_or_destination_skips_only_itself_and_the_run_says_so(reports):
    daemon, receiver, sink = reports
    result = run_report(daemon.config_path, "--day", TODAY)
    # The refused https host and the relay's self-signed certificate are failures of this run: retried, exit 75.
    # A stranger's malformed record is not one (retrying cannot fix it): its report state says why.
    assert result.returncode == 75, result.stdout + result.stderr
    assert "rpt-rp-down.test/r" in result.stderr and "certificate" in result.stderr, result.stderr
    unusable = result.stderr.split("cannot be used", 1)[1].split("failed this run", 1)[0]
    assert "rpt-rp-bracket.test" in unusable and "a_b.rpt-rp-collect.test" in unusable, result.stderr
    posts = {post.path: post for post in receiver.received()}
    assert set(posts) == {"/good", "/under"}
    for path, domain in (("/good", "rpt-rp-good.test"), ("/under", "rpt-rp-under.test")):
        report = json.loads(gzip.decompress(posts[path].body))
        assert report_problems(report) == [], report
        [entry] = report["policies"]
        assert entry["policy"]["policy-domain"] == domain
        assert entry["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    status = status_lines(daemon)
    lines = status.splitlines()
    [at] = [n for n, line in enumerate(lines) if f"{TODAY}  rpt-rp-bracket.test  no-record" in line]
    assert "https://[x" in lines[at + 1], status   # the reason, under the report
    assert f"https://a_b.{COLLECT}/under: failed, 0 attempt(s)" in status, status   # never tried: why is logged
    assert "rejected: not used: host 'a_b.rpt-rp-collect.test' is not a DNS host name" in status, status
    assert "https://rpt-rp-down.test/r: pending, 1 attempt(s)" in status, status
    assert "sending" not in status and "uncertain" not in status, status


def test_smtp_submission_to_a_snakeoil_relay_is_explicit_and_dkim_verifies(reports, dns_world):
    daemon, receiver, sink = reports
    status = status_lines(daemon)
    assert "mailto:tlsrpt@rpt-rp-mail.test: pending, 1 attempt(s)" in status, status   # verified by default: refused
    assert sink.received() == []
    relaxed = daemon.config_path.with_name("relaxed.toml")
    relaxed.write_text(daemon.config_path.read_text().replace('mail_submission = "smtp"',
                                                              'mail_submission = "smtp"\nsmtp_tls_verify = false'))
    time.sleep(1.2)   # retry_initial_s
    result = run_report(relaxed)
    assert "to mailto:tlsrpt@rpt-rp-mail.test: submitted over SMTP" in result.stderr, result.stderr
    [mail] = sink.received()
    assert mail.tls and mail.rcpt_to == ("<tlsrpt@rpt-rp-mail.test>",)
    assert b"\r\r\n" not in mail.data and mail.data.count(b"\r\n") == mail.data.count(b"\n")
    assert dkim.verify(mail.data, dnsfunc=dnsfunc(dns_world.resolver()), tlsrpt="strict"), "DKIM signature"
    assert "mailto:tlsrpt@rpt-rp-mail.test: sent, 2 attempt(s)" in status_lines(daemon)
