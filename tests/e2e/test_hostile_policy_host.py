"""A hostile policy host against the real daemon: every framing accepted, every attack bounded.

Each case asks the daemon for a domain whose ``mta-sts.`` host is the
hostile server, and asserts the answer, the time it took, the daemon's RSS
and file descriptors afterwards, that the daemon hung up on the host, and
that a well-behaved client asking for a cached domain was answered quickly
all along.
"""

from __future__ import annotations

import time

import pytest

from tests.world.daemon import DaemonProcess, world_config
from tests.world.hostile import HOSTILE_POLICY_IP, HostileServer, SteadyClient, proc_usage
from tests.world.netstrings import netstring, socketmap_call

HTTP_TIMEOUT_S = 3.0
MAX_RSS_GROWTH = 64 * 1024 * 1024
VALID = ["content-length", "chunked", "close-delimited"]
HOSTILE = {   # case -> what the daemon logs as the reason
    "endless-headers": "response over mta_sts.max_header_bytes",
    "informational-storm": "response over mta_sts.max_informational_responses",
    "slow-body": f"no complete answer within {HTTP_TIMEOUT_S:g} s",
    "oversize-content-length": "policy larger than 65536 bytes",
    "oversize-chunked": "policy larger than 65536 bytes",
    "oversize-close-delimited": "policy larger than 65536 bytes",
}
GOOD = "h-good"


def policy(name: str) -> bytes:
    return f"version: STSv1\nmode: enforce\nmx: mx.{name}.test\nmax_age: 86400\n".encode()


def expected(name: str) -> bytes:
    return f"OK secure match=mx.{name}.test servername=hostname".encode()


def records(name: str) -> list[str]:
    return [f'_mta-sts.{name} 60 IN TXT "v=STSv1; id=1"', f"mta-sts.{name} 60 IN A {HOSTILE_POLICY_IP}"]


@pytest.fixture(scope="module")
def world(dns_world, pki, tmp_path_factory):
    names = [GOOD] + [f"h-{case}" for case in [*VALID, *HOSTILE]]
    base = list(dns_world.parent_records)
    dns_world.set_parent_records(base + [r for name in names for r in records(name)])
    server = HostileServer(pki)
    server.set(f"mta-sts.{GOOD}.test", "content-length", policy(GOOD))
    for case in [*VALID, *HOSTILE]:
        server.set(f"mta-sts.h-{case}.test", case, policy(f"h-{case}"))
    server.start()
    proc = DaemonProcess(tmp_path_factory.mktemp("hostile-host"), world_config(
        dns_world, pki, http_timeout_s=HTTP_TIMEOUT_S, max_header_bytes=16384, max_informational_responses=5)
        + "[dane]\nenabled = false\n")
    proc.start()
    assert ask(proc, GOOD) == expected(GOOD)   # cached from now on
    yield proc, server
    proc.stop()
    server.stop()
    dns_world.set_parent_records(base)


def ask(proc: DaemonProcess, name: str) -> bytes:
    return socketmap_call(proc.socketmap_port, netstring(f"postfix {name}.test".encode()), timeout_s=30)


@pytest.mark.parametrize("case", VALID)
def test_valid_policy_in_every_framing_is_accepted(world, case):
    proc, _ = world
    assert ask(proc, f"h-{case}") == expected(f"h-{case}")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_policy_host_is_bounded(world, case):
    proc, server = world
    host = f"mta-sts.h-{case}.test"
    rss_before, fds_before = proc_usage(proc.proc.pid)
    log_before = proc.log_path.stat().st_size
    client = SteadyClient(lambda: ask(proc, GOOD), expected(GOOD))
    client.start()
    try:
        start = time.monotonic()
        answer = ask(proc, f"h-{case}")
        took = time.monotonic() - start
        closed_after = server.wait_closed(host, HTTP_TIMEOUT_S + 1)
    finally:
        client.stop()
    rss_after, _ = proc_usage(proc.proc.pid)
    # No valid policy and nothing cached: RFC 8461 §5 says deliver as without one.
    assert answer == b"NOTFOUND "
    assert took < HTTP_TIMEOUT_S + 1
    assert server.served(host) >= 1
    assert closed_after is not None, f"daemon still connected to {host}"
    assert rss_after - rss_before < MAX_RSS_GROWTH
    deadline = time.monotonic() + HTTP_TIMEOUT_S + 1
    while proc_usage(proc.proc.pid)[1] > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc_usage(proc.proc.pid)[1] <= fds_before
    assert client.wrong == [] and client.latencies
    assert max(client.latencies) < 0.5
    assert HOSTILE[case] in proc.log_path.read_text(errors="replace"), proc.log_tail()
    # A 1xx storm once wrote 7.6 MB of log per fetch: now a few lines, at debug level too.
    assert proc.log_path.stat().st_size - log_before < 20_000
