"""daemon.workers = N: N processes serving the same sockets, supervised by the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world import Route
from tests.world.addresses import POLICY_IP
from tests.world.daemon import DaemonProcess, world_config
from tests.world.policy_server import sts_policy

EXPECTED = "secure match=mx.pool.example servername=hostname"


@pytest.fixture
def pool(tmp_path):
    store = SqliteStore(tmp_path / "state" / "cache.sqlite3")
    policy = parse_policy(sts_policy("mx.pool.example"))
    store.save_policy(CachedPolicy("pool.example", "1", policy, time.time()))
    store.close()
    # DNS points at a closed port: every answer below comes from the persistent cache.
    # One TLS-RPT collector socket: only worker 0 may bind it.
    proc = DaemonProcess(tmp_path, '[dns]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout_s = 0.5\n'
                                   f'[tlsrpt]\ncollector_socket = "{tmp_path / "collector.sock"}"\n')
    proc.config_path.write_text(proc.config_path.read_text().replace('log_level = "debug"',
                                                                     'log_level = "debug"\nworkers = 2'))
    proc.start()
    yield proc
    proc.stop()


def workers_of(parent: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(parent), "-o", "pid="], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_every_worker_serves_the_shared_sockets(pool):
    workers = workers_of(pool.proc.pid)
    assert len(workers) == 2
    assert sum("READY=1" in n for n in pool.notifications) == 1   # relayed once, when both were ready
    assert (pool.workdir / "collector.sock").is_socket()
    for paused in workers:
        os.kill(paused, signal.SIGSTOP)   # a stopped worker accepts nothing: the other must answer
        try:
            for table in (pool.socketmap_map(), pool.tcp_map(), f"socketmap:unix:{pool.unix_path}:postfix"):
                assert pool.postmap("pool.example", table) == (0, EXPECTED)
        finally:
            os.kill(paused, signal.SIGCONT)


def test_sigterm_stops_every_worker(pool):
    workers = workers_of(pool.proc.pid)
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.proc.wait(timeout=30) == 0
    assert pool.wait_for("STOPPING=1", 5)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()


def test_a_dead_worker_stops_the_pool_for_systemd_to_restart(pool):
    os.kill(workers_of(pool.proc.pid)[0], signal.SIGKILL)
    assert pool.proc.wait(timeout=15) == 70   # EX_SOFTWARE: a worker killed by a signal
    assert "exited with status -9; stopping the others" in pool.log_tail()


def test_a_pool_starts_on_an_empty_state_directory(tmp_path):
    """The workers create the cache together: only one may apply each schema step."""
    proc = DaemonProcess(tmp_path, '[dns]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout_s = 0.5\n')
    proc.config_path.write_text(proc.config_path.read_text().replace('log_level = "debug"',
                                                                     'log_level = "debug"\nworkers = 4'))
    proc.start()
    try:
        assert len(workers_of(proc.proc.pid)) == 4
        assert proc.postmap(".example.com") == (1, "")
    finally:
        proc.stop()
    assert "database is locked" not in proc.log_tail(200)


def test_workers_share_what_one_of_them_fetched(dns_world, policy_server, pki, tmp_path):
    """Worker A fetches a new domain; worker B, asked next, finds it in the store: one fetch per host."""
    base = list(dns_world.parent_records)
    dns_world.set_parent_records(base + ['_mta-sts.shared 60 IN TXT "v=STSv1; id=1"',
                                         f"mta-sts.shared 60 IN A {POLICY_IP}"])
    policy_server.set("mta-sts.shared.test", Route(body=sts_policy("mx.shared.test")))
    proc = DaemonProcess(tmp_path, world_config(dns_world, pki))
    proc.config_path.write_text(proc.config_path.read_text().replace('log_level = "debug"',
                                                                     'log_level = "debug"\nworkers = 2'))
    proc.start()
    try:
        expected = (0, "secure match=mx.shared.test servername=hostname")
        first, second = workers_of(proc.proc.pid)
        for asked, paused in ((first, second), (second, first)):   # each worker in turn answers alone
            os.kill(paused, signal.SIGSTOP)
            try:
                assert proc.postmap("shared.test", proc.socketmap_map()) == expected, proc.log_tail()
            finally:
                os.kill(paused, signal.SIGCONT)
        assert policy_server.hits("mta-sts.shared.test") == 1, proc.log_tail()
    finally:
        proc.stop()
        dns_world.set_parent_records(base)
