"""Every socket file the daemon makes takes the same mode / owner / group settings (net/sockets.py).

The listener, the libtlsrpt collector and the Exim event socket are made by
a real daemon (one process, and a worker pool whose parent binds the
listeners), then checked with stat(2) and with a client that runs as
``nobody``: the mode and group must decide who may connect, not just look
right.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world.daemon import DaemonProcess

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
EXPECTED = "secure match=mx.modes.example servername=hostname"
EVENT = (b"tlsrpt-v1 event=msg:delivery domain=modes.example host=mx.modes.example ip=192.0.2.1 "
         b"cipher=TLS1.3 cv=yes dane=no report=0 data=\n")

# Connect as nobody:nogroup (no supplementary groups); print "ok" or the errno name.
AS_NOBODY = """
import errno, socket, sys
kind = socket.SOCK_DGRAM if sys.argv[2] == "dgram" else socket.SOCK_STREAM
s = socket.socket(socket.AF_UNIX, kind)
try:
    s.connect(sys.argv[1])
    print("ok")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


@pytest.fixture
def socket_dir():
    """A directory nobody may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="mtasts-modes-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def connect_as_nobody(path: Path, kind: str = "stream") -> str:
    result = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOGROUP}", "--clear-groups",
                             "/usr/bin/python3", "-c", AS_NOBODY, str(path), kind],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def stale_socket(path: Path, kind: int) -> None:
    """What a killed daemon leaves behind: a socket file nobody listens on."""
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(str(path))
    sock.close()


def daemon_config(d: Path, owner: str = "nobody") -> str:
    """DNS points at a closed port: the lookup below is answered from the cache the test fills."""
    return f"""
[[listen]]
protocol = "socketmap"
unix = "{d / 'open.sock'}"
mode = "0660"
owner = "{owner}"
group = "nogroup"

[tlsrpt]
collector_socket = "{d / 'collector.sock'}"
collector_socket_mode = "0620"
collector_socket_owner = "{owner}"
collector_socket_group = "nogroup"
exim_event_socket = "{d / 'exim.sock'}"
exim_event_socket_mode = "0660"
exim_event_socket_group = "nogroup"

[dns]
nameservers = ["127.0.0.1"]
port = 9
timeout_s = 0.5
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_mode_owner_and_group_of_every_socket(tmp_path, socket_dir, workers):
    stale_socket(socket_dir / "open.sock", socket.SOCK_STREAM)
    stale_socket(socket_dir / "collector.sock", socket.SOCK_DGRAM)
    stale_socket(socket_dir / "exim.sock", socket.SOCK_STREAM)
    store = SqliteStore(tmp_path / "state" / "cache.sqlite3")
    policy = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.modes.example\nmax_age: 86400\n")
    store.save_policy(CachedPolicy("modes.example", "1", policy, time.time()))
    store.close()
    proc = DaemonProcess(tmp_path, daemon_config(socket_dir))
    proc.config_path.write_text(proc.config_path.read_text().replace(
        'log_level = "debug"', f'log_level = "debug"\nworkers = {workers}'))
    proc.start()
    try:
        expected = {   # file: (mode, uid, gid)
            "open.sock": (0o660, NOBODY, NOGROUP),
            "collector.sock": (0o620, NOBODY, NOGROUP),
            "exim.sock": (0o660, 0, NOGROUP),
        }
        for name, want in expected.items():
            info = os.lstat(socket_dir / name)
            assert stat.S_ISSOCK(info.st_mode), name
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == want, name
        assert stat.S_IMODE(os.lstat(proc.unix_path).st_mode) == 0o600   # the helper's own listener, root's

        # The modes decide who may connect: nogroup may use the listener and
        # write to the collector; the root-only listener refuses nobody.
        assert connect_as_nobody(socket_dir / "open.sock") == "ok"
        assert connect_as_nobody(socket_dir / "collector.sock", "dgram") == "ok"
        assert connect_as_nobody(socket_dir / "exim.sock") == "ok"        # by its group alone
        assert connect_as_nobody(proc.unix_path) == "EACCES"

        # And they serve: a lookup over the new listener, an Exim event answered.
        assert proc.postmap("modes.example", f"socketmap:unix:{socket_dir / 'open.sock'}:postfix") == (0, EXPECTED)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(socket_dir / "exim.sock"))
            client.sendall(EVENT)
            assert client.recv(64).startswith(b"OK"), proc.log_tail()
    finally:
        assert proc.stop() == 0, proc.log_tail()


@pytest.mark.parametrize("where", ["listen", "tlsrpt"])
def test_unknown_owner_stops_the_start_with_its_name(tmp_path, socket_dir, where):
    config = daemon_config(socket_dir, owner="nosuchuser-mtasts")
    if where == "tlsrpt":   # only the collector's owner is wrong
        config = config.replace('owner = "nosuchuser-mtasts"', 'owner = "nobody"', 1)
    proc = DaemonProcess(tmp_path, config)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="not ready"):
        proc.start(timeout_s=30)
    assert time.monotonic() - started < 20, "the daemon must exit, not hang until killed"
    assert proc.proc.returncode not in (0, None)
    assert "nosuchuser-mtasts" in proc.log_path.read_text()
