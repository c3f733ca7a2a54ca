"""Hostile table clients against the real daemon: each one bounded, everyone else still answered.

The daemon runs with short limits (below) so every attack ends in seconds.
Each test asserts the bound (time, RSS, file descriptors, answers) and that a
well-behaved client on another connection keeps getting its cached answer.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.world import Route
from tests.world.addresses import POLICY_IP
from tests.world.daemon import DaemonProcess, world_config
from tests.world.hostile import SteadyClient, proc_usage, set_limits
from tests.world.netstrings import netstring, read_netstring, socketmap_call

REQUEST_TIMEOUT_S = 2.0
PER_LISTENER, TOTAL = 20, 30
MAX_IN_FLIGHT = 4
POLICY = b"version: STSv1\nmode: enforce\nmx: mx.calm.test\nmax_age: 86400\n"
CALM = b"OK secure match=mx.calm.test servername=hostname"


@pytest.fixture(scope="module")
def daemon(dns_world, policy_server, pki, tmp_path_factory):
    base = list(dns_world.parent_records)
    dns_world.set_parent_records(base + ['_mta-sts.calm 60 IN TXT "v=STSv1; id=1"',
                                         f"mta-sts.calm 60 IN A {POLICY_IP}"])
    policy_server.set("mta-sts.calm.test", Route(body=POLICY))
    proc = DaemonProcess(tmp_path_factory.mktemp("hostile-clients"),
                         world_config(dns_world, pki, http_timeout_s=2) + "[dane]\nenabled = false\n")
    set_limits(proc, daemon={"max_connections": TOTAL, "log_level": "info"},
               listen={"max_connections": PER_LISTENER, "max_in_flight": MAX_IN_FLIGHT,
                       "request_timeout_s": REQUEST_TIMEOUT_S, "max_unsent_bytes": 8192})
    proc.config_path.write_text(proc.config_path.read_text().replace('log_level = "debug"\n', "", 1))
    proc.start()
    assert calm(proc) == CALM   # cached from now on
    yield proc
    proc.stop()
    dns_world.set_parent_records(base)


def calm(proc: DaemonProcess) -> bytes:
    """The well-behaved client: one lookup on its own connection to the UNIX socketmap listener."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(proc.unix_path))
        sock.sendall(netstring(b"postfix calm.test"))
        return read_netstring(sock)


def steady(proc: DaemonProcess) -> SteadyClient:
    client = SteadyClient(lambda: calm(proc), CALM)
    client.start()
    return client


def assert_served(client: SteadyClient) -> None:
    assert client.wrong == [] and client.latencies
    assert max(client.latencies) < 0.5


def closed_by_peer(sock: socket.socket, within_s: float) -> float | None:
    """Seconds until the daemon closed ``sock`` (EOF or reset), None if it stayed open ``within_s``."""
    start = time.monotonic()
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def fds_back(proc: DaemonProcess, baseline: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc_usage(proc.proc.pid)[1] <= baseline:
            return True
        time.sleep(0.05)
    return False


def test_slowloris_is_dropped_at_the_request_deadline(daemon):
    _, fds = proc_usage(daemon.proc.pid)
    client = steady(daemon)
    try:
        sock = socket.create_connection(("127.0.0.1", daemon.socketmap_port))
        start = time.monotonic()
        request, sent = netstring(b"postfix calm.test"), 0
        closed = False
        while time.monotonic() - start < REQUEST_TIMEOUT_S + 2:
            try:
                sock.send(request[sent % len(request):][:1])   # one byte every 0.5 s: never idle
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            sock.settimeout(0.5)
            try:
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
        took = time.monotonic() - start
        sock.close()
    finally:
        client.stop()
    assert closed and REQUEST_TIMEOUT_S - 0.5 < took < REQUEST_TIMEOUT_S + 1.5
    assert_served(client)
    assert fds_back(daemon, fds, 2)


def test_connections_over_the_listener_cap_are_closed_at_once(daemon):
    _, fds = proc_usage(daemon.proc.pid)
    client = steady(daemon)
    held = [socket.create_connection(("127.0.0.1", daemon.socketmap_port)) for _ in range(PER_LISTENER)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", daemon.socketmap_port))
        assert (closed_by_peer(extra, 2) or 99) < 0.5            # refused at once
        extra.close()
        assert closed_by_peer(held[0], 0.3) is None              # the admitted ones stay
        held[0].sendall(netstring(b"postfix calm.test"))
        assert read_netstring(held[0]) == CALM                   # and are answered
        assert_served(client)                                    # other listeners are not affected
    finally:
        client.stop()
        for sock in held:
            sock.close()
    assert fds_back(daemon, fds, 2)
    assert socketmap_call(daemon.socketmap_port, netstring(b"postfix calm.test")) == CALM   # room again


def test_connections_over_the_process_cap_are_closed_at_once(daemon):
    held = [socket.create_connection(("127.0.0.1", port))
            for port in (daemon.socketmap_port, daemon.tcp_table_port) for _ in range(TOTAL // 2)]
    try:
        time.sleep(0.2)
        with socket.socket(socket.AF_UNIX) as extra:
            extra.connect(str(daemon.unix_path))
            assert (closed_by_peer(extra, 2) or 99) < 0.5
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert calm(daemon) == CALM


def test_pipelining_without_reading_stops_being_read(daemon):
    rss, fds = proc_usage(daemon.proc.pid)
    client = steady(daemon)
    request = netstring(b"postfix calm.test")
    sock = socket.create_connection(("127.0.0.1", daemon.socketmap_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        sock.settimeout(2)
        sent = 0
        stalled = False
        while sent < 200_000_000:
            try:
                sent += sock.send(request * 4096)
            except socket.timeout:
                stalled = True                                   # the daemon stopped reading us
                break
        grown = proc_usage(daemon.proc.pid)[0] - rss
        assert_served(client)
    finally:
        client.stop()
        sock.close()
    assert stalled, f"sent {sent} bytes and the daemon still read them"
    assert sent < 64 * 1024 * 1024                                # kernel buffers, not our memory
    assert grown < 16 * 1024 * 1024
    assert fds_back(daemon, fds, 2)


def test_lookups_past_max_in_flight_wait_and_are_all_answered_in_order(daemon):
    keys = [b"calm.test" if i % 5 == 0 else b"cold%d.nowhere.test" % i for i in range(60)]
    client = steady(daemon)
    try:
        with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=30) as sock:
            sock.sendall(b"".join(netstring(b"postfix " + key) for key in keys))
            replies = [read_netstring(sock) for _ in keys]
    finally:
        client.stop()
    assert replies == [CALM if key == b"calm.test" else b"NOTFOUND " for key in keys]
    assert_served(client)
    assert "limit listen.max_in_flight reached" in daemon.log_path.read_text(errors="replace")
