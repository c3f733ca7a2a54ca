"""One contract for every store backend: SQLite files and a real PostgreSQL server (tests/world/postgres.py).

Whatever the daemon, the spool and the reporter rely on is asserted here
once and run against each backend, so a backend cannot drift from the
others.  Backend-specific behaviour (SQLite's damage detection, PostgreSQL's
fleet semantics) has its own tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mtasts_resolver.config import CacheConfig
from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import (
    NO_RECORD,
    PENDING,
    READY,
    SENDING,
    SENT,
    DeliveryRow,
    ReportLocked,
    ReportRow,
    StoreError,
    open_store,
)

POLICY = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400")
TESTING = parse_policy(b"version: STSv1\nmode: testing\nmx: *.example.net\nmax_age: 600")
DAY = "2026-03-01"


@pytest.fixture(params=["sqlite", "postgresql"])
def cache(request, tmp_path) -> tuple[CacheConfig, Path]:
    """The [cache] settings of a fresh, empty store of each backend, and the SQLite path."""
    if request.param == "postgresql":
        return CacheConfig(backend="postgresql", dsn=request.getfixturevalue("postgres").database()), tmp_path / "x"
    return CacheConfig(), tmp_path / "cache.sqlite3"


@pytest.fixture
def store(cache):
    opened = open_store(*cache)
    yield opened
    opened.close()


def test_policies_round_trip_replace_and_delete(store, cache):
    store.save_policies([CachedPolicy("a.example", "1", POLICY, 1000.0), CachedPolicy("b.example", "7", TESTING, 1.5)])
    store.save_policy(CachedPolicy("a.example", "2", TESTING, 2000.0))
    store.delete_policy("b.example")
    store.delete_policy("never.example")   # nothing to delete is no error
    again = open_store(*cache)   # what another process (or host) sees
    try:
        assert list(again.load_policies()) == [CachedPolicy("a.example", "2", TESTING, 2000.0)]
    finally:
        again.close()


def test_one_policy_is_read_by_its_domain(store, cache):
    """What a worker or another MTA of the fleet reads when it misses in memory."""
    store.save_policy(CachedPolicy("a.example", "1", POLICY, 1000.0))
    again = open_store(*cache)
    try:
        assert again.load_policy("a.example") == CachedPolicy("a.example", "1", POLICY, 1000.0)
        assert again.load_policy("b.example") is None
    finally:
        again.close()


def test_the_fetch_lock_is_one_members_at_a_time_on_postgresql(store, cache):
    other = open_store(*cache)   # another daemon of the fleet
    try:
        assert store.try_fetch_lock("a.example")
        if cache[0].backend == "postgresql":
            assert not other.try_fetch_lock("a.example")          # held elsewhere
            assert other.try_fetch_lock("b.example")              # per domain
            store.release_fetch_lock("a.example")
            assert other.try_fetch_lock("a.example")
        else:   # one host: its workers read the store on a miss; no lock to wait for
            assert other.try_fetch_lock("a.example")
    finally:
        other.close()


def test_a_store_says_where_it_is_without_a_password(store, cache):
    assert store.where
    assert "secret" not in store.where and (cache[0].backend != "sqlite" or store.where == str(cache[1]))


def test_outcomes_of_two_writers_add_up_and_cursors_stay_each_ones(store):
    first, second = store.outcome_writer(), store.outcome_writer()
    try:
        row = (DAY, "r.example", '{"policy-type":"sts"}', "success", "", 3)
        first.add([row], {"postfix-log": "inode 1 offset 10"}, {"r.example": ('{"policy-type":"sts"}', 5.0)})
        second.add([row[:5] + (4,)], {})
        second.add([(DAY, "r.example", '{"policy-type":"sts"}', "failure", "", 2)], {"postfix-log": "inode 1 offset 99"})
    finally:
        first.close()
        second.close()
    assert store.outcome_counts(DAY, "r.example") == [('{"policy-type":"sts"}', "failure", "", 2),
                                                      ('{"policy-type":"sts"}', "success", "", 7)]
    assert store.feed_cursor("postfix-log") == "inode 1 offset 99"
    assert store.feed_cursor("exim-log") is None
    assert store.policy_in_force("r.example") == '{"policy-type":"sts"}'
    assert store.spooled_days() == [DAY]
    assert store.unreported([DAY, "2026-03-02"]) == [(DAY, "r.example")]


def _spool(store, *domains: str, day: str = DAY) -> None:
    writer = store.outcome_writer()
    try:
        writer.add([(day, domain, "{}", "success", "", 1) for domain in domains], {})
    finally:
        writer.close()


def test_one_report_decision_per_day_and_domain(store):
    _spool(store, "r.example", "s.example")
    store.add_report(ReportRow("id-1", DAY, "r.example", READY, "v=TLSRPTv1", 10.0, b"\x1f\x8b body"),
                     ["mailto:a@r.example", "https://r.example/r"], 20.0, [("ftp://x", "not mailto or https")])
    store.add_report(ReportRow("id-2", DAY, "s.example", NO_RECORD, "no _smtp._tls", 11.0, None), [], 11.0)
    with pytest.raises(StoreError):   # a second reporter deciding the same day and domain again
        store.add_report(ReportRow("id-3", DAY, "r.example", READY, "v=TLSRPTv1", 12.0, b"other"), ["mailto:b@x"], 1)
    assert store.unreported([DAY]) == []
    assert [(r.report_id, r.state, r.body) for r in store.reports()] == [("id-1", READY, b"\x1f\x8b body"),
                                                                         ("id-2", NO_RECORD, None)]
    assert [(d.destination, d.state, d.attempts) for d in store.deliveries("id-1")] == [
        ("ftp://x", "failed", 0), ("https://r.example/r", PENDING, 0), ("mailto:a@r.example", PENDING, 0)]
    assert [(a.destination, a.result) for a in store.attempts("id-1")] == [("ftp://x", "rejected")]


def test_a_delivery_is_claimed_once(store):
    _spool(store, "r.example")
    store.add_report(ReportRow("id-1", DAY, "r.example", READY, "", 10.0, b"x"), ["mailto:a@r.example"], 20.0)
    (pending,) = store.deliveries()
    attempt = DeliveryRow(pending.report_id, pending.destination, SENDING, 1, 20.0, 30.0)
    assert store.claim_delivery(attempt) is True
    assert store.claim_delivery(attempt) is False          # a second run holding the same stale row
    store.set_delivery(DeliveryRow(pending.report_id, pending.destination, SENT, 1, 20.0, 30.0))
    assert [(d.state, d.attempts, d.first_attempt_at) for d in store.deliveries()] == [(SENT, 1, 30.0)]


def test_prune_drops_old_days_only(store):
    _spool(store, "old.example", day="2026-01-01")
    _spool(store, "new.example")
    store.add_report(ReportRow("id-old", "2026-01-01", "old.example", READY, "", 10.0, b"x"), ["mailto:a@x"], 20.0)
    assert store.prune("2026-02-01") >= 3   # the outcome, the report and its delivery
    assert store.spooled_days() == [DAY] and store.reports() == [] and store.deliveries() == []


def test_the_report_lock_is_exclusive_and_taken_over_when_its_holder_dies(store, cache):
    other = open_store(*cache)
    with store.report_lock(), pytest.raises(ReportLocked), other.report_lock():
        pass
    other.close()
    holder = _python(HOLD_LOCK, cache)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ReportLocked), store.report_lock():
            pass
        holder.send_signal(signal.SIGKILL)   # a reporter killed mid-run
        holder.wait(10)
        with store.report_lock():   # the next run, on this host or another, takes over
            pass
    finally:
        holder.kill()
        holder.wait()


ROOT = Path(__file__).resolve().parents[2]
HOLD_LOCK = """
import sys, time
from pathlib import Path
from mtasts_resolver.config import CacheConfig
from mtasts_resolver.store import open_store
store = open_store(eval(sys.argv[1]), Path(sys.argv[2]))
with store.report_lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_stores_opened_at_once_agree_on_one_schema(cache):
    """Daemons (or workers) starting together on a fresh store: every one opens, none applies a step twice."""
    starting = [_python(OPEN, cache) for _ in range(6)]
    outputs = [proc.communicate(timeout=60) for proc in starting]
    assert [proc.returncode for proc in starting] == [0] * 6, outputs
    store = open_store(*cache)
    try:
        store.save_policy(CachedPolicy("a.example", "1", POLICY, 1.0))
        assert [p.domain for p in store.load_policies()] == ["a.example"]
    finally:
        store.close()


OPEN = """
import sys
from pathlib import Path
from mtasts_resolver.config import CacheConfig
from mtasts_resolver.store import open_store
open_store(eval(sys.argv[1]), Path(sys.argv[2])).close()
"""


def _python(script: str, cache: tuple[CacheConfig, Path]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, repr(cache[0]), str(cache[1])], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
