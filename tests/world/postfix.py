"""A private Postfix instance (Debian's package, 3.7 or 3.10) under a temporary directory.

Its own config_directory, meta_directory, queue_directory and maillog_file;
chroot off.  Nothing reads the host's /etc/postfix, which may be absent or
hold no main.cf ("No configuration"): the queue tree is made here rather
than by ``postfix start`` (whose post-install needs /etc/postfix/postfix-files),
master is started directly, and every ``postmap`` query names its own
config directory (:func:`postmap`).  It runs in its own mount namespace
where ``/etc/resolv.conf`` is bind-mounted to name the test world's
resolver, so Postfix's MX lookups (libc resolver) see the world's ``test.``
zones while every address stays on the shared loopback.  Stopping kills the
whole process group, even after a failure.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MASTER = "/usr/lib/postfix/sbin/master"
POSTMAP = "/usr/sbin/postmap"
POSTQUEUE = "/usr/sbin/postqueue"
SENDMAIL = "/usr/sbin/sendmail"
# The queue tree as Debian's postfix-files has post-install create it:
# (directory, owner, group, mode).
QUEUE_TREE = (
    *((name, "postfix", "root", 0o700) for name in (
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved",
        "trace")),
    ("maildrop", "postfix", "postdrop", 0o1730),
    ("public", "postfix", "postdrop", 0o2710),
    ("pid", "root", "root", 0o755),
)

MASTER_CF = """\
{smtpd_address}:25 inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@functools.cache
def _postmap_config() -> str:
    """A private, empty Postfix config directory for ``postmap -c``, made once per test process.

    Its main.cf is dated an hour back: Postfix waits (300 ms at a time, up to
    about 2 s) for a main.cf modified within the last second to settle, which
    a fresh file per call paid on every lookup.
    """
    conf = tempfile.mkdtemp(prefix="postmap-")
    main_cf = Path(conf) / "main.cf"
    main_cf.write_text(f"meta_directory = {conf}\n")
    past = time.time() - 3600
    os.utime(main_cf, (past, past))
    return conf


def postmap(key: str, table: str) -> tuple[int, str]:
    """``postmap -q KEY TABLE`` with an empty private main.cf: exit 0 and the value when found, 1 when not.

    Without ``-c`` postmap reads the host's /etc/postfix/main.cf and dies
    where there is none; socketmap and tcp tables need no settings.
    """
    result = subprocess.run([POSTMAP, "-c", _postmap_config(), "-q", key, table], capture_output=True, text=True,
                            timeout=60)
    return result.returncode, result.stdout.strip() or result.stderr.strip()


@contextmanager
def private_workdir(prefix: str) -> Iterator[Path]:
    """A world-readable work tree outside pytest's basetemp.

    Postfix's daemons run as the postfix user and must traverse the path;
    pytest keeps /tmp/pytest-of-root at mode 0700 (re-applied by every
    pytest session that starts, and other suites run concurrently).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class PrivatePostfix:
    """``postfix -c DIR start`` with a config written from ``settings``."""

    def __init__(self, workdir: Path, smtpd_address: str, resolver: str, settings: dict[str, str]) -> None:
        self.workdir = Path(workdir)
        self.conf = self.workdir / "conf"
        self.queue = self.workdir / "queue"
        self.maillog = self.workdir / "maillog"
        self.smtpd_address = smtpd_address
        for path in (self.conf, self.queue, self.workdir / "data"):
            path.mkdir(parents=True, exist_ok=True)
        # master's lock file lives in data_directory, which must belong to
        # mail_owner; the unprivileged daemons must reach the whole tree
        # (see private_workdir).
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.workdir / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        for name, owner, group, mode in QUEUE_TREE:
            path = self.queue / name
            path.mkdir(exist_ok=True)
            os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
            path.chmod(mode)
        self.resolv_conf = self.workdir / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {resolver}\noptions timeout:2 attempts:2\n")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "meta_directory": str(self.conf),
            "data_directory": str(self.workdir / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "sender.rpt-world.test",
            "mydomain": "rpt-world.test",
            "mydestination": "",
            "alias_maps": "",
            "local_recipient_maps": "",
            # "all" with the address in master.cf: Postfix refuses an
            # inet_interfaces address that no interface has (127.x/8 aliases).
            "inet_interfaces": "all",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.workdir),
            "smtp_tls_loglevel": "1",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "10s",
            "smtp_address_preference": "ipv4",
            # Deferred mail waits: a test counts each delivery attempt exactly once.
            "minimal_backoff_time": "3600s",
            "maximal_backoff_time": "3600s",
            "queue_run_delay": "3600s",
            "smtp_tls_session_cache_database": "",
            **settings,
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.conf / "master.cf").write_text(MASTER_CF.format(smtpd_address=smtpd_address))
        self._master_pid: int | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        # master -w returns once the daemon it forks has initialized.
        script = f"mount --bind {self.resolv_conf} /etc/resolv.conf && exec {MASTER} -c {self.conf} -w"
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}")
        pid_file = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self._master_pid = int(pid_file.read_text().strip())
                break
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        else:
            raise RuntimeError(f"postfix master did not start:\n{self.log_text()}")

    def sendmail(self, sender: str, recipient: str, message: bytes) -> None:
        """Submit through Postfix's own sendmail(1) (postdrop → pickup)."""
        subprocess.run([SENDMAIL, "-C", str(self.conf), "-i", "-f", sender, "--", recipient],
                       input=message, check=True, timeout=30)

    def flush(self) -> None:
        subprocess.run([POSTQUEUE, "-c", str(self.conf), "-f"], check=False, capture_output=True, timeout=30)

    def queue_ids(self) -> list[str]:
        out = subprocess.run([POSTQUEUE, "-c", str(self.conf), "-j"], capture_output=True,
                             text=True, timeout=30).stdout
        return [line for line in out.splitlines() if line.strip()]

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        pid, self._master_pid = self._master_pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)   # what ``postfix stop`` sends master
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
