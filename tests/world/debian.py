"""The .deb, and Debian systems booted with it: systemd-nspawn containers.

``built_deb()`` builds the package from HEAD once per test session
(``packaging/build-deb``).  ``prepared_root()`` debootstraps a minbase root
of a Debian suite, then installs systemd, Postfix (its "Local only"
configuration) and the .deb into it over the network, in a chroot.
``BootedDebian`` boots that root with ``systemd-nspawn --boot`` and no
network (``--private-network``: loopback only) and runs commands in it with
``nsenter`` into its init's namespaces: the host runs no systemd, so there
is no machined to register with (``--register=no``) or to ask for a scope
(``--keep-unit``), and ``machinectl`` cannot reach the container.

``BootedDebian.network()`` moves the calling thread into the container's
network namespace, so the test world (nsd, unbound, the policy web server,
MX hosts: tests/world) is started on the container's own loopback: the
container reaches nothing else, and the host's world, if any, is untouched.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.world.daemon import REPO

PACKAGE = "mtasts-resolver"
MIRROR = "http://deb.debian.org/debian"
# What the booted container runs besides the package: systemd as init, and
# a local MTA whose sendmail the report unit uses.
CONTAINER_PACKAGES = ("systemd", "systemd-sysv", "dbus", "postfix")
# Fetched into apt's cache only, installed offline in the booted container
# (Exim replaces Postfix as the MTA, so it comes after the Postfix tests).
DOWNLOADED_PACKAGES = ("exim4-daemon-light",)
POSTFIX_DEBCONF = ("postfix postfix/main_mailer_type select Local only",
                   "postfix postfix/mailname string booted.test")
BOOT_TIMEOUT_S = 120


@functools.cache
def built_deb() -> Path:
    """``packaging/build-deb`` of HEAD, once per session (removed at exit)."""
    out = Path(tempfile.mkdtemp(prefix="mtasts-deb-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    build = subprocess.run([str(REPO / "packaging" / "build-deb"), str(out)], capture_output=True, text=True,
                           timeout=900, cwd=REPO)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (package,) = out.glob(f"{PACKAGE}_*_all.deb")
    return package


def _chroot(root: Path, script: str, timeout_s: float) -> None:
    """``script`` (sh) in ``root`` with its own /proc, in a private mount namespace."""
    inner = f"mount -t proc proc {root}/proc && exec chroot {root} sh -ec \"$0\""
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, script],
                            capture_output=True, text=True, timeout=timeout_s,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                 "DEBIAN_FRONTEND": "noninteractive"})
    assert result.returncode == 0, f"in {root}: {script}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def prepared_root(suite: str, workdir: Path, deb: Path) -> Path:
    """A minbase ``suite`` root with CONTAINER_PACKAGES and the .deb installed, not yet booted."""
    root = workdir / suite
    debootstrap = subprocess.run(["debootstrap", "--variant=minbase", suite, str(root), MIRROR],
                                 capture_output=True, text=True, timeout=900)
    assert debootstrap.returncode == 0, debootstrap.stdout[-3000:] + debootstrap.stderr[-3000:]
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")   # apt in the chroot only
    shutil.copy(deb, root / "tmp" / deb.name)
    # No service may start in the chroot: they start when the root boots.
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    debconf = "\n".join(POSTFIX_DEBCONF)
    _chroot(root, f"""
echo '{debconf}' | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends {' '.join(CONTAINER_PACKAGES)} /tmp/{deb.name} >/dev/null
apt-get install -y -qq --no-install-recommends --download-only {' '.join(DOWNLOADED_PACKAGES)} >/dev/null
rm /tmp/{deb.name} /usr/sbin/policy-rc.d
echo booted-{suite} > /etc/hostname
""", timeout_s=1200)
    return root


class BootedDebian:
    """``systemd-nspawn --boot`` of a prepared root; ``run()`` executes inside it."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.suite = root.name   # prepared_root's directory is named after the suite
        self.name = name
        self.console = root.parent / f"{name}.console"
        self.proc: subprocess.Popen | None = None
        self.init_pid = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--private-network",
             "--console=passive", "-M", self.name, "-D", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=open(self.console, "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while not self.init_pid:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.console.read_text()
            pids = children.read_text().split()
            self.init_pid = int(pids[0]) if pids else 0
            time.sleep(0.1)
        # Ask until the container's systemd answers, then until boot is done.
        while True:
            state = self.run("systemctl", "is-system-running", "--wait", timeout_s=BOOT_TIMEOUT_S).stdout.strip()
            if state in ("running", "degraded"):
                break
            assert time.monotonic() < deadline, f"boot state {state!r}\n{self.console.read_text()}"
            time.sleep(0.5)
        self.state = state

    def run(self, *argv: str, input: str | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", *argv], input=input,
                              capture_output=True, text=True, timeout=timeout_s,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})

    @contextlib.contextmanager
    def network(self) -> Iterator[None]:
        """The calling thread in the container's network namespace (its sockets, and its children's, too)."""
        host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        container = os.open(f"/proc/{self.init_pid}/ns/net", os.O_RDONLY)
        try:
            _setns(container)
            try:
                yield
            finally:
                _setns(host)
        finally:
            os.close(container)
            os.close(host)

    def unit(self, name: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` of ``name``: the asked properties by name."""
        out = self.run("systemctl", "show", name, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(self, name: str, want: dict[str, str], timeout_s: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            shown = self.unit(name, *want, "MainPID", "NRestarts")
            if all(shown.get(key) == value for key, value in want.items()) or time.monotonic() > deadline:
                return shown
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM: systemd-nspawn shuts the container's systemd down in order."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """setns(2) into a network namespace (Python 3.11 has no os.setns)."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
