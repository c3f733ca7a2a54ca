"""Debian's chrooted smtp(8) asks the daemon over a UNIX socket inside Postfix's queue directory.

The Postfix side is contrib/postfix/main.cf's socket line as shipped, a name
relative to ``$queue_directory``, which smtp(8) resolves inside its chroot
and every non-chrooted Postfix process from its working directory (the
queue directory too).  The daemon side is the README's: the directory
``run/mtasts-resolver`` in the queue directory, setgid ``postfix`` so the
socket (mode 0660) gets that group, and a ``[[listen]]`` on it.  The MX
hosts and zones are tests/world/mta.py's; a real Postfix 3.7 with chroot
on delivers (or defers) by the daemon's answers, and no other local user
can take the socket's place while the daemon is down.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.world.daemon import REPO
from tests.world.mta import MX_NET, mta_world  # noqa: F401  (fixture)
from tests.world.postfix import PrivatePostfix
from tests.world.postfix_chroot import chroot_postfix, chrooted_processes

CONTRIB_MAIN_CF = REPO / "contrib" / "postfix" / "main.cf"
SOCKET_MAP = re.compile(r"^#?smtp_tls_policy_maps = (socketmap:unix:(run/mtasts-resolver/[^:]+):postfix)$",
                        re.MULTILINE)
DELIVERY_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def chrooted(mta_world):
    table, relative = SOCKET_MAP.search(CONTRIB_MAIN_CF.read_text()).groups()
    workdir = Path(tempfile.mkdtemp(prefix="chroot-postfix-"))
    workdir.chmod(0o755)
    instance = PrivatePostfix(workdir, f"{MX_NET}.101", mta_world.resolver,
                              {"smtp_tls_security_level": "may", "smtp_tls_policy_maps": table,
                               "smtp_dns_support_level": "dnssec", "smtp_tls_CAfile": str(mta_world.ca_file)})
    instance.resolv_conf.write_text(instance.resolv_conf.read_text() + "options trust-ad\n")
    chroot_postfix(instance)
    # README "Postfix's chroot": the directory, made once (here the daemon runs as root, its owner).
    directory = instance.queue / "run" / "mtasts-resolver"
    directory.mkdir(parents=True)
    os.chown(directory, 0, grp.getgrnam("postfix").gr_gid)
    directory.chmod(0o2750)
    path = instance.queue / relative
    daemon = mta_world.daemon
    daemon.stop()
    daemon.config_path.write_text(daemon.config_path.read_text()
                                  + f'\n[[listen]]\nprotocol = "socketmap"\nunix = "{path}"\nmode = "0660"\n')
    daemon.start()
    try:
        instance.start()
        yield instance, path
    finally:
        instance.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def deliver(instance: PrivatePostfix, domain: str) -> str:
    """Send one message and wait for Postfix's first verdict: the status= word."""
    marker = f"chroot-{uuid.uuid4().hex}"
    instance.sendmail("sender@sender.test", f"rcpt@{domain}",
                      f"From: sender@sender.test\nTo: rcpt@{domain}\nSubject: {marker}\n\n{marker}\n".encode())
    pattern = re.compile(rf"to=<rcpt@{re.escape(domain)}>.*status=(sent|deferred|bounced)")
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if found := pattern.findall(instance.log_text()):
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no verdict for {domain}:\n{instance.log_text()[-4000:]}")


def test_the_socket_is_postfix_group_0660(chrooted):
    _, path = chrooted
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert grp.getgrgid(info.st_gid).gr_name == "postfix"


def test_chrooted_smtp_delivers_by_the_daemons_answers(chrooted):
    instance, _ = chrooted
    assert deliver(instance, "mta-sts-good.test") == "sent"
    assert "Verified TLS connection established to mx.mta-sts-good.test" in instance.log_text()
    assert deliver(instance, "mta-dane-good.test") == "sent"
    assert deliver(instance, "mta-sts-outside.test") == "deferred"   # the policy, read through the socket
    smtp = [pid for pid in chrooted_processes(instance)
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"smtp")]
    assert smtp, "no smtp(8) process is chrooted in the queue directory"
    assert not re.search(r"warning: .*socketmap", instance.log_text()), instance.log_text()[-3000:]


def test_no_other_user_can_take_the_sockets_place(chrooted):
    """The TCP takeover (any user may bind 127.0.0.1:8461 while the daemon is down) has no UNIX twin here."""
    _, path = chrooted
    squatter = path.with_name("squatter.sock")
    script = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
              "try:\n    s.bind(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n")
    nobody = subprocess.run(["/usr/bin/python3", "-c", script, str(squatter)], user="nobody", cwd="/",
                            timeout=30, check=False)
    assert nobody.returncode == 13 and not squatter.exists()
    with socket.socket() as probe:   # while TCP on loopback is anyone's to bind
        probe.bind(("127.0.0.1", 0))
