"""Prometheus metrics of a running daemon: known lookups, then a scrape with exactly their counts.

One daemon, DANE off (so every count below is MTA-STS's), at most one
resolution at a time: a domain whose policy host is slow holds it while
another new domain is answered TEMP (the limit, counted as a limit hit).
A pool of two workers then shows that one scrape sums both.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world import Route
from tests.world.addresses import POLICY_IP
from tests.world.daemon import DaemonProcess, free_port, world_config
from tests.world.netstrings import netstring, socketmap_call
from tests.world.policy_server import sts_policy

HTTP_TIMEOUT_S = 1.5
SNAPSHOT_INTERVAL_S = 0.2


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def ask(proc: DaemonProcess, domain: str) -> bytes:
    return socketmap_call(proc.socketmap_port, netstring(b"postfix " + domain.encode()))


def metrics_table(port: int) -> str:
    return f'[metrics]\nlisten = "127.0.0.1:{port}"\nsnapshot_interval_s = {SNAPSHOT_INTERVAL_S}\n'


@pytest.fixture(scope="module")
def metrics_world(dns_world, policy_server):
    before = dns_world.parent_records
    dns_world.set_parent_records([*before,
                                  '_mta-sts.m-enforce 60 IN TXT "v=STSv1; id=1"', f"mta-sts.m-enforce 60 IN A {POLICY_IP}",
                                  '_mta-sts.m-slow 60 IN TXT "v=STSv1; id=1"', f"mta-sts.m-slow 60 IN A {POLICY_IP}"])
    policy_server.set("mta-sts.m-enforce.test", Route(body=sts_policy("mx.m-enforce.test")))
    policy_server.set("mta-sts.m-slow.test", Route(body=sts_policy("mx.m-slow.test"), delay_s=HTTP_TIMEOUT_S + 2))
    yield
    dns_world.set_parent_records(before)


def test_a_scrape_counts_known_lookups_exactly(metrics_world, dns_world, pki, tmp_path):
    port = free_port()
    proc = DaemonProcess(tmp_path, world_config(dns_world, pki, http_timeout_s=HTTP_TIMEOUT_S,
                                                max_concurrent_resolutions=1)
                         + "[dane]\nenabled = false\n" + metrics_table(port))
    proc.start()
    try:
        assert ask(proc, "m-enforce.test") == b"OK secure match=mx.m-enforce.test servername=hostname"   # cold
        for _ in range(2):
            assert ask(proc, "m-enforce.test").startswith(b"OK ")                                   # hot
        assert ask(proc, "m-none.test") == b"NOTFOUND "                                             # cold, no TXT
        slow: list[bytes] = []
        holder = threading.Thread(target=lambda: slow.append(ask(proc, "m-slow.test")))
        holder.start()
        time.sleep(0.5)   # m-slow's resolution now holds the only slot
        assert ask(proc, "m-busy.test").startswith(b"TEMP ")                                        # hot, the limit
        holder.join(timeout=HTTP_TIMEOUT_S + 10)
        assert slow == [b"NOTFOUND "]                                                               # cold, fetch failed
        time.sleep(0.5)   # the spool commits its outcome within tlsrpt.spool_flush_interval_s (0.2 s)
        samples = scrape(port)
    finally:
        proc.stop()

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    lookups = {key: count for key, count in samples.items() if key[0] == "mtasts_resolver_lookups_total"}
    assert lookups == {
        ("mtasts_resolver_lookups_total", (("map", "postfix"), ("path", "cold"), ("result", "found"))): 1,
        ("mtasts_resolver_lookups_total", (("map", "postfix"), ("path", "hot"), ("result", "found"))): 2,
        ("mtasts_resolver_lookups_total", (("map", "postfix"), ("path", "cold"), ("result", "notfound"))): 2,
        ("mtasts_resolver_lookups_total", (("map", "postfix"), ("path", "hot"), ("result", "temp"))): 1,
    }, proc.log_tail()
    assert value("mtasts_resolver_resolutions_total", kind="sts", outcome="fetched") == 1
    assert value("mtasts_resolver_resolutions_total", kind="sts", outcome="none") == 1
    assert value("mtasts_resolver_resolutions_total", kind="sts", outcome="failed") == 1
    assert value("mtasts_resolver_resolutions_total", kind="dane", outcome="disabled") is None   # DANE off
    assert value("mtasts_resolver_policy_failures_total", result_type="sts-policy-fetch-error") == 1
    assert value("mtasts_resolver_limit_hits_total", limit="mta_sts.max_concurrent_resolutions") == 1
    assert value("mtasts_resolver_cached_domains", worker="0") == 3   # m-busy was never resolved
    assert value("mtasts_resolver_client_connections", worker="0") == 0
    assert value("mtasts_resolver_dane_validating", worker="0") is None
    assert value("mtasts_resolver_spool_committed_sessions_total") == 1   # m-slow's failure
    assert value("mtasts_resolver_spool_pending_sessions", worker="0") == 0


def test_one_scrape_sums_every_worker(tmp_path):
    store = SqliteStore(tmp_path / "state" / "cache.sqlite3")
    store.save_policy(CachedPolicy("pool.example", "1", parse_policy(sts_policy("mx.pool.example")), time.time()))
    store.close()
    port = free_port()
    # DNS points at a closed port: every answer comes from the loaded cache, at once.
    proc = DaemonProcess(tmp_path, '[dns]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout_s = 0.5\n'
                                   "[dane]\nenabled = false\n" + metrics_table(port))
    proc.config_path.write_text(proc.config_path.read_text().replace('log_level = "debug"',
                                                                     'log_level = "debug"\nworkers = 2'))
    proc.start()
    try:
        lookups = 40
        for _ in range(lookups):   # a new connection each: the kernel spreads them over both workers
            assert ask(proc, "pool.example").startswith(b"OK ")
        time.sleep(SNAPSHOT_INTERVAL_S * 3)   # worker 1's last snapshot is at most one interval old
        samples = scrape(port)
    finally:
        proc.stop()
    assert samples[("mtasts_resolver_lookups_total", (("map", "postfix"), ("path", "hot"), ("result", "found")))] \
        == lookups
    assert samples[("mtasts_resolver_cached_domains", (("worker", "0"),))] == 1
    assert samples[("mtasts_resolver_cached_domains", (("worker", "1"),))] == 1
