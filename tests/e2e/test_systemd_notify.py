"""The daemon under systemd-style supervision, checked on a real NOTIFY_SOCKET.

READY=1 only once every listener accepts, WATCHDOG=1 repeatedly when
WATCHDOG_USEC is set, STATUS= with counts, RELOADING=1/READY=1 around a
SIGHUP that keeps open connections, STOPPING=1 on SIGTERM with in-flight
lookups still answered.  No DNS world is needed: a UDP socket that never
answers stands in for a slow resolver, which keeps a lookup in flight.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.world.daemon import DaemonProcess, free_port

DNS_TIMEOUT_S = 3


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def read_netstring(sock: socket.socket) -> bytes:
    data = b""
    while not (b":" in data and data.endswith(b",") and len(data) > int(data.split(b":")[0]) + 1):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture()
def black_hole():
    """A "nameserver" that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture()
def daemon(tmp_path, black_hole):
    proc = DaemonProcess(tmp_path, f"""
[dns]
nameservers = ["127.0.0.1"]
port = {black_hole}
timeout_s = {DNS_TIMEOUT_S}
""")
    yield proc
    proc.stop(signal.SIGKILL)


def test_ready_only_once_listening_then_watchdog_and_status(daemon):
    daemon.start(extra_env={"WATCHDOG_USEC": "300000"})   # 0.3 s: pings every 0.15 s
    for port in (daemon.socketmap_port, daemon.tcp_table_port):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()   # READY=1 came after bind
    ready = next(n for n in daemon.notifications if "READY=1" in n)
    assert "STATUS=0 domains cached, 0 client connections" in ready
    deadline = time.monotonic() + 10
    while sum("WATCHDOG=1" in n for n in daemon.notifications) < 3 and time.monotonic() < deadline:
        daemon.wait_for("never", 0.2)
    assert sum("WATCHDOG=1" in n for n in daemon.notifications) >= 3, daemon.notifications


def test_no_watchdog_without_watchdog_usec(daemon):
    daemon.start()
    daemon.wait_for("WATCHDOG=1", 1.0)
    assert not any("WATCHDOG=1" in n for n in daemon.notifications)


def test_sigterm_answers_lookups_in_flight_then_stopping(daemon):
    daemon.start()
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=DNS_TIMEOUT_S * 4) as sock:
        sock.sendall(netstring(b"postfix slow.example"))
        time.sleep(0.5)                      # the lookup is now waiting on the silent nameserver
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait_for("STOPPING=1", 5), daemon.notifications
        reply = read_netstring(sock)
        assert reply.split(b":", 1)[1].startswith((b"NOTFOUND", b"TEMP")), reply
        assert sock.recv(1) == b""           # then the daemon closes the connection
    assert daemon.proc.wait(timeout=15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=2)


def test_sighup_reloads_listeners_and_keeps_connections(daemon):
    daemon.start()
    new_port = free_port()
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=10) as kept:
        kept.sendall(netstring(b"postfix .example.com"))
        assert read_netstring(kept) == b"9:NOTFOUND ,"
        text = daemon.config_path.read_text()
        daemon.config_path.write_text(
            text.replace('protocol = "tcp_table"', 'protocol = "readsocket"')
                .replace(f"127.0.0.1:{daemon.tcp_table_port}", f"127.0.0.1:{new_port}")
                .replace('log_level = "debug"', 'log_level = "info"'))
        daemon.notifications.clear()
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for("READY=1", 10), daemon.notifications
        assert any("RELOADING=1" in n for n in daemon.notifications)
        with socket.create_connection(("127.0.0.1", new_port), timeout=10) as fresh:
            fresh.sendall(b".example.com\n")
            assert fresh.recv(100) == b"NOTFOUND\n"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", daemon.tcp_table_port), timeout=2)
        kept.sendall(netstring(b"postfix .example.org"))    # the old connection still works
        assert read_netstring(kept) == b"9:NOTFOUND ,"
    assert "configuration reloaded" in daemon.log_tail()


def test_sighup_with_a_broken_config_keeps_running(daemon):
    daemon.start()
    daemon.config_path.write_text(daemon.config_path.read_text() + "\n[dns]\nbogus = 1\n")
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for("READY=1", 10)
    assert any("reload refused" in n for n in daemon.notifications), daemon.notifications
    assert daemon.postmap(".example.com") == (1, "")
    assert daemon.proc.poll() is None


def test_sighup_reports_sections_that_need_a_restart(daemon):
    daemon.start()
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        f"timeout_s = {DNS_TIMEOUT_S}", "timeout_s = 1"))
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for("READY=1", 10)
    assert any("restart needed for dns" in n for n in daemon.notifications), daemon.notifications
