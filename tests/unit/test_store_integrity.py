"""The cache's integrity on real SQLite files: which rows load, what a damaged file gives, salvage, retries."""

from __future__ import annotations

import queue
import sqlite3
import threading
import time

import pytest
from twisted.internet.task import Clock

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import SALVAGE_COMMAND, DamagedCache, StoreError
from mtasts_resolver.store.retrying import RETRY_FIRST_S, RetryingPolicyStore
from mtasts_resolver.store.salvage import salvage
from mtasts_resolver.store.sqlite import SqliteStore, checksum, policy_from_row

POLICY = b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400"


def cached(domain: str, fetched_at: float = 1000.0) -> CachedPolicy:
    return CachedPolicy(domain, "1", parse_policy(POLICY), fetched_at)


@pytest.mark.parametrize("row,why", [
    ((b"a.example", b"1", POLICY, 1000.0), None),
    ((b"a.example", b"1", POLICY, 1000), None),                       # an integer timestamp is a number
    ((b"a.example", b"1", POLICY.replace(b"mx.", b"\xff"), 1000.0), "not UTF-8 text"),
    ((b"a.\xff", b"1", POLICY, 1000.0), "not UTF-8 text"),
    ((b"a.example", None, POLICY, 1000.0), "not UTF-8 text"),          # NULL where text belongs
    ((b"a.example", b"1", POLICY, "yesterday"), "fetched_at is not a number: 'yesterday'"),
    ((b"a.example", b"1", POLICY, None), "fetched_at is not a number: None"),
    ((b"a.example", b"1", POLICY.replace(b"enforce", b"enforcX"), 1000.0), "the stored policy does not parse"),
    ((b"a.example", b"1", b"", 1000.0), "the stored policy does not parse"),
])
def test_policy_from_row(row, why):
    loaded = policy_from_row(*row)   # no checksum: a row of schema version 2
    if why is None:
        assert loaded == CachedPolicy("a.example", "1", parse_policy(POLICY), 1000.0)
    else:
        assert isinstance(loaded, tuple) and why in loaded[1]


def filled(tmp_path, domains=("a.example", "b.example", "c.example")):
    path = tmp_path / "cache.sqlite3"
    store = SqliteStore(path)
    store.save_policies(cached(domain) for domain in domains)
    store.close()
    return path


def test_every_bad_row_is_named_and_the_good_ones_still_load(tmp_path):
    path = filled(tmp_path)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE sts_policy SET fetched_at = 'x' WHERE domain = 'a.example'")
        db.execute("UPDATE sts_policy SET policy = CAST(X'ff' AS TEXT) WHERE domain = 'c.example'")
    db.close()
    store = SqliteStore(path)
    loaded = []
    with pytest.raises(DamagedCache) as raised:
        for policy in store.load_policies():
            loaded.append(policy.domain)
    store.close()
    assert loaded == ["b.example"]
    assert [domain for domain, _ in raised.value.problems] == ["a.example", "c.example"]
    assert SALVAGE_COMMAND in str(raised.value)


@pytest.mark.parametrize("damage,finding", [
    (lambda data: b"", "it is empty (0 bytes)"),
    (lambda data: b"junk" * 2000, "file is not a database"),
    (lambda data: data[:4096], "malformed"),
])
def test_a_damaged_file_is_refused_at_open(tmp_path, damage, finding):
    path = filled(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DamagedCache) as raised:
        SqliteStore(path)
    assert finding in str(raised.value)


def test_salvage_copies_the_readable_rows_and_keeps_the_damaged_file(tmp_path):
    path = filled(tmp_path)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE sts_policy SET fetched_at = 'x' WHERE domain = 'b.example'")
        db.execute("INSERT INTO tlsrpt_cursor (feed, position) VALUES ('postfix-log', '42')")
    db.close()
    result = salvage(path, "STAMP")
    assert result.policies == 2 and result.lost[0][0] == "b.example"
    assert result.tables["tlsrpt_cursor"] == 1
    assert result.damaged_copy == tmp_path / "cache.sqlite3.damaged-STAMP" and result.damaged_copy.exists()
    store = SqliteStore(path)
    assert sorted(p.domain for p in store.load_policies()) == ["a.example", "c.example"]
    assert store.feed_cursor("postfix-log") == "42"
    store.close()
    assert not list(tmp_path.glob("*salvage-tmp*"))


@pytest.mark.parametrize("damage,lost", [
    (lambda data: b"", "no such table"),
    (lambda data: b"junk" * 2000, "file is not a database"),
])
def test_salvage_of_a_file_with_nothing_readable_gives_an_empty_cache(tmp_path, damage, lost):
    path = filled(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    result = salvage(path, "STAMP")
    assert result.policies == 0 and any(lost in why for _, why in result.lost), result.lost
    store = SqliteStore(path)
    assert list(store.load_policies()) == []
    store.close()


GOOD_SUM = checksum("a.example", "1", POLICY.decode(), 1000.0).encode()


@pytest.mark.parametrize("row,loads", [
    ((b"a.example", b"1", POLICY, 1000.0, GOOD_SUM), True),
    ((b"a.example", b"1", POLICY, 1000.0, None), True),                             # schema 2: none yet
    ((b"a.example", b"1", POLICY.replace(b"mx.example", b"mx.exbmple"), 1000.0, GOOD_SUM), False),  # still parses
    ((b"a.example", b"2", POLICY, 1000.0, GOOD_SUM), False),
    ((b"a.example", b"1", POLICY, 1000.5, GOOD_SUM), False),
    ((b"a.example", b"1", POLICY, 1000.0, b"\xff" * 32), False),
])
def test_the_checksum_catches_a_change_that_still_parses(row, loads):
    loaded = policy_from_row(*row)
    assert isinstance(loaded, CachedPolicy) is loads
    if not loads:
        assert loaded[1] == "the row does not match its checksum (changed on disk)"


def test_a_schema_2_file_is_upgraded_and_salvaged_without_checksums(tmp_path):
    path = filled(tmp_path)
    db = sqlite3.connect(path)
    with db:
        db.execute("ALTER TABLE sts_policy DROP COLUMN checksum")
        db.execute("UPDATE schema_version SET version = 2")
    db.close()
    result = salvage(path, "STAMP")
    assert result.policies == 3 and result.lost == []
    assert set(result.tables) == {"tlsrpt_outcome", "tlsrpt_cursor", "tlsrpt_report", "tlsrpt_delivery",
                                  "tlsrpt_attempt", "tlsrpt_policy"}   # schema 4's table too
    path.unlink()
    result.damaged_copy.rename(path)
    store = SqliteStore(path)                 # upgraded to version 3: its rows load, unchecked
    assert sorted(p.domain for p in store.load_policies()) == ["a.example", "b.example", "c.example"]
    store.close()


def test_salvage_without_a_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        salvage(tmp_path / "cache.sqlite3", "STAMP")


class Full:
    """SQLite's own "database or disk is full": a page budget on the real connection."""

    def __init__(self, store: SqliteStore) -> None:
        self._db = store._db

    def __enter__(self) -> None:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {pages}")

    def __exit__(self, *exc: object) -> None:
        self._db.execute("PRAGMA max_page_count = 1073741823")


def test_a_write_that_failed_is_retried_until_it_lands(tmp_path):
    clock = ThreadedClock()
    inner = SqliteStore(tmp_path / "cache.sqlite3")
    store = RetryingPolicyStore(inner, clock)
    with Full(store._writer):                 # the writer thread's own connection
        store.save_policies([cached(f"d{i}.example") for i in range(400)])
        clock.deliver()                       # it failed, in the thread
        assert store.waiting == 400
        clock.advance(RETRY_FIRST_S)          # still full: waits on, with a longer back-off
        clock.deliver()
        assert store.waiting == 400
    clock.advance(RETRY_FIRST_S * 2)
    clock.deliver()
    assert store.waiting == 0
    assert len(list(inner.load_policies())) == 400
    store.close()


def test_a_newer_policy_replaces_a_waiting_one_and_close_tries_once_more(tmp_path):
    clock = ThreadedClock()
    inner = SqliteStore(tmp_path / "cache.sqlite3")
    store = RetryingPolicyStore(inner, clock)
    with Full(store._writer):
        store.save_policies([cached(f"d{i}.example") for i in range(400)])
        store.save_policy(cached("d1.example", fetched_at=2000.0))   # the first batch is in flight: waits
        clock.deliver()
        assert store.waiting == 400
    store.close()                             # space is back: the last attempt lands
    reopened = SqliteStore(tmp_path / "cache.sqlite3")
    saved = {p.domain: p for p in reopened.load_policies()}
    assert len(saved) == 400 and saved["d1.example"].fetched_at == 2000.0
    reopened.close()


def test_the_reactor_thread_never_writes_sqlite(tmp_path):
    clock = ThreadedClock()
    inner = SqliteStore(tmp_path / "cache.sqlite3")
    store = RetryingPolicyStore(inner, clock)
    threads: set[str] = set()
    write = store._writer.save_policies
    store._writer.save_policies = lambda policies: (threads.add(threading.current_thread().name), write(policies))
    store.save_policy(cached("a.example"))
    clock.deliver()
    assert threads == {"PoolThread-policy-store-0"} and [p.domain for p in inner.load_policies()] == ["a.example"]
    store.close()


class Failing:
    """A store whose writes all fail; its deletes work."""

    where, remote = "failing", False

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def policy_writer(self):
        return self

    def save_policies(self, policies):
        raise StoreError("disk full")

    def delete_policy(self, domain):
        self.deleted.append(domain)

    def close(self):
        pass


@pytest.mark.parametrize("delete_while_in_flight", [False, True])
def test_deleting_a_waiting_policy_drops_it(delete_while_in_flight):
    clock, failing = ThreadedClock(), Failing()
    store = RetryingPolicyStore(failing, clock)
    store.save_policy(cached("a.example", time.time()))
    if not delete_while_in_flight:
        clock.deliver()                       # the write failed: a.example waits for its retry
    store.delete_policy("a.example")          # a failed write in flight must not bring it back either
    for _ in range(1 if not delete_while_in_flight else 2):
        clock.deliver()
    assert store.waiting == 0 and failing.deleted == ["a.example"]
    store.close()


def test_salvage_of_an_older_schema_skips_the_tables_it_never_had(tmp_path):
    path = filled(tmp_path)
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP TABLE tlsrpt_policy")
    db.close()
    result = salvage(path, "STAMP")
    assert result.policies == 3 and result.lost == [] and "tlsrpt_policy" not in result.tables


class ThreadedClock(Clock):
    """A Clock that also takes results back from threads, run when the test says (``deliver``)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue = queue.Queue()

    def callFromThread(self, call, *args, **kwargs) -> None:
        self.from_threads.put((call, args, kwargs))

    def deliver(self) -> None:
        call, args, kwargs = self.from_threads.get(timeout=5)
        call(*args, **kwargs)


class NetworkStore:
    """A remote store whose writes wait until the test opens ``gate``; ``failures`` writes fail first."""

    where, remote = "db.example", True

    def policy_writer(self):
        return self

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.failures = 0
        self.written: list[list[str]] = []
        self.threads: set[str] = set()

    def save_policies(self, policies):
        self.gate.wait(5)
        self.threads.add(threading.current_thread().name)
        if self.failures:
            self.failures -= 1
            raise StoreError("connection refused")
        self.written.append([policy.domain for policy in policies])

    def delete_policy(self, domain):
        self.written.append([f"-{domain}"])

    def close(self):
        pass


def test_a_remote_store_is_written_from_its_thread_in_order_and_retried():
    clock, remote = ThreadedClock(), NetworkStore()
    store = RetryingPolicyStore(remote, clock)
    try:
        store.save_policy(cached("a.example"))      # returns at once: the write waits on the gate in its thread
        store.save_policy(cached("b.example"))      # in flight meanwhile: goes in the next batch
        store.save_policy(cached("a.example", fetched_at=2000.0))
        assert store.waiting == 2 and remote.written == []
        remote.gate.set()
        clock.deliver()
        clock.deliver()
        assert remote.written == [["a.example"], ["b.example", "a.example"]] and store.waiting == 0
        assert remote.threads == {"PoolThread-policy-store-0"}   # one writer thread, never the reactor's
        remote.failures = 1
        store.save_policy(cached("c.example"))
        clock.deliver()                               # the database is down: kept, retried
        assert store.waiting == 1
        store.delete_policy("a.example")              # queued behind nothing: runs in the same thread, in order
        clock.advance(RETRY_FIRST_S)
        clock.deliver()
        clock.deliver()
        assert remote.written[2:] == [["-a.example"], ["c.example"]] and store.waiting == 0
    finally:
        store.close()


def test_a_save_tells_when_its_first_attempt_is_over():
    """The lookup service answers after it: landed or failed, never waiting for a retry."""
    clock, remote = ThreadedClock(), NetworkStore()
    store = RetryingPolicyStore(remote, clock)
    try:
        first, second = [], []
        store.save_policy(cached("a.example")).addCallback(first.append)
        store.save_policy(cached("b.example")).addCallback(second.append)   # waits for the next batch
        assert first == [] and second == []
        remote.gate.set()
        clock.deliver()
        assert first == [None] and second == []
        clock.deliver()
        assert second == [None]
        remote.failures = 1
        third = []
        store.save_policy(cached("c.example")).addCallback(third.append)
        clock.deliver()                               # failed: over all the same, retried later
        assert third == [None] and store.waiting == 1
        assert store.save_policy(cached("d.example")).called   # while failing: at once
    finally:
        store.close()
