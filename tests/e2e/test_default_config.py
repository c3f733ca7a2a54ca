"""The installed console script runs with no configuration file at all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.world.daemon import REPO
from tests.world.postfix import postmap


@pytest.fixture
def default_daemon(tmp_path):
    script = Path(sys.executable).parent / "mtasts-resolver"
    if not script.exists():   # not installed into this interpreter's environment: use the module
        command = [sys.executable, "-m", "mtasts_resolver"]
    else:
        command = [str(script)]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    # No -c, and the default config path moved away from a package's /etc file: the embedded defaults.
    env = dict(os.environ, STATE_DIRECTORY=str(tmp_path / "state"), NOTIFY_SOCKET=str(tmp_path / "notify"),
               MTASTS_RESOLVER_CONFIG=str(tmp_path / "absent.toml"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "READY=1" in notify.recv(4096).decode()
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        notify.close()


def test_embedded_defaults_answer_postmap(default_daemon, tmp_path):
    for table in ("socketmap:inet:127.0.0.1:8461:postfix", "tcp:127.0.0.1:8462"):
        assert postmap(".example.com", table) == (1, "")   # not found, and nothing on stderr
    assert (tmp_path / "state" / "cache.sqlite3").exists()
