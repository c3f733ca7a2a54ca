"""End to end with real parts: Postfix 3.7 → the daemon's log follower → spool → report → MTA / HTTPS.

A private Postfix (Debian's package) asks the daemon for TLS policies over
socketmap and delivers test mail to MX hosts on loopback: one with a good
certificate, one with a certificate for the wrong name, one without
STARTTLS; and two DANE domains (TLSA 3 1 1 in the signed ``test.`` zone),
one whose MX matches its TLSA record, one whose MX offers no STARTTLS.
The daemon follows Postfix's real log and spools the sessions;
``mtasts-resolver report`` then builds the reports, sends the mailto ones
DKIM-signed through that Postfix (sendmail) to a test mailbox, POSTs the
MTA-STS https one to a local receiver that first answers 500, and the DANE
ones to another, where a strict reading of RFC 8460 judges them.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import gzip
import json
import time

import dkim
import pytest

from tests.world.daemon import DaemonProcess
from tests.world.postfix import PrivatePostfix, private_workdir
from tests.world.receiver import ReportReceiver
from tests.world.smtp_host import SmtpHost
from tests.world.tlsrpt import (DKIM_SELECTOR, NET, SUBMITTER, dkim_key, dnsfunc, kernel_source, report_problems,
                                run_report, spool_rows, txt_record, wait_until)
from tests.world import Route
from tests.world.fixtures import WORLD_ID

POLICY_IP = f"127.60.{WORLD_ID}.1"
MAILS = {"rpt-good": 3, "rpt-wrongname": 2, "rpt-nostarttls": 1}
DANE_MAILS = {"rpt-dane": 2, "rpt-danenotls": 1}   # DANE domains: MX with a matching TLSA record / no STARTTLS
DANE_IPS = {"rpt-dane": f"{NET}.14", "rpt-danenotls": f"{NET}.15"}
DANE_COLLECT_IP = f"{NET}.22"
RUA = {"rpt-good": "mailto:tlsrpt@rpt-reports.test",
       "rpt-wrongname": "https://rpt-collect.test/v1/tlsrpt",
       "rpt-nostarttls": "mailto:tls%2Dreports@rpt-reports.test"}   # percent-encoded, as RFC 8460 §3 allows
TODAY = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def dane_record(pki, label: str) -> str:
    """The TLSA record of a DANE domain's MX host: DANE-EE, SPKI, SHA-256 of its certificate's key."""
    return f"3 1 1 {pki.tlsa_data(f'mx.{label}.test')}"


def sts_policy(mx: str) -> bytes:
    return f"version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n".encode()


@pytest.fixture(scope="module")
def rpt(dns_world, policy_server, pki):
    with private_workdir("mtasts-rpt-") as work:
        yield from _rpt(dns_world, policy_server, pki, work)


def _rpt(dns_world, policy_server, pki, work):
    key_file, dkim_txt = dkim_key(work)
    base = list(dns_world.parent_records)
    records = [f"mx.rpt-reports 60 IN A {NET}.13", "rpt-reports 60 IN MX 10 mx.rpt-reports",
               f"rpt-collect 60 IN A {NET}.20", txt_record(f"{DKIM_SELECTOR}._domainkey.rpt-sender", dkim_txt)]
    hosts = {"rpt-good": ("good", f"{NET}.10"), "rpt-wrongname": ("wrong-name", f"{NET}.11"),
             "rpt-nostarttls": (None, f"{NET}.12")}
    for label, (_, ip) in hosts.items():
        records += [f"{label} 60 IN MX 10 mx.{label}", f"mx.{label} 60 IN A {ip}",
                    f'_mta-sts.{label} 60 IN TXT "v=STSv1; id=1"', f"mta-sts.{label} 60 IN A {POLICY_IP}",
                    f'_smtp._tls.{label} 60 IN TXT "v=TLSRPTv1; rua={RUA[label]}"']
        policy_server.set(f"mta-sts.{label}.test", Route(body=sts_policy(f"mx.{label}.test")))
    records.append(f"rpt-dane-collect 60 IN A {DANE_COLLECT_IP}")
    for label, ip in DANE_IPS.items():
        records += [f"{label} 60 IN MX 10 mx.{label}", f"mx.{label} 60 IN A {ip}",
                    f"_25._tcp.mx.{label} 60 IN TLSA {dane_record(pki, label)}",
                    f'_smtp._tls.{label} 60 IN TXT "v=TLSRPTv1; rua=https://rpt-dane-collect.test/{label}"']
    dns_world.set_parent_records(base + records)
    mx = {label: SmtpHost(f"mx.{label}.test", ip, pki.server_context(f"mx.{label}.test", kind) if kind else None)
          for label, (kind, ip) in hosts.items()}
    mx["rpt-reports"] = SmtpHost("mx.rpt-reports.test", f"{NET}.13", pki.server_context("mx.rpt-reports.test"))
    mx["rpt-dane"] = SmtpHost("mx.rpt-dane.test", DANE_IPS["rpt-dane"], pki.server_context("mx.rpt-dane.test"))
    mx["rpt-danenotls"] = SmtpHost("mx.rpt-danenotls.test", DANE_IPS["rpt-danenotls"], None)
    receiver = ReportReceiver(f"{NET}.20", pki.server_context("rpt-collect.test"))
    dane_receiver = ReportReceiver(DANE_COLLECT_IP, pki.server_context("rpt-dane-collect.test"))
    started = []
    try:
        for host in [*mx.values(), receiver, dane_receiver]:
            host.start()
            started.append(host)
        daemon = DaemonProcess(work / "daemon", "")
        postfix = PrivatePostfix(work / "postfix", f"{NET}.1", dns_world.resolver()[0], {
            "smtp_tls_security_level": "may",
            "smtp_tls_CAfile": str(pki.ca_file),
            "smtp_tls_policy_maps": daemon.socketmap_map(),
            "smtp_connection_cache_on_demand": "no",   # one TLS session per message: countable
            "smtp_dns_support_level": "dnssec",          # DANE (the daemon answers dane-only)
        })
        # glibc strips the AD bit unless told to trust the resolver (as in contrib/postfix/main.cf)
        postfix.resolv_conf.write_text(postfix.resolv_conf.read_text() + "options trust-ad\n")
        resolver_ip, resolver_port = dns_world.resolver()
        daemon.config_path.write_text(daemon.config_path.read_text() + f"""
[dns]
nameservers = ["{resolver_ip}"]
port = {resolver_port}
timeout_s = 2

[mta_sts]
ca_file = "{pki.ca_file}"

[dane]
probe_name = "test."
probe_type = "SOA"

[tlsrpt]
postfix_log = "{postfix.maillog}"
log_poll_interval_s = 0.2
organization_name = "rpt test org"
contact_info = "tlsrpt@{SUBMITTER}"
dkim_selector = "{DKIM_SELECTOR}"
dkim_key_file = "{key_file}"
sendmail_command = ["/usr/sbin/sendmail", "-C", "{postfix.conf}", "-i"]
ca_file = "{pki.ca_file}"
send_delay_max_s = 0
retry_initial_s = 1
""")
        daemon.start()
        try:
            postfix.start()
            try:
                yield daemon, postfix, mx, receiver, dane_receiver
            finally:
                postfix.stop()
        finally:
            daemon.stop()
    finally:
        for host in started:
            host.stop()
        dns_world.set_parent_records(base)


@pytest.fixture(scope="module")
def delivered(rpt):
    """Test mail sent through Postfix; returns once every delivery attempt is logged."""
    daemon, postfix, mx, receiver, _ = rpt
    for label, count in {**MAILS, **DANE_MAILS}.items():
        for n in range(count):
            postfix.sendmail("sender@rpt-world.test", f"user{n}@{label}.test",
                             f"Subject: test {n}\n\nhello {label}\n".encode())
    expected = sum(MAILS.values()) + sum(DANE_MAILS.values())
    wait_until(lambda: postfix.log_text().count(" status=") >= expected, 60,
               f"Postfix delivery attempts\n{postfix.log_text()}")
    db = daemon.workdir / "state" / "cache.sqlite3"
    wait_until(lambda: sum(r[4] for r in spool_rows(db, TODAY) if r[2] != "detail") >= expected, 20,
               f"spooled sessions\n{daemon.log_tail()}")
    return db


def test_postfix_log_becomes_the_right_counts_and_result_types(rpt, delivered, pki):
    daemon, postfix, mx, receiver, _ = rpt
    assert len(mx["rpt-good"].received()) == MAILS["rpt-good"]
    assert mx["rpt-wrongname"].received() == [] and mx["rpt-nostarttls"].received() == []
    rows = spool_rows(delivered, TODAY)
    by_domain: dict[str, dict] = {}
    for domain, policy, kind, failure, sessions in rows:
        entry = by_domain.setdefault(domain, {"policy": json.loads(policy), "counts": {}})
        entry["counts"][(kind, json.loads(failure)["result-type"] if failure else "")] = sessions
        if failure:
            detail = json.loads(failure)
            mx_host = domain if domain.startswith("mx.") else f"mx.{domain}"   # an MX host's own report
            assert detail["receiving-mx-hostname"] == mx_host and detail["receiving-ip"].startswith(NET)
            # without configuration: the source address of the kernel's route to the MX
            assert detail["sending-mta-ip"] == kernel_source(detail["receiving-ip"]) and detail["sending-mta-ip"]
    sts_domains = {f"{label}.test" for label in MAILS}
    dane_domains = {f"{label}.test" for label in DANE_MAILS}
    assert set(by_domain) == sts_domains | dane_domains | {f"mx.{domain}" for domain in dane_domains}, rows
    for label in MAILS:
        policy = by_domain[f"{label}.test"]["policy"]
        assert policy == {"policy-type": "sts", "policy-domain": f"{label}.test", "mx-host": [f"mx.{label}.test"],
                          "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{label}.test",
                                            "max_age: 86400"]}
    assert by_domain["rpt-good.test"]["counts"] == {("success", ""): 3}
    assert by_domain["rpt-wrongname.test"]["counts"] == {("failure", ""): 2,
                                                         ("detail", "certificate-host-mismatch"): 2}
    assert by_domain["rpt-nostarttls.test"]["counts"] == {("failure", ""): 1,
                                                          ("detail", "starttls-not-supported"): 1}
    # DANE: under tlsa with the TLSA records, never "no-policy-found"; once more in the MX host's own report
    for label in DANE_MAILS:
        for report_domain in (f"{label}.test", f"mx.{label}.test"):
            assert by_domain[report_domain]["policy"] == {"policy-type": "tlsa", "policy-domain": report_domain,
                                                          "policy-string": [dane_record(pki, label)]}
    assert by_domain["rpt-dane.test"]["counts"] == {("success", ""): 2}
    assert by_domain["rpt-danenotls.test"]["counts"] == {("failure", ""): 1, ("detail", "starttls-not-supported"): 1}


def test_mailto_report_through_postfix_is_signed_and_well_formed(rpt, delivered, dns_world):
    daemon, postfix, mx, receiver, _ = rpt
    receiver.answers = [500]   # the https report's first attempt fails
    result = run_report(daemon.config_path, "--day", TODAY)
    assert result.returncode == 75, result.stdout + result.stderr   # EX_TEMPFAIL: the https one is retried
    assert "1 failed this run (tried again at the next run)" in result.stderr
    mailbox = mx["rpt-reports"]
    wait_until(lambda: len(mailbox.received()) >= 2, 60,
               f"report mail\n{result.stderr}\n{run_report(daemon.config_path, '--status').stdout}\n{postfix.log_text()[-3000:]}")
    time.sleep(0.5)
    assert len(mailbox.received()) == 2
    by_rcpt = {m.rcpt_to[0]: m for m in mailbox.received()}
    assert set(by_rcpt) == {"<tlsrpt@rpt-reports.test>", "<tls-reports@rpt-reports.test>"}
    for rcpt, domain in (("<tlsrpt@rpt-reports.test>", "rpt-good.test"),
                         ("<tls-reports@rpt-reports.test>", "rpt-nostarttls.test")):
        raw = by_rcpt[rcpt].data
        assert dkim.verify(raw, dnsfunc=dnsfunc(dns_world.resolver()), tlsrpt="strict"), "DKIM signature"
        message = email.message_from_bytes(raw, policy=email.policy.default)
        signature = message["DKIM-Signature"]
        assert f"d={SUBMITTER}" in signature and f"s={DKIM_SELECTOR}" in signature and " l=" not in signature
        signed = signature.split("h=")[1].split(";")[0].replace(" ", "").replace("\r\n", "").lower()
        assert "tls-report-domain" in signed and "tls-report-submitter" in signed
        assert message.get_content_type() == "multipart/report"
        assert message.get_param("report-type") == "tlsrpt"
        assert message["TLS-Report-Domain"] == domain and message["TLS-Report-Submitter"] == SUBMITTER
        assert message["TLS-Required"] == "No"
        report_id = message["Message-ID"].strip("<>")
        assert " ".join(message["Subject"].split()) == (
            f"Report Domain: {domain} Submitter: {SUBMITTER} Report-ID: <{report_id}>")
        text, attachment = list(message.iter_parts())
        assert text.get_content_type() == "text/plain"
        assert attachment.get_content_type() == "application/tlsrpt+gzip"
        begin = int(datetime.datetime.fromisoformat(TODAY + "T00:00:00+00:00").timestamp())
        name = attachment.get_filename().split("!")
        assert name[:4] == [SUBMITTER, domain, str(begin), str(begin + 86399)] and name[4].endswith(".json.gz")
        report = json.loads(gzip.decompress(attachment.get_content()))
        assert report["organization-name"] == "rpt test org"
        assert report["contact-info"] == f"tlsrpt@{SUBMITTER}" and report["report-id"] == report_id
        assert report["date-range"] == {"start-datetime": f"{TODAY}T00:00:00Z", "end-datetime": f"{TODAY}T23:59:59Z"}
        [entry] = report["policies"]
        assert entry["policy"]["policy-type"] == "sts" and entry["policy"]["policy-domain"] == domain
        if domain == "rpt-good.test":
            assert entry["summary"] == {"total-successful-session-count": 3, "total-failure-session-count": 0}
            assert "failure-details" not in entry
        else:
            assert entry["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
            [detail] = entry["failure-details"]
            assert detail["result-type"] == "starttls-not-supported" and detail["failed-session-count"] == 1
            assert detail["receiving-mx-hostname"] == "mx.rpt-nostarttls.test"
    # The report mail went through the followed Postfix over TLS, and is not counted itself.
    wait_until(lambda: postfix.log_text().count("to=<tls") >= 2, 20, "report delivery lines")
    time.sleep(1.0)
    assert not [row for row in spool_rows(daemon.workdir / "state" / "cache.sqlite3") if row[0] == "rpt-reports.test"]


def test_https_report_500_is_retried_not_marked_sent(rpt, delivered):
    daemon, postfix, mx, receiver, _ = rpt
    wait_until(lambda: receiver.received(), 30, "the first POST")
    status = run_report(daemon.config_path, "--status").stdout
    line = next(l for l in status.splitlines() if "https://rpt-collect.test/v1/tlsrpt:" in l)
    assert "pending, 1 attempt(s)" in line, status
    assert "HTTP 500" in status
    time.sleep(1.2)   # retry_initial_s = 1
    result = run_report(daemon.config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    posts = receiver.received()
    assert [p.status for p in posts] == [500, 200]
    assert posts[0].body == posts[1].body            # the same report, byte for byte
    assert all(p.content_type == "application/tlsrpt+gzip" and p.path == "/v1/tlsrpt" for p in posts)
    report = json.loads(gzip.decompress(posts[1].body))
    [entry] = report["policies"]
    assert entry["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 2}
    assert entry["failure-details"][0]["result-type"] == "certificate-host-mismatch"
    status = run_report(daemon.config_path, "--status").stdout
    line = next(l for l in status.splitlines() if "https://rpt-collect.test/v1/tlsrpt:" in l)
    assert "sent, 2 attempt(s)" in line, status
    assert run_report(daemon.config_path).returncode == 0
    assert len(receiver.received()) == 2   # sent is final


def test_a_dane_domains_report_from_real_postfix_is_tlsa_with_its_records(rpt, delivered, pki):
    """The report JSON a real Postfix 3.7 run gives for DANE domains (printed: the note quotes it)."""
    daemon, postfix, mx, receiver, dane_receiver = rpt
    if not dane_receiver.received():   # not sent yet by the mailto test's run
        run_report(daemon.config_path, "--day", TODAY)
    wait_until(lambda: len(dane_receiver.received()) >= 2, 60,
               f"the DANE reports\n{run_report(daemon.config_path, '--status').stdout}")
    reports = {post.path: json.loads(gzip.decompress(post.body)) for post in dane_receiver.received()}
    assert set(reports) == {f"/{label}" for label in DANE_MAILS}
    for label, report in sorted(reports.items()):
        print(f"\n{label}:\n{json.dumps(report, indent=2)}")
        assert report_problems(report) == [], report
    [good] = reports["/rpt-dane"]["policies"]
    assert good["policy"] == {"policy-type": "tlsa", "policy-domain": "rpt-dane.test",
                              "policy-string": [dane_record(pki, "rpt-dane")]}
    assert good["summary"] == {"total-successful-session-count": 2, "total-failure-session-count": 0}
    assert "failure-details" not in good
    [notls] = reports["/rpt-danenotls"]["policies"]
    assert notls["policy"] == {"policy-type": "tlsa", "policy-domain": "rpt-danenotls.test",
                               "policy-string": [dane_record(pki, "rpt-danenotls")]}
    assert notls["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    [detail] = notls["failure-details"]
    assert detail["result-type"] == "starttls-not-supported" and detail["failed-session-count"] == 1
    assert detail["receiving-mx-hostname"] == "mx.rpt-danenotls.test"
    assert detail["receiving-ip"] == DANE_IPS["rpt-danenotls"]
    assert detail["sending-mta-ip"] == kernel_source(DANE_IPS["rpt-danenotls"])
