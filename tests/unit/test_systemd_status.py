"""The STATUS= text systemd shows for DANE, and the watchdog interval, as tables."""

from __future__ import annotations

import os

import pytest

from mtasts_resolver.app.systemd import dane_status, watchdog_interval_s
from tests.unit.helpers import FakeProbe


@pytest.mark.parametrize("enabled,probe,expected", [
    (False, None, "DANE off (dane.enabled = false)"),
    (True, None, "DANE on"),
    (True, FakeProbe(validating=True), "DANE on"),
    (True, FakeProbe(validating=False), "DANE DISABLED: resolver does not validate DNSSEC"),
])
def test_dane_status(enabled, probe, expected):
    assert dane_status(enabled, probe) == expected


@pytest.mark.parametrize("environ,interval_s", [
    ({}, 0.0),
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, 0.0),   # meant for another process
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
    ({"WATCHDOG_USEC": "junk"}, 0.0),
])
def test_watchdog_interval_is_half_of_watchdog_usec(environ, interval_s):
    assert watchdog_interval_s(environ) == interval_s


def test_a_notify_socket_nobody_reads_drops_messages_instead_of_blocking(tmp_path, monkeypatch):
    """sdnotify's own socket blocks: with the supervisor's buffer full, notify() would never return."""
    import socket
    import time

    from mtasts_resolver.app.systemd import notifier

    path = tmp_path / "notify"
    supervisor = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    supervisor.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    supervisor.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        notify = notifier()
        started = time.monotonic()
        for _ in range(5000):   # far more than the buffer holds; nobody reads
            notify.notify("WATCHDOG=1\nSTATUS=" + "x" * 200)
        assert time.monotonic() - started < 2
        assert supervisor.recv(4096).startswith(b"WATCHDOG=1")   # what fitted was delivered
    finally:
        supervisor.close()
