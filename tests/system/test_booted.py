"""The .deb under a booted systemd: Debian 12 (bookworm) and 13 (trixie) containers.

For each suite a minbase root gets systemd, Postfix ("Local only") and the
package (tests/world/debian.py), and boots with ``systemd-nspawn --boot``
and loopback only.  The units run exactly as shipped, started by the
container's own systemd: the checks are what an admin would see
(``systemctl``, ``systemd-analyze security``, ``postmap``, the mail logs,
the local mailbox, ``apt-get purge``).

First the packaged configuration alone (READY, reload, restart, kill -9,
exposure, listeners).  Then the test world starts on the container's own
loopback (nsd, validating unbound, the MTA-STS policy host, MX hosts: see
``BootedDebian.network()``) and the container is configured as README says:
the daemon at the world's resolver and CA with reports enabled, Postfix
with contrib/postfix's lines (on trixie Postfix 3.10's TLSRPT to the
collector).  Postfix delivers to an MTA-STS, a DANE and an unfetchable-policy
domain and defers the MX with a wrong-name certificate; the spooled day is
moved back one (midnight passes) and the report service, as shipped, mails
DKIM-signed reports to the local mailbox.  Then Debian's Exim replaces
Postfix and runs the package's contrib/exim examples.  The last test purges
the package, so the tests of one suite run in order.
"""

from __future__ import annotations

import contextlib
import datetime
import email
import email.policy
import gzip
import json
import mailbox as mailbox_module
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from tests.world import DnsWorld, PolicyServer, Route, TestPKI, Zone
from tests.world.addresses import MX_NET, POLICY_IP
from tests.world.debian import (
    DOWNLOADED_PACKAGES,
    PACKAGE,
    BootedDebian,
    built_deb,
    prepared_root,
)
from tests.world.exim import EXIM_GROUP, EXIM_USER, contrib_wrapper
from tests.world.policy_server import sts_policy
from tests.world.smtp_host import SmtpHost
from tests.world.tlsrpt import dkim_key, dnsfunc, txt_record

SUITES = ("bookworm", "trixie")
SERVICE, REPORT = "mtasts-resolver.service", "mtasts-resolver-report.service"
# The daemon's hardening, as systemd-analyze scores it (0 best .. 10); 1.3 when written.
MAX_DAEMON_EXPOSURE = 2.0
# Keys the daemon answers without DNS (none in the container): Postfix's
# parent-domain probes are never policy domains.
NO_POLICY_KEY = ".example.com"


@pytest.fixture(scope="module", params=SUITES)
def booted(request) -> Iterator[BootedDebian]:
    workdir = Path(tempfile.mkdtemp(prefix=f"mtasts-booted-{request.param}-", dir="/var/tmp"))
    container = None
    try:
        container = BootedDebian(prepared_root(request.param, workdir, built_deb()), f"mtasts-{request.param}")
        container.start()
        yield container
    finally:
        if container is not None:
            container.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_boot_starts_the_service_and_it_reports_ready(booted):
    shown = booted.wait_unit(SERVICE, {"ActiveState": "active", "SubState": "running"})
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), booted.run(
        "systemctl", "status", SERVICE).stdout
    # Type=notify: "active" only after READY=1; STATUS= is the daemon's own line.
    assert booted.unit(SERVICE, "Type")["Type"] == "notify"
    assert "domains cached" in booted.unit(SERVICE, "StatusText")["StatusText"]
    assert booted.state == "running", booted.run("systemctl", "--failed", "--no-legend").stdout
    timers = booted.run("systemctl", "list-timers", "--all", "--no-legend").stdout
    assert "mtasts-resolver-report.timer" in timers


def test_reload_keeps_the_process_and_restart_replaces_it(booted):
    before = booted.unit(SERVICE, "MainPID")["MainPID"]
    reload = booted.run("systemctl", "reload", SERVICE)
    assert reload.returncode == 0, reload.stderr
    shown = booted.wait_unit(SERVICE, {"ActiveState": "active", "SubState": "running"})
    assert shown["MainPID"] == before
    restart = booted.run("systemctl", "restart", SERVICE)
    assert restart.returncode == 0, restart.stderr
    shown = booted.wait_unit(SERVICE, {"ActiveState": "active", "SubState": "running"})
    assert shown["SubState"] == "running" and shown["MainPID"] not in (before, "0")


def test_kill_9_of_the_main_process_is_restarted(booted):
    before = booted.unit(SERVICE, "MainPID", "NRestarts")
    assert booted.run("kill", "-9", before["MainPID"]).returncode == 0
    deadline_s = 30   # RestartSec=2s, then READY again
    shown = booted.wait_unit(SERVICE, {"SubState": "running", "NRestarts": str(int(before["NRestarts"]) + 1)},
                             timeout_s=deadline_s)
    assert shown["NRestarts"] == str(int(before["NRestarts"]) + 1), (shown, _journal(booted, SERVICE))
    assert shown["SubState"] == "running" and shown["MainPID"] not in (before["MainPID"], "0")


def _exposure(booted: BootedDebian, unit: str) -> float:
    out = booted.run("systemd-analyze", "security", "--no-pager", unit).stdout
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert found, out
    return float(found[1])


def test_systemd_analyze_security_exposure(booted, record_property):
    daemon, report = _exposure(booted, SERVICE), _exposure(booted, REPORT)
    record_property("exposure", {"suite": booted.name, SERVICE: daemon, REPORT: report})
    print(f"{booted.name}: exposure {SERVICE} {daemon}, {REPORT} {report}")
    assert daemon <= MAX_DAEMON_EXPOSURE
    # The report unit runs the MTA's set-id sendmail, so it has no seccomp
    # or capability sandboxing (see the unit): less confined than the daemon.
    assert daemon < report


def test_shipped_listeners_answer_postmap_and_readsocket(booted):
    for table in ("socketmap:inet:127.0.0.1:8461:postfix", "tcp:127.0.0.1:8462"):
        result = booted.run("postmap", "-q", NO_POLICY_KEY, table)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", ""), (table, result)
    readsocket = _readsocket(booted, NO_POLICY_KEY)
    assert (readsocket.returncode, readsocket.stdout) == (0, "NOTFOUND\n"), readsocket


# -- the test world on the container's loopback ---------------------------------------------------------------
# The domains the container's daemon and MTAs resolve: nsd, validating unbound, the MTA-STS policy host and
# the MX hosts run on the container's own loopback (BootedDebian.network()); the container reaches nothing else.
STS, STS_BADCERT, STS_UNFETCHABLE, DANE = "booted-sts.test", "booted-stsbad.test", "booted-stsfail.test", \
    "booted-dane.test"
SUBMITTER = "booted.test"          # the container's mailname: report mail is delivered locally
RUA = "mailto:root@booted.test"
DKIM_SELECTOR = "booted"
MX_CERT = {STS: "good", STS_BADCERT: "wrong-name", STS_UNFETCHABLE: "good", DANE: "good"}
CONTAINER_CA = "/etc/booted-test/ca.pem"   # the test's own files: no "mtasts" in their names (purge)
CONTAINER_DKIM_KEY = "/etc/booted-dkim.pem"   # the admin's file, outside the package's directories
# README "Enabling reports", Postfix >= 3.10: under Postfix's queue directory, which Debian's chrooted
# smtp(8) sees too (by the relative name); the setgid directory gives the socket the group postfix.
COLLECTOR_DIR = "/var/spool/postfix/run/mtasts-resolver"
COLLECTOR = f"{COLLECTOR_DIR}/tlsrpt.sock"
COLLECTOR_POSTFIX_NAME = "run/mtasts-resolver/tlsrpt.sock"
# Postfix 3.7's feed, the journal: README's drop-in (journalctl needs the boot id ProcSubset=pid hides, and
# its --follow saw no new entries under any of the other three). The admin's file: purge leaves it.
JOURNAL_DROPIN = f"/etc/systemd/system/{SERVICE}.d/journal-feed.conf"
JOURNAL_DROPIN_TEXT = "[Service]\nProcSubset=all\nProtectProc=default\nProtectKernelTunables=no\nProtectControlGroups=no\n"
ADMIN_FILES = (JOURNAL_DROPIN, str(Path(JOURNAL_DROPIN).parent))


@dataclass
class ContainerWorld:
    dns: DnsWorld
    pki: TestPKI
    mx: dict[str, SmtpHost]        # by domain
    dkim_key: Path

    def received(self, domain: str, marker: str) -> list:
        return [m for m in self.mx[domain].received() if marker.encode() in m.data]


def _zones(pki: TestPKI, dkim_txt: str) -> list[Zone]:
    zones = [Zone(SUBMITTER, [txt_record(f"{DKIM_SELECTOR}._domainkey", dkim_txt)])]
    for n, domain in enumerate(MX_CERT, start=1):
        records = ["@ IN MX 10 mx", f"mx IN A {MX_NET}.{n}", f'_smtp._tls IN TXT "v=TLSRPTv1; rua={RUA}"']
        if domain == DANE:
            records.append(f"_25._tcp.mx IN TLSA 3 1 1 {pki.tlsa_data(f'mx.{domain}')}")
        else:
            records += ['_mta-sts IN TXT "v=STSv1; id=booted1"', f"mta-sts IN A {POLICY_IP}"]
        zones.append(Zone(domain, records))
    return zones


@pytest.fixture(scope="module")
def world(booted) -> Iterator[ContainerWorld]:
    workdir = booted.root.parent / "world"
    workdir.mkdir()
    pki = TestPKI(workdir / "pki")
    dkim_file, dkim_txt = dkim_key(workdir)
    dns = DnsWorld(workdir / "dns")
    dns.add_zones(_zones(pki, dkim_txt))
    policy = PolicyServer(pki)
    for domain in (STS, STS_BADCERT):
        policy.set(f"mta-sts.{domain}", Route(body=sts_policy(f"mx.{domain}")))
    policy.set(f"mta-sts.{STS_UNFETCHABLE}", Route(status=404))
    mx = {domain: SmtpHost(f"mx.{domain}", f"{MX_NET}.{n}", pki.server_context(f"mx.{domain}", kind))
          for n, (domain, kind) in enumerate(MX_CERT.items(), start=1)}
    running = contextlib.ExitStack()
    try:
        with booted.network():   # their sockets (and nsd's, unbound's) are the container's
            running.enter_context(dns)
            running.enter_context(policy)
            for host in mx.values():
                host.start()
                running.callback(host.stop)
        yield ContainerWorld(dns, pki, mx, dkim_file)
    finally:
        with booted.network():
            running.close()


def _daemon_config(booted: BootedDebian, world: ContainerWorld) -> str:
    """The packaged config.toml, pointed at the world, with reports enabled as README's three steps say."""
    packaged = (booted.root / "etc" / "mtasts-resolver" / "config.toml").read_text()
    assert "\n[dns]\n" in packaged
    resolver, _ = world.dns.resolver()
    # The session feed README names for each Postfix: 3.10's datagrams, 3.7's log (journald here: no syslog).
    feed = f'collector_socket = "{COLLECTOR}"\n' if booted.suite == "trixie" else 'postfix_log = "journal"\n'
    return packaged.replace("\n[dns]\n", f'\n[dns]\nnameservers = ["{resolver}"]\ntimeout_s = 3\n') + f"""
[dane]
probe_name = "test."   # the world has no root zone
probe_type = "SOA"

[mta_sts]
ca_file = "{CONTAINER_CA}"

[tlsrpt]
{feed}organization_name = "Booted Test"
contact_info = "tlsrpt@{SUBMITTER}"
dkim_selector = "{DKIM_SELECTOR}"
dkim_key_file = "{CONTAINER_DKIM_KEY}"
send_delay_max_s = 0
"""


def _install(booted: BootedDebian, source: Path, target: str, mode: int, group: str = "root") -> None:
    path = booted.root / target.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)
    assert booted.run("chown", f"root:{group}", target).returncode == 0
    path.chmod(mode)


@pytest.fixture(scope="module")
def configured(booted, world) -> BootedDebian:
    """The container's daemon and Postfix configured for the world, as an admin would (README)."""
    _install(booted, world.pki.ca_file, CONTAINER_CA, 0o644)
    _install(booted, world.dkim_key, CONTAINER_DKIM_KEY, 0o640, group=PACKAGE)
    (booted.root / "etc" / "mtasts-resolver" / "config.toml").write_text(_daemon_config(booted, world))
    if booted.suite == "trixie":
        made = booted.run("install", "-d", "-o", PACKAGE, "-g", "postfix", "-m", "2750", COLLECTOR_DIR)
        assert made.returncode == 0, made.stderr
    else:   # postfix_log = "journal" as README "Enabling reports" says: the journal's group and the drop-in
        joined = booted.run("adduser", "--quiet", PACKAGE, "systemd-journal")
        assert joined.returncode == 0, joined.stderr
        dropin = booted.root / JOURNAL_DROPIN.lstrip("/")
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(JOURNAL_DROPIN_TEXT)
        assert booted.run("systemctl", "daemon-reload").returncode == 0
    resolver, _ = world.dns.resolver()
    (booted.root / "etc" / "resolv.conf").write_text(f"nameserver {resolver}\noptions trust-ad\n")
    checked = booted.run("mtasts-resolver", "--check-config")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    restart = booted.run("systemctl", "restart", SERVICE)
    assert restart.returncode == 0, restart.stderr + _journal(booted, SERVICE)
    # Postfix: contrib/postfix/main.cf's lines ("Local only" delivers nothing off the machine: now it does).
    tlsrpt = booted.suite == "trixie"
    settings = {"default_transport": "smtp", "relay_transport": "smtp",
                "smtp_tls_security_level": "may", "smtp_dns_support_level": "dnssec",
                "smtp_tls_policy_maps": f"socketmap:inet:127.0.0.1:8461:{'postfix-tlsrpt' if tlsrpt else 'postfix'}",
                "smtp_tls_CAfile": CONTAINER_CA, "smtp_tls_loglevel": "1",
                "smtp_connection_cache_on_demand": "no"}   # one TLS session per message: countable
    if tlsrpt:
        settings |= {"smtp_tlsrpt_enable": "yes", "smtp_tlsrpt_socket_name": COLLECTOR_POSTFIX_NAME}
    postconf = booted.run("postconf", "-e", *(f"{key}={value}" for key, value in settings.items()))
    assert postconf.returncode == 0, postconf.stderr
    restart = booted.run("systemctl", "restart", "postfix.service")   # Debian 12: with its postfix@-.service
    assert restart.returncode == 0, restart.stderr + _journal(booted, "postfix.service")
    return booted


def _journal(booted: BootedDebian, unit: str, lines: int = 40) -> str:
    return booted.run("journalctl", "-u", unit, "--no-pager", "-n", str(lines)).stdout


def _readsocket(booted: BootedDebian, key: str) -> subprocess.CompletedProcess:
    return booted.run("python3", "-c", f"""
import socket
with socket.create_connection(("127.0.0.1", 8463), timeout=30) as sock:
    sock.sendall(b"{key}\\n")
    sock.shutdown(socket.SHUT_WR)
    print(sock.makefile("rb").read().decode(), end="")
""")


def test_world_domains_are_answered_on_every_shipped_listener(configured):
    secure = f"secure match=mx.{STS} servername=hostname"
    for table in ("socketmap:inet:127.0.0.1:8461:postfix", "tcp:127.0.0.1:8462"):
        for domain, want in ((STS, secure), (DANE, "dane-only")):
            result = configured.run("postmap", "-q", domain, table)
            assert (result.returncode, result.stdout.strip()) == (0, want), (table, domain, result,
                                                                            _journal(configured, SERVICE))
    tlsrpt = configured.run("postmap", "-q", STS, "socketmap:inet:127.0.0.1:8461:postfix-tlsrpt").stdout.strip()
    assert tlsrpt.startswith(f"{secure} policy_type=sts policy_domain={STS} mx_host_pattern=mx.{STS}"), tlsrpt
    assert "{ policy_string = mode: enforce }" in tlsrpt
    for domain, want in ((STS, f"OK {secure}\n"), (DANE, "OK dane-only\n")):
        readsocket = _readsocket(configured, domain)
        assert (readsocket.returncode, readsocket.stdout) == (0, want), readsocket


def _sendmail(booted: BootedDebian, recipient: str) -> str:
    marker = f"booted-{uuid.uuid4().hex}"
    sent = booted.run("/usr/sbin/sendmail", "-i", "-f", f"sender@{SUBMITTER}", recipient,
                      input=f"From: sender@{SUBMITTER}\nTo: {recipient}\nSubject: {marker}\n\n{marker}\n")
    assert sent.returncode == 0, sent.stderr
    return marker


def _postfix_log(booted: BootedDebian) -> str:
    return booted.run("journalctl", "--no-pager", "-t", "postfix/smtp", "-t", "postfix/qmgr").stdout


def _wait(predicate, timeout_s: float, what) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


@pytest.fixture(scope="module")
def postfix_sent(configured, world) -> dict[str, str]:
    """One message per world domain through the container's Postfix; returns once each attempt is logged."""
    markers = {domain: _sendmail(configured, f"rcpt@{domain}") for domain in MX_CERT}
    _wait(lambda: all(f"<rcpt@{domain}>" in _postfix_log(configured) for domain in MX_CERT) and
          _postfix_log(configured).count(" status=") >= len(MX_CERT), 90, lambda: _postfix_log(configured))
    return markers


def _status(booted: BootedDebian, domain: str) -> str:
    lines = [line for line in _postfix_log(booted).splitlines() if f"to=<rcpt@{domain}>" in line]
    assert lines, _postfix_log(booted)
    return lines[0]


def test_postfix_enforces_the_daemons_answers(configured, world, postfix_sent):
    log = _postfix_log(configured)
    for domain in (STS, DANE, STS_UNFETCHABLE):
        assert "status=sent" in _status(configured, domain), log
        (message,) = world.received(domain, postfix_sent[domain])
        assert message.tls
    assert f"Verified TLS connection established to mx.{STS}" in log, log
    assert f"Verified TLS connection established to mx.{DANE}" in log or \
        f"Trusted TLS connection established to mx.{DANE}" in log, log
    # The wrong-name certificate under an enforced MTA-STS policy: deferred, nothing delivered.
    assert "status=deferred" in _status(configured, STS_BADCERT), log
    assert world.received(STS_BADCERT, postfix_sent[STS_BADCERT]) == []


def _spool(booted: BootedDebian) -> list[tuple[str, str, str, str, int]]:
    """(day, report domain, policy, kind, failure, sessions) rows of the container daemon's spool, read as its user."""
    out = booted.run("runuser", "-u", PACKAGE, "--", "python3", "-c", """
import json, sqlite3
db = sqlite3.connect("file:/var/lib/mtasts-resolver/cache.sqlite3?mode=ro", uri=True)
rows = db.execute("SELECT day, report_domain, policy, kind, failure, sessions FROM tlsrpt_outcome").fetchall()
print(json.dumps(rows))
""")
    assert out.returncode == 0, out.stderr
    return [tuple(row) for row in json.loads(out.stdout)]


def test_postfix_sessions_reach_the_spool(configured, postfix_sent):
    """Postfix 3.10 (trixie): libtlsrpt's datagrams, with our policy strings; Postfix 3.7 (bookworm): its log."""
    known = configured.run("postconf", "-d", "smtp_tlsrpt_enable")
    if configured.suite == "bookworm":
        assert known.returncode != 0 or "unknown parameter" in known.stderr, known
    else:
        assert known.returncode == 0, known.stderr
    wanted = {(STS, "success"), (DANE, "success"), (STS_BADCERT, "failure")}
    _wait(lambda: wanted <= {(row[1], row[3]) for row in _spool(configured)}, 30,
          lambda: f"{_spool(configured)}\n{_journal(configured, SERVICE)}\n{_postfix_log(configured)}")
    rows = _spool(configured)
    print(f"{configured.suite}: spool after Postfix's deliveries:")
    for row in rows:
        print("  ", row)
    policies = {(row[1], row[3]): json.loads(row[2]) for row in rows}
    assert policies[(STS, "success")] == {"policy-type": "sts", "policy-domain": STS, "mx-host": [f"mx.{STS}"],
                                          "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{STS}",
                                                            "max_age: 86400"]}
    assert policies[(DANE, "success")]["policy-type"] == "tlsa"
    failure = next(json.loads(row[4]) for row in rows if (row[1], row[3]) == (STS_BADCERT, "detail"))
    assert failure["result-type"] == "certificate-host-mismatch" and failure["receiving-mx-hostname"] == \
        f"mx.{STS_BADCERT}", failure


def test_report_service_as_shipped_delivers_a_dkim_signed_report(configured, world, postfix_sent):
    """Midnight passes (the spooled day moves back one), then the shipped unit sends through sendmail."""
    _wait(lambda: any(row[1] == STS_UNFETCHABLE for row in _spool(configured)), 30,
          lambda: f"{_spool(configured)}\n{_journal(configured, SERVICE)}")
    assert configured.run("systemctl", "stop", SERVICE).returncode == 0
    yesterday = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).strftime("%Y-%m-%d")
    shifted = configured.run("runuser", "-u", PACKAGE, "--", "python3", "-c", f"""
import sqlite3
with sqlite3.connect("/var/lib/mtasts-resolver/cache.sqlite3") as db:
    db.execute("UPDATE tlsrpt_outcome SET day = '{yesterday}'")
""")
    assert shifted.returncode == 0, shifted.stderr
    assert configured.run("systemctl", "start", SERVICE).returncode == 0
    started = configured.run("systemctl", "start", REPORT, timeout_s=180)
    assert started.returncode == 0, started.stderr + _journal(configured, REPORT)
    assert configured.unit(REPORT, "Result", "User") == {"Result": "success", "User": PACKAGE}
    mailbox = configured.root / "var" / "mail" / "root"
    want = {STS_UNFETCHABLE, STS, DANE, STS_BADCERT}

    def reports() -> dict[str, bytes]:
        if not mailbox.exists():
            return {}
        box = mailbox_module.mbox(str(mailbox))
        found = {}
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            domain = email.message_from_bytes(raw)["TLS-Report-Domain"]
            if domain:
                found[domain] = raw
        return found
    _wait(lambda: want <= set(reports()), 60, lambda: f"{reports().keys()}\n{_journal(configured, REPORT)}\n"
          f"{_postfix_log(configured)}")
    for domain, raw in sorted(reports().items()):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with configured.network():
            assert dkim.verify(raw, dnsfunc=dnsfunc(world.dns.resolver()), tlsrpt="strict"), domain
        assert message["TLS-Report-Submitter"] == SUBMITTER and f"d={SUBMITTER}" in message["DKIM-Signature"]
        _, attachment = list(message.iter_parts())
        report = json.loads(gzip.decompress(attachment.get_content()))
        assert report["date-range"]["start-datetime"] == f"{yesterday}T00:00:00Z"
        print(f"{configured.suite}: report mail for {domain}, as delivered to /var/mail/root:")
        print(raw.split(b"\n\n", 1)[0].decode(errors="replace"))
        print(json.dumps(report["policies"], indent=1))
        if domain == STS_UNFETCHABLE:   # the daemon's own outcome: the policy host answered 404
            [entry] = [entry for entry in report["policies"] if entry["policy"]["policy-type"] == "sts"]
            assert entry["summary"]["total-failure-session-count"] == 1
            assert [d["result-type"] for d in entry["failure-details"]] == ["sts-policy-fetch-error"]
        elif domain == STS_BADCERT:     # Postfix's session (its datagram or its log)
            [entry] = report["policies"]
            assert entry["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
            assert [d["result-type"] for d in entry["failure-details"]] == ["certificate-host-mismatch"]
        else:
            [entry] = report["policies"]
            assert entry["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}


EXIM_CONFIG = "/etc/booted-test/exim.conf"
EXIM_SPOOL, EXIM_LOG = "/var/spool/booted-exim", "/var/log/booted-exim"
EXIM_CONTRIB = "/usr/share/doc/mtasts-resolver/examples/exim"   # contrib/exim as the package ships it
EXIM_MINOR = {"bookworm": 96, "trixie": 98}


def _exim(booted: BootedDebian, *args: str, input: str | None = None, timeout_s: float = 60):
    return booted.run("/usr/sbin/exim4", "-C", EXIM_CONFIG, *args, input=input, timeout_s=timeout_s)


def test_exim_runs_the_shipped_contrib_configuration(configured, world):
    """Debian's Exim package, installed in the container (it replaces Postfix), with the package's examples."""
    installed = configured.run("apt-get", "install", "-y", "-q", "--no-download", "--no-install-recommends",
                               *DOWNLOADED_PACKAGES, timeout_s=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr
    version = configured.run("/usr/sbin/exim4", "--version").stdout
    found = re.match(r"Exim version 4\.(\d+)", version)
    assert found and int(found[1]) == EXIM_MINOR[configured.suite] and "DANE" in version, version
    for directory in (EXIM_SPOOL, EXIM_LOG):
        made = configured.run("install", "-d", "-o", EXIM_USER, "-g", EXIM_GROUP, "-m", "0750", directory)
        assert made.returncode == 0, made.stderr
    (configured.root / EXIM_CONFIG.lstrip("/")).write_text(
        contrib_wrapper(EXIM_CONTRIB, "/usr/sbin/exim4", 8463, CONTAINER_CA, EXIM_SPOOL, EXIM_LOG))
    checked = _exim(configured, "-bV")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    markers = {}
    for domain in (STS, DANE, STS_BADCERT):
        markers[domain] = f"exim-{uuid.uuid4().hex}"
        queued = _exim(configured, "-odq", "-f", "sender@sender-exim.test", f"rcpt@{domain}",
                       input=f"Subject: {markers[domain]}\n\n{markers[domain]}\n")
        assert queued.returncode == 0, queued.stderr
    _exim(configured, "-qff", timeout_s=180)
    mainlog = (configured.root / EXIM_LOG.lstrip("/") / "mainlog").read_text(errors="replace")
    for directory in (EXIM_SPOOL, EXIM_LOG):   # its hints databases are named after contrib's transport
        shutil.rmtree(configured.root / directory.lstrip("/"))

    def outcome(domain: str) -> str:
        found = re.search(rf" (=>|==|\*\*) rcpt@{re.escape(domain)} .*", mainlog)
        assert found, mainlog
        return found[0]
    assert outcome(STS).startswith(" => ") and "CV=yes" in outcome(STS), mainlog
    assert outcome(DANE).startswith(" => ") and "CV=dane" in outcome(DANE), mainlog
    assert outcome(STS_BADCERT).startswith(" == "), mainlog
    for domain in (STS, DANE):
        (message,) = world.received(domain, markers[domain])
        assert message.tls
    assert world.received(STS_BADCERT, markers[STS_BADCERT]) == []


def test_apt_get_purge_leaves_nothing_behind(booted):
    purge = booted.run("apt-get", "purge", "-y", "-q", PACKAGE, timeout_s=300)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert booted.run("getent", "passwd", PACKAGE).returncode == 2
    assert booted.run("getent", "group", PACKAGE).returncode == 2
    assert booted.run("systemctl", "is-active", SERVICE).stdout.strip() == "inactive"
    left = sorted(str(path.relative_to(booted.root)) for path in booted.root.rglob("*mtasts*")
                  if not path.is_relative_to(booted.root / "var" / "lib" / "dpkg")
                  and not path.is_relative_to(booted.root / "proc")
                  and "/" + str(path.relative_to(booted.root)) not in ADMIN_FILES)
    assert left == []
