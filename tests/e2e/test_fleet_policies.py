"""The fleet's policy cache on a real PostgreSQL: what one daemon fetched protects the next one, the database may go away.

- A daemon fetches a domain's policy; its policy host then goes down; a
  daemon started afterwards (a new MTA of the fleet) enforces the policy at
  once, from the shared store, without fetching; a daemon on its own SQLite
  cache cannot (the control).
- The database goes down under a running daemon: cached domains are still
  answered, a cold domain is still fetched and answered, the log and STATUS
  say loudly what is not persisted; when the database is back it is written.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.world import Route
from tests.world.addresses import POLICY_IP
from tests.world.daemon import DaemonProcess, free_port, world_config
from tests.world.hostile import process_tree
from tests.world.netstrings import netstring, socketmap_call
from tests.world.policy_server import sts_policy
from tests.world.postfix import private_workdir
from tests.world.tlsrpt import wait_until

KNOWN, COLD, BURST = "fleet-known.test", "fleet-cold.test", "fleet-burst.test"
README = Path(__file__).resolve().parents[2] / "README.md"


def secure(domain: str) -> str:
    return f"secure match=mx.{domain} servername=hostname"


def readme_cache_table(dsn: str) -> str:
    """README "Fleet"'s [cache] table, with this test's database in it: the example is what runs."""
    text = README.read_text()
    block = text.split("<!-- fleet-config:", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    lines = [f'dsn = "{dsn}"' if line.startswith("dsn = ") else line for line in block.splitlines()]
    assert lines[:2] == ["[cache]", 'backend = "postgresql"'], block
    return "\n".join(lines) + "\n"


@pytest.fixture
def fleet_world(dns_world, policy_server, postgres):
    base = list(dns_world.parent_records)
    records = []
    for domain in (KNOWN, COLD, BURST):
        label = domain.removesuffix(".test")
        records += [f'_mta-sts.{label} 60 IN TXT "v=STSv1; id=f1"', f"mta-sts.{label} 60 IN A {POLICY_IP}"]
        policy_server.set(f"mta-sts.{domain}", Route(body=sts_policy(f"mx.{domain}")))
    dns_world.set_parent_records(base + records)
    with private_workdir("mtasts-fleetp-") as work:
        yield work, postgres.database("fleetp")
    for domain in (KNOWN, COLD, BURST):
        policy_server.remove(f"mta-sts.{domain}")
    dns_world.set_parent_records(base)


def read_notifications(daemon: DaemonProcess) -> bool:
    """Take the watchdog pings off the notify socket (a full one would block the daemon, as an absent systemd would)."""
    daemon.wait_for("never sent", 0.05)
    return True


def stored(postgres, dsn: str, domain: str) -> bool:
    return bool(postgres.sql(dsn, "SELECT 1 FROM sts_policy WHERE domain = %s", (domain,)))


def test_a_daemon_started_after_the_policy_host_went_down_enforces_what_the_fleet_fetched(
        fleet_world, dns_world, pki, policy_server, postgres):
    work, dsn = fleet_world
    fleet_config = readme_cache_table(dsn) + world_config(dns_world, pki)
    first = DaemonProcess(work / "first", fleet_config)
    first.start()
    try:
        assert first.postmap(KNOWN) == (0, secure(KNOWN))
        wait_until(lambda: stored(postgres, dsn, KNOWN), 10, "the policy in the fleet's store")
    finally:
        first.stop()
    fetched = policy_server.hits(f"mta-sts.{KNOWN}")
    policy_server.set(f"mta-sts.{KNOWN}", Route(status=503, body=b"down"))   # the policy host goes down
    fourth = DaemonProcess(work / "fourth", fleet_config)
    alone = DaemonProcess(work / "alone", world_config(dns_world, pki))     # its own empty SQLite cache
    fourth.start()
    alone.start()
    try:
        assert fourth.postmap(KNOWN) == (0, secure(KNOWN))
        assert policy_server.hits(f"mta-sts.{KNOWN}") == fetched   # from the store: no fetch
        assert alone.postmap(KNOWN)[0] == 1                         # the control: nothing to enforce
        assert policy_server.hits(f"mta-sts.{KNOWN}") > fetched
    finally:
        fourth.stop()
        alone.stop()


def test_the_database_down_cached_and_cold_lookups_still_answered_and_written_when_it_is_back(
        fleet_world, dns_world, pki, postgres):
    work, dsn = fleet_world
    daemon = DaemonProcess(work / "d", readme_cache_table(dsn) + world_config(dns_world, pki))
    daemon.start(extra_env={"WATCHDOG_USEC": "400000"})   # STATUS with every watchdog ping
    try:
        assert daemon.postmap(KNOWN) == (0, secure(KNOWN))
        wait_until(lambda: stored(postgres, dsn, KNOWN), 10, "the policy in the store")
        postgres.stop()
        try:
            assert daemon.postmap(KNOWN) == (0, secure(KNOWN))   # from memory
            assert daemon.postmap(COLD) == (0, secure(COLD))     # fetched, applied at once
            wait_until(lambda: read_notifications(daemon) and "policy cache write failed" in daemon.log_tail(200), 10,
                       "the loud log line")
            assert daemon.wait_for("1 policies NOT persisted yet", 10), daemon.notifications[-3:]
        finally:
            postgres.start_again()
        wait_until(lambda: read_notifications(daemon) and stored(postgres, dsn, COLD), 30,
                   f"the retry after the database is back\n{daemon.log_tail()}")
        assert "policies written to the cache after earlier failures" in daemon.log_tail(200)
        assert daemon.postmap(COLD) == (0, secure(COLD))
    finally:
        daemon.stop()


def test_a_daemon_whose_database_is_unreachable_exits_75_so_systemd_tries_again(tmp_path, dns_world, pki):
    daemon = DaemonProcess(tmp_path / "d", readme_cache_table(f"host={tmp_path} dbname=none user=u password=secret")
                           + world_config(dns_world, pki))
    with pytest.raises(RuntimeError):   # never READY
        daemon.start(timeout_s=20)
    assert daemon.proc.wait(10) == 75, daemon.log_tail()
    log = daemon.log_tail()
    assert "cannot connect to PostgreSQL" in log and "secret" not in log, log


def test_concurrent_cold_lookups_of_one_domain_across_three_daemons_make_one_fetch(
        fleet_world, dns_world, pki, policy_server):
    """The fleet's fetch lock: one member fetches, the others wait for its policy in the store."""
    work, dsn = fleet_world
    policy_server.set(f"mta-sts.{BURST}", Route(body=sts_policy(f"mx.{BURST}"), delay_s=1.0))   # a slow host
    daemons = [DaemonProcess(work / f"d{n}", readme_cache_table(dsn) + world_config(dns_world, pki))
               for n in range(3)]
    try:
        for daemon in daemons:
            daemon.start()
        answers: list[bytes] = []
        clients = [threading.Thread(target=lambda d=daemon: answers.append(
            socketmap_call(d.socketmap_port, netstring(f"postfix {BURST}".encode()), timeout_s=30)))
            for daemon in daemons for _ in range(10)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert answers == [f"OK {secure(BURST)}".encode()] * 30, answers
        assert policy_server.hits(f"mta-sts.{BURST}") == 1
    finally:
        for daemon in daemons:
            daemon.stop()


def test_a_metrics_scrape_does_not_wait_for_the_database(fleet_world, dns_world, pki, postgres):
    """With PostgreSQL, the report deliveries are read in a thread: a scrape answers at once, the database hung or not."""
    work, dsn = fleet_world
    port = free_port()
    daemon = DaemonProcess(work / "m", readme_cache_table(dsn) + world_config(dns_world, pki)
                           + f'[metrics]\nlisten = "127.0.0.1:{port}"\nsnapshot_interval_s = 0.5\n')
    daemon.start()
    try:
        assert daemon.postmap(KNOWN) == (0, secure(KNOWN))
        time.sleep(1)   # the deliveries read once on a connection of the thread's own
        frozen = process_tree(postgres.server.proc.pid)   # the server and its backends hang: no answer, no error
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                started = time.monotonic()
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
                assert time.monotonic() - started < 1.0
                assert "mtasts_resolver_lookups_total" in body
                time.sleep(0.6)   # a refresh in between, stuck in its thread
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
    finally:
        daemon.stop()
