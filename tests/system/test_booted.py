"""The .deb under a booted systemd: Debian 12 (bookworm) and 13 (trixie) containers.

For each suite a minbase root gets systemd, Postfix ("Local only") and the
package (tests/world/debian.py), and boots with ``systemd-nspawn --boot``
and loopback only.  The units run exactly as shipped, started by the
container's own systemd at boot: the checks are what an admin would see
(``systemctl``, ``systemd-analyze security``, ``postmap``, the local
mailbox, ``apt-get purge``).  The last test purges the package, so the
tests of one suite run in order.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.world.debian import PACKAGE, BootedDebian, built_deb, prepared_root

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
    assert shown["NRestarts"] == str(int(before["NRestarts"]) + 1), shown
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
    readsocket = booted.run("python3", "-c", f"""
import socket
with socket.create_connection(("127.0.0.1", 8463), timeout=30) as sock:
    sock.sendall(b"{NO_POLICY_KEY}\\n")
    sock.shutdown(socket.SHUT_WR)
    print(sock.makefile("rb").read().decode(), end="")
""")
    assert (readsocket.returncode, readsocket.stdout) == (0, "NOTFOUND\n"), readsocket


# What "Enabling reports" asks for, appended to the packaged config. The key is the admin's file (made
# in the container, outside the package's directories: purge leaves it, and it is no package leftover).
TLSRPT_SETTINGS = """
[tlsrpt]
organization_name = "Booted Test"
contact_info = "tlsrpt@booted.test"
dkim_selector = "booted"
dkim_key_file = "/etc/booted-dkim.pem"
"""
MAKE_DKIM_KEY = """
import grp
import os
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
with open("/etc/booted-dkim.pem", "wb") as out:
    out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
os.chown("/etc/booted-dkim.pem", 0, grp.getgrnam("mtasts-resolver").gr_gid)
os.chmod("/etc/booted-dkim.pem", 0o640)
"""


def test_report_service_as_shipped_runs_to_success(booted):
    # Configured for reports; nothing spooled yet, so nothing to send: the unit's directories, user and
    # sandbox suffice. (With the packaged config alone the run exits 78: the settings are missing.)
    config = booted.root / "etc" / "mtasts-resolver" / "config.toml"
    config.write_text(config.read_text() + TLSRPT_SETTINGS)
    made = booted.run("python3", "-c", MAKE_DKIM_KEY)
    assert made.returncode == 0, made.stderr
    checked = booted.run("mtasts-resolver", "--check-config")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    started = booted.run("systemctl", "start", REPORT, timeout_s=180)
    journal = booted.run("journalctl", "-u", REPORT, "--no-pager", "-n", "20").stdout
    assert started.returncode == 0, started.stderr + journal
    assert booted.unit(REPORT, "Result")["Result"] == "success", journal


def test_report_unit_sandbox_lets_sendmail_deliver(booted):
    """The shipped report unit with only ExecStart= replaced: its sandbox, its user, Postfix's sendmail."""
    marker = f"booted-{uuid.uuid4().hex}"
    dropin = booted.root / "etc" / "systemd" / "system" / f"{REPORT}.d"
    dropin.mkdir(parents=True)
    (dropin / "sendmail-probe.conf").write_text(
        "[Service]\nExecStart=\n"
        f"ExecStart=/bin/sh -c 'printf \"Subject: {marker}\\\\n\\\\n{marker}\\\\n\" | /usr/sbin/sendmail -i root'\n")
    try:
        assert booted.run("systemctl", "daemon-reload").returncode == 0
        started = booted.run("systemctl", "start", REPORT, timeout_s=120)
        journal = booted.run("journalctl", "-u", REPORT, "--no-pager", "-n", "20").stdout
        assert started.returncode == 0, started.stderr + journal
        assert booted.unit(REPORT, "User")["User"] == PACKAGE
        mailbox = booted.root / "var" / "mail" / "root"
        for _ in range(100):
            if mailbox.exists() and marker in mailbox.read_text(errors="replace"):
                break
            time.sleep(0.2)
        assert mailbox.exists() and f"Subject: {marker}" in mailbox.read_text(errors="replace"), \
            booted.run("journalctl", "-u", "postfix@-", "--no-pager", "-n", "30").stdout
    finally:
        shutil.rmtree(dropin)
        booted.run("systemctl", "daemon-reload")


def test_apt_get_purge_leaves_nothing_behind(booted):
    purge = booted.run("apt-get", "purge", "-y", "-q", PACKAGE, timeout_s=300)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert booted.run("getent", "passwd", PACKAGE).returncode == 2
    assert booted.run("getent", "group", PACKAGE).returncode == 2
    assert booted.run("systemctl", "is-active", SERVICE).stdout.strip() == "inactive"
    left = sorted(str(path.relative_to(booted.root)) for path in booted.root.rglob("*mtasts*")
                  if not path.is_relative_to(booted.root / "var" / "lib" / "dpkg")
                  and not path.is_relative_to(booted.root / "proc"))
    assert left == []
