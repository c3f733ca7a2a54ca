"""The real daemon under bad input and broken DNS, and its command line.

Hostile or broken clients must get a clear protocol error or be dropped,
and never stop the daemon from serving everyone else.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.world.daemon import DaemonProcess, run_cli, world_config
from tests.world.netstrings import netstring, read_netstring, socketmap_call
from tests.world import Route, Zone
from tests.world.fixtures import WORLD_ID

POLICY = b"version: STSv1\nmode: enforce\nmx: mx.robust.test\nmax_age: 86400\n"
EXPECTED = "secure match=mx.robust.test servername=hostname"
RECORDS = ["_mta-sts.robust 60 IN TXT \"v=STSv1; id=1\"", f"mta-sts.robust 60 IN A 127.60.{WORLD_ID}.1",
           "stsfail 60 IN MX 10 mx.stsfail"]


@pytest.fixture(scope="module")
def daemon(dns_world, policy_server, pki, tmp_path_factory):
    base = list(dns_world.parent_records)
    dns_world.parent_records = base + RECORDS
    # _mta-sts.stsfail.test is its own zone with a DS that matches no key: the
    # validating resolver answers SERVFAIL for the TXT record, nothing else.
    dns_world.add_zones([Zone("_mta-sts.stsfail.test", ['@ 60 IN TXT "v=STSv1; id=1"'], delegation="bogus")])
    policy_server.set("mta-sts.robust.test", Route(body=POLICY))
    proc = DaemonProcess(tmp_path_factory.mktemp("robust"), world_config(dns_world, pki, http_timeout_s=2))
    proc.start()
    yield proc
    proc.stop()
    dns_world.set_parent_records(base)


def test_stalled_half_request_does_not_block_others(daemon):
    stalled = socket.create_connection(("127.0.0.1", daemon.socketmap_port))
    stalled.sendall(b"40:postfix robust.te")          # half a request, then silence
    try:
        for _ in range(3):
            assert socketmap_call(daemon.socketmap_port, netstring(b"postfix robust.test")) == b"OK " + EXPECTED.encode()
        assert daemon.postmap("robust.test", daemon.tcp_map()) == (0, EXPECTED)
    finally:
        stalled.close()


@pytest.mark.parametrize("garbage", [b"abc,", b"5:hello;", b"99999999999:", b"-1:x,", b"100000:" + b"x" * 20000])
def test_broken_framing_closes_only_that_connection(daemon, garbage):
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=10) as sock:
        sock.sendall(garbage)
        sock.settimeout(10)
        leftovers = b""
        try:
            while chunk := sock.recv(4096):
                leftovers += chunk
        except ConnectionResetError:
            pass
        assert b"OK" not in leftovers   # closed, never answered as if it were a request
    assert daemon.postmap("robust.test") == (0, EXPECTED)


def test_malformed_request_in_valid_frame_gets_perm_and_connection_lives(daemon):
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=10) as sock:
        sock.sendall(netstring(b"no-space-here"))
        assert read_netstring(sock).startswith(b"PERM ")
        sock.sendall(netstring(b"postfix \xff\xfe.test"))
        assert read_netstring(sock).startswith(b"PERM ")
        sock.sendall(netstring(b"postfix robust.test"))
        assert read_netstring(sock) == b"OK " + EXPECTED.encode()


def test_pipelined_requests_are_answered_in_order(daemon):
    keys = [b"robust.test", b".test", b"nothing-here.test", b"robust.test", b"[robust.test]:25"]
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=15) as sock:
        sock.sendall(b"".join(netstring(b"postfix " + k) for k in keys))
        replies = [read_netstring(sock) for _ in keys]
    ok = b"OK " + EXPECTED.encode()
    assert replies == [ok, b"NOTFOUND ", b"NOTFOUND ", ok, b"NOTFOUND "]


def test_tcp_table_bad_requests(daemon):
    with socket.create_connection(("127.0.0.1", daemon.tcp_table_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"frobnicate robust.test\n")
        assert reader.readline().startswith(b"400 ")
        sock.sendall(b"get robust%zz.test\n")
        assert reader.readline().startswith(b"400 ")
        sock.sendall(b"get robust.test\n")
        assert reader.readline() == b"200 " + EXPECTED.replace(" ", "%20").encode() + b"\n"


def test_txt_servfail_with_nothing_cached_delivers_as_without_policy(daemon):
    started = time.monotonic()
    assert daemon.postmap("stsfail.test") == (1, "")
    assert time.monotonic() - started < 10
    assert "stsfail.test: sts-policy-fetch-error: TXT lookup failed" in daemon.log_path.read_text()


def test_check_config(tmp_path, daemon):
    assert run_cli("-c", str(daemon.config_path), "--check-config").returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[mta_sts]\nhttp_timeout = 3\n")
    result = run_cli("-c", str(bad), "--check-config")
    assert result.returncode == 78
    assert "Error in configuration at 'mta_sts.http_timeout': unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_query_explains(daemon):
    result = run_cli("-c", str(daemon.config_path), "query", "Robust.Test")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'TXT:     _mta-sts.robust.test "v=STSv1; id=1" (id 1)' in out
    assert "mx: mx.robust.test" in out
    assert f"answer:  OK {EXPECTED}" in out
    assert "enforce policy" in out
    probe = run_cli("-c", str(daemon.config_path), "query", ".robust.test")
    assert "NOTFOUND without any lookup" in probe.stdout
