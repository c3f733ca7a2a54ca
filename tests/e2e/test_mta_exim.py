"""Real Exim (Debian's exim4-daemon-light, 4.96 or 4.98) enforcing the daemon's answers via contrib/exim/.

Debian's exim4 packages conflict with the installed postfix (both are "the
MTA"), so Exim is not installed: its .debs are fetched with ``apt-get
download`` and unpacked with ``dpkg -x`` into a private directory, and that
binary runs with a private configuration (``-C``).  The configuration is a
small wrapper that ``.include``s contrib/exim/{main,routers,transports}.conf
exactly as shipped, after defining their macros for the test (the daemon's
port, the test CA, loopback MX hosts allowed).  Commands run as root in a
mount namespace whose /etc/resolv.conf names the world's validating unbound
(with ``options trust-ad``); deliveries run as Debian-exim (created if missing, as exim4-base would).

Messages are queued (``-odq``) and then delivered by one foreground queue
run (``-qff``); Exim's main log says what happened to each.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.world.daemon import REPO
from tests.world.exim import EXIM_GROUP, EXIM_USER, contrib_wrapper
from tests.world.mta import CASES, mta_world  # noqa: F401  (fixture)

CONTRIB = REPO / "contrib" / "exim"
EXIM_PACKAGES = ("exim4-daemon-light", "exim4-base")
QUEUE_RUN_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def exim_binary(tmp_path_factory) -> Path:
    """Debian's Exim binary, unpacked from its .debs (never installed)."""
    work = tmp_path_factory.mktemp("exim-debs")
    work.chmod(0o755)   # apt-get download hands the file to the _apt user
    download = subprocess.run(["apt-get", "download", *EXIM_PACKAGES], cwd=work, capture_output=True,
                              text=True, timeout=300)
    assert download.returncode == 0, download.stdout + download.stderr
    root = work / "root"
    for deb in work.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    binary = root / "usr" / "sbin" / "exim4"
    if subprocess.run(["getent", "passwd", EXIM_USER], capture_output=True).returncode != 0:
        subprocess.run(["adduser", "--system", "--group", "--quiet", "--no-create-home", "--allow-bad-names",
                        "--home", "/var/spool/exim4", EXIM_USER], check=True, timeout=60)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    found = re.match(r"Exim version 4\.(\d+)", version.stdout)
    # contrib/exim needs 4.96 or later (its main.conf says why); Debian 13 has 4.98.
    assert found and int(found[1]) >= 96 and "DANE" in version.stdout, version.stdout + version.stderr
    return binary


class PrivateExim:
    """One Exim with its own spool, log and configuration, resolving through the world's unbound."""

    def __init__(self, binary: Path, readsocket_port: int, resolver: str, ca_file: Path,
                 event_socket: Path | None = None) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="mta-exim-"))
        self.dir.chmod(0o755)   # deliveries run as nobody
        for sub in ("spool", "log"):
            (self.dir / sub).mkdir()
            shutil.chown(self.dir / sub, EXIM_USER, EXIM_GROUP)
        self.ca_file = self.dir / "ca.pem"
        shutil.copy(ca_file, self.ca_file)
        self.ca_file.chmod(0o644)
        self.resolv_conf = self.dir / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {resolver}\noptions trust-ad timeout:2 attempts:2\n")
        self.config = self.dir / "exim.conf"
        self.config.write_text(contrib_wrapper(str(CONTRIB), str(binary), readsocket_port, str(self.ca_file),
                                               str(self.dir / "spool"), str(self.dir / "log"),
                                               str(event_socket) if event_socket else ""))
        self.config.chmod(0o644)

    def _run(self, args: list[str], stdin: bytes = b"", timeout_s: float = 60) -> subprocess.CompletedProcess:
        command = " ".join([str(self.binary), "-C", str(self.config), *args])
        script = f"mount --bind {self.resolv_conf} /etc/resolv.conf && exec {command}"
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              input=stdin, capture_output=True, timeout=timeout_s)

    def check_config(self) -> None:
        result = self._run(["-bV"])
        assert result.returncode == 0, (result.stdout + result.stderr).decode()

    def queue(self, sender: str, recipient: str, message: bytes) -> None:
        result = self._run(["-odq", "-f", sender, recipient], stdin=message)
        assert result.returncode == 0, (result.stdout + result.stderr).decode()

    def run_queue(self) -> None:
        self._run(["-qff"], timeout_s=QUEUE_RUN_TIMEOUT_S)

    def mainlog(self) -> str:
        try:
            return (self.dir / "log" / "mainlog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def exim(exim_binary, mta_world):
    instance = PrivateExim(exim_binary, mta_world.readsocket_port, mta_world.resolver, mta_world.ca_file,
                           mta_world.exim_event_socket)
    instance.check_config()
    yield instance
    instance.remove()


@pytest.fixture(scope="module")
def sent(exim):
    """One message per case, queued, then a single delivery run."""
    markers = {}
    for domain in CASES:
        marker = f"ex-{uuid.uuid4().hex}"
        markers[domain] = marker
        exim.queue("sender@sender-exim.test", f"rcpt@{domain}",
                   f"From: sender@sender-exim.test\nTo: rcpt@{domain}\nSubject: {marker}\n\n{marker}\n".encode())
    exim.run_queue()
    return markers


def _log_for(exim: PrivateExim, domain: str) -> tuple[str, str]:
    """(``=>`` delivered / ``==`` deferred / ``**`` failed, the line) for mail to ``domain``."""
    for line in exim.mainlog().splitlines():
        match = re.search(rf" (=>|==|\*\*) rcpt@{re.escape(domain)} ", line)
        if match:
            return match.group(1), line
    raise AssertionError(f"no delivery line for {domain}:\n{exim.mainlog()[-4000:]}")


def test_sts_enforce_good_certificate_is_delivered_verified(exim, sent, mta_world):
    flag, line = _log_for(exim, "mta-sts-good.test")
    assert flag == "=>" and "CV=yes" in line and "H=mx.mta-sts-good.test" in line, line
    (message,) = mta_world.received("mta-sts-good.test", sent["mta-sts-good.test"])
    assert message.tls


def test_sts_enforce_wrong_name_certificate_is_deferred(exim, sent, mta_world):
    flag, line = _log_for(exim, "mta-sts-badcert.test")
    assert flag == "==", line
    assert mta_world.received("mta-sts-badcert.test", sent["mta-sts-badcert.test"]) == []


def test_sts_enforce_mx_outside_the_policy_is_not_even_contacted(exim, sent, mta_world):
    flag, line = _log_for(exim, "mta-sts-outside.test")
    assert flag == "==", line
    # The tcp:connect event refused the host (Exim logs that, not the event's text).
    assert "H=mx.mta-sts-outside.test [" in exim.mainlog() and "Event requests alternate response" in exim.mainlog()
    assert mta_world.received("mta-sts-outside.test", sent["mta-sts-outside.test"]) == []


def test_dane_matching_tlsa_is_delivered(exim, sent, mta_world):
    flag, line = _log_for(exim, "mta-dane-good.test")
    assert flag == "=>" and "CV=dane" in line, line
    (message,) = mta_world.received("mta-dane-good.test", sent["mta-dane-good.test"])
    assert message.tls


def test_dane_mismatching_tlsa_is_deferred(exim, sent, mta_world):
    flag, line = _log_for(exim, "mta-dane-bad.test")
    assert flag == "==", line
    assert mta_world.received("mta-dane-bad.test", sent["mta-dane-bad.test"]) == []


def test_no_policy_is_delivered_opportunistically(exim, sent, mta_world):
    flag, line = _log_for(exim, "mta-plain.test")
    assert flag == "=>" and "CV=no" in line, line
    (message,) = mta_world.received("mta-plain.test", sent["mta-plain.test"])
    assert message.tls


def test_daemon_unreachable_defers_instead_of_downgrading(exim_binary, mta_world, tmp_path):
    from tests.world.daemon import free_port

    broken = PrivateExim(exim_binary, free_port(), mta_world.resolver, mta_world.ca_file)
    try:
        broken.queue("sender@sender-exim.test", "rcpt@mta-plain.test", b"Subject: x\n\nx\n")
        broken.run_queue()
        flag, line = _log_for(broken, "mta-plain.test")
        assert flag == "==" and "TLS policy lookup failed" in line, line
    finally:
        broken.remove()


def test_tls_outcomes_reach_the_daemons_tlsrpt_spool(exim, sent, mta_world):
    """contrib's event_action feeds each TLS session to the daemon (RFC 8460 counts)."""
    wanted = {("mta-sts-good.test", "success"), ("mta-dane-good.test", "success"), ("mta-dane-bad.test", "detail")}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = mta_world.spooled()
        if wanted <= {(domain, kind) for domain, kind, _ in rows}:
            break
        time.sleep(0.2)
    assert wanted <= {(domain, kind) for domain, kind, _ in rows}, rows
    failure = next(json for domain, kind, json in rows if (domain, kind) == ("mta-dane-bad.test", "detail"))
    assert "mx.mta-dane-bad.test" in failure and "127.75." in failure
