"""The Debian package: built from a clean tree, installed with apt, run as systemd would run it.

``packaging/build-deb`` builds the .deb from HEAD; ``apt-get install
./pkg.deb`` installs it with Debian's python3-* dependencies (Twisted 22.4,
dnspython 2.3, ...) and must leave Postfix installed.  The host runs no
systemd (test_booted.py boots one in a container), so the installed unit
is read and its ExecStartPre= / ExecStart= command lines are run the way
systemd would: as its User=, with its StateDirectory= / RuntimeDirectory=
created and exported, a real NOTIFY_SOCKET, and the packaged
/etc/mtasts-resolver/config.toml untouched.
The machine around it is what changes: in a private mount namespace,
/etc/resolv.conf names the world's validating resolver and the system CA
bundle is the test CA, so the untouched config resolves the world's
domains.

Installing is machine-wide, so the module holds a lock file for its whole
run (two suites on one machine take turns) and purges the package at the
end unless it was installed before.
"""

from __future__ import annotations

import configparser
import fcntl
import os
import pwd
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.world.debian import built_deb
from tests.world import Route
from tests.world.policy_server import sts_policy
from tests.world.postfix import postmap
from tests.world.addresses import POLICY_IP

PACKAGE = "mtasts-resolver"
UNIT_DIR = Path("/usr/lib/systemd/system")   # Debian 13 wants units there (lintian)
UNITS = ("mtasts-resolver.service", "mtasts-resolver-report.service", "mtasts-resolver-report.timer")
LOCK_FILE = "/tmp/mtasts-resolver-package-test.lock"   # every suite on this machine sees /tmp
APT_LOCK_TIMEOUT_S = 600
DOMAIN = "pkg-sts.test"
EXPECTED = f"secure match=mx.{DOMAIN} servername=hostname"
POLICY = sts_policy(f"mx.{DOMAIN}")
# The packaged config's listeners (packaging/config.toml).
SOCKETMAP, TCP_TABLE, READSOCKET = ("127.0.0.1", 8461), ("127.0.0.1", 8462), ("127.0.0.1", 8463)


def _installed() -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True)
    return status.stdout.strip() == "install ok installed"


def _apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", "-y", "-q", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}", *args],
                          capture_output=True, text=True, timeout=APT_LOCK_TIMEOUT_S + 300,
                          env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


@pytest.fixture(scope="module")
def deb() -> Path:
    return built_deb()   # once per session: the booted-system tests install the same file


@pytest.fixture(scope="module")
def installed(deb):
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was_installed = _installed()
        try:
            result = _apt("install", "--reinstall", str(deb))
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            yield result
        finally:
            if not was_installed:
                _apt("purge", PACKAGE)


def test_apt_installs_it_next_to_postfix(installed):
    assert _installed()
    assert " postfix" not in "".join(line for line in installed.stdout.splitlines() if "REMOVED" in line)
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "postfix"], capture_output=True, text=True)
    assert status.stdout.strip() == "install ok installed"
    user = pwd.getpwnam(PACKAGE)
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
    conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE], capture_output=True, text=True)
    assert "/etc/mtasts-resolver/config.toml" in conffiles.stdout
    # Enabled at install, as a Debian service is (started too where systemd runs).
    assert Path("/etc/systemd/system/multi-user.target.wants/mtasts-resolver.service").is_symlink()
    assert Path("/etc/systemd/system/timers.target.wants/mtasts-resolver-report.timer").is_symlink()
    listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True).stdout.split()
    for path in ("/usr/bin/mtasts-resolver", *(str(UNIT_DIR / unit) for unit in UNITS), "/usr/share/man/man8/mtasts-resolver.8.gz",
                 "/usr/share/doc/mtasts-resolver/examples/postfix/main.cf",
                 "/usr/share/doc/mtasts-resolver/examples/exim/routers.conf"):
        assert path in listing


def test_lintian_finds_nothing(deb):
    # --pedantic: not even pedantic tags; informational ones (-I) are not asked for.
    result = subprocess.run(["lintian", "--allow-root", "--pedantic", "--fail-on", "error,warning,pedantic",
                             str(deb)], capture_output=True, text=True, timeout=600)
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


def test_installed_units_pass_systemd_analyze_verify(installed):
    result = subprocess.run(["systemd-analyze", "verify", *(str(UNIT_DIR / unit) for unit in UNITS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr   # no warnings either


def test_installed_cli_help_and_config_check(installed):
    help_text = subprocess.run(["/usr/bin/mtasts-resolver", "--help"], capture_output=True, text=True).stdout
    assert "--check-config" in help_text and "query" in help_text
    check = subprocess.run(["/usr/bin/mtasts-resolver", "--check-config"], capture_output=True, text=True)
    assert check.returncode == 0 and "/etc/mtasts-resolver/config.toml" in check.stdout


class ServiceRun:
    """One ExecStart of the installed unit, as systemd would run it (see the module docstring)."""

    def __init__(self, unit: Path, resolv_conf: Path, ca_bundle: Path) -> None:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str   # systemd keys are case-sensitive
        parser.read(unit)
        self.service = parser["Service"]
        self.user = pwd.getpwnam(self.service["User"])
        self.dir = Path(tempfile.mkdtemp(prefix="mtasts-pkg-"))
        self.dir.chmod(0o755)
        self.notify_path = self.dir / "notify"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify_path.chmod(0o666)
        self.notifications: list[str] = []
        self.log = self.dir / "daemon.log"
        self.resolv_conf, self.ca_bundle = resolv_conf, ca_bundle
        self.state_dir = Path("/var/lib") / self.service["StateDirectory"]
        self.runtime_dir = Path("/run") / self.service["RuntimeDirectory"]
        for path, mode in ((self.state_dir, self.service["StateDirectoryMode"]),
                           (self.runtime_dir, self.service["RuntimeDirectoryMode"])):
            path.mkdir(exist_ok=True)
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
            path.chmod(int(mode, 8))
        self.proc: subprocess.Popen | None = None

    def _argv(self, command: str) -> list[str]:
        """``command`` as the unit's user, in a mount namespace with the world's resolv.conf and CA."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "STATE_DIRECTORY": str(self.state_dir), "RUNTIME_DIRECTORY": str(self.runtime_dir),
               "CONFIGURATION_DIRECTORY": f"/etc/{self.service['ConfigurationDirectory']}",
               "NOTIFY_SOCKET": str(self.notify_path)}
        inner = " ".join([
            f"mount --bind {self.resolv_conf} /etc/resolv.conf &&",
            f"mount --bind {self.ca_bundle} /etc/ssl/certs/ca-certificates.crt &&",
            "exec setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups",
            "--no-new-privs", "env -i", *(f"{k}={shlex.quote(v)}" for k, v in env.items()), command,
        ])
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]

    def start(self, timeout_s: float = 30.0) -> None:
        pre = subprocess.run(self._argv(self.service["ExecStartPre"]), capture_output=True, text=True, timeout=60)
        assert pre.returncode == 0, pre.stdout + pre.stderr
        self.proc = subprocess.Popen(self._argv(self.service["ExecStart"]), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not any("READY=1" in n for n in self.notifications):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            self.notify.settimeout(0.2)
            try:
                self.notifications.append(self.notify.recv(4096).decode())
            except socket.timeout:
                pass

    def stop(self) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # systemd's KillSignal= default
            try:
                code = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.notify.fileno() != -1:
            self.notify.setblocking(False)
            while True:
                try:
                    self.notifications.append(self.notify.recv(4096).decode())
                except BlockingIOError:
                    break
            self.notify.close()
        return code


@pytest.fixture()
def service(installed, dns_world, policy_server, pki, tmp_path):
    base = list(dns_world.parent_records)
    dns_world.set_parent_records([*base, '_mta-sts.pkg-sts 60 IN TXT "v=STSv1; id=pkg1"',
                                  f"mta-sts.pkg-sts 60 IN A {POLICY_IP}"])
    policy_server.set(f"mta-sts.{DOMAIN}", Route(body=POLICY))
    resolver_ip, resolver_port = dns_world.resolver()
    assert resolver_port == 53   # resolv.conf has no port
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text(f"nameserver {resolver_ip}\n")
    ca_bundle = tmp_path / "ca-certificates.crt"
    ca_bundle.write_bytes(pki.ca_file.read_bytes())
    for path in (resolv_conf, ca_bundle):
        path.chmod(0o644)
    run = ServiceRun(UNIT_DIR / "mtasts-resolver.service", resolv_conf, ca_bundle)
    try:
        run.start()
        yield run
    finally:
        run.stop()
        dns_world.set_parent_records(base)


def _readsocket(key: str) -> bytes:
    with socket.create_connection(READSOCKET, timeout=30) as sock:
        sock.sendall(key.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_installed_daemon_answers_postmap_as_the_service_user(service):
    # unshare, sh and setpriv all exec: the pid started is the daemon's.
    status = Path(f"/proc/{service.proc.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(service.user.pw_uid)] * 4
    assert "STATUS=" in next(n for n in service.notifications if "READY=1" in n)
    assert postmap(DOMAIN, f"socketmap:inet:{SOCKETMAP[0]}:{SOCKETMAP[1]}:postfix") == (0, EXPECTED), \
        service.log.read_text()
    assert postmap(DOMAIN, f"tcp:{TCP_TABLE[0]}:{TCP_TABLE[1]}") == (0, EXPECTED)
    assert _readsocket(DOMAIN) == f"OK {EXPECTED}\n".encode()
    assert postmap("no-such-domain.test", f"socketmap:inet:{SOCKETMAP[0]}:{SOCKETMAP[1]}:postfix") == (1, "")
    cache = service.state_dir / "cache.sqlite3"
    assert cache.exists() and cache.stat().st_uid == service.user.pw_uid
    assert service.stop() == 0
    assert any("STOPPING=1" in n for n in service.notifications)
