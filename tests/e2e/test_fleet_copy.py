"""``mtasts-resolver copy-to-postgresql``: two hosts' SQLite stores copied into one real PostgreSQL store."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

from mtasts_resolver.config import CacheConfig
from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import READY, SENDING, SENT, AttemptRow, ReportRow
from mtasts_resolver.store.postgresql import PostgresStore
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world.daemon import run_cli

POLICY = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400")
DAY = "2026-03-01"
STS = '{"policy-type":"sts"}'


def host_file(path: Path, report_id: str, sessions: int, cursor: str) -> Path:
    """A host's SQLite store: two policies, a day's counters, a feed cursor and a report sent once."""
    store = SqliteStore(path)
    store.save_policies([CachedPolicy("a.example", "1", POLICY, 1000.0), CachedPolicy("b.example", "1", POLICY, 1.0)])
    writer = store.outcome_writer()
    writer.add([(DAY, "r.example", STS, "success", "", sessions)], {"postfix-log": cursor}, {"r.example": (STS, 5.0)})
    writer.close()
    store.add_report(ReportRow(report_id, DAY, "r.example", READY, "v=TLSRPTv1", 10.0, b"gzip"), ["mailto:t@r.example"],
                     20.0)
    (delivery,) = store.deliveries()
    claimed = replace(delivery, state=SENDING, attempts=1, first_attempt_at=30.0)
    assert store.claim_delivery(claimed)
    store.set_delivery(replace(claimed, state=SENT), AttemptRow(report_id, "mailto:t@r.example", 31.0, SENT, "250 ok"))
    store.close()
    return path


def test_two_hosts_copied_into_the_fleet_store_once_each(tmp_path, postgres):
    cache = CacheConfig(backend="postgresql", dsn=postgres.database())
    fleet = PostgresStore(cache)
    fleet.save_policy(CachedPolicy("a.example", "2", POLICY, 2000.0))   # fetched later by a fleet daemon
    writer = fleet.outcome_writer()
    writer.add([(DAY, "r.example", STS, "success", "", 5)], {})
    writer.close()
    first = host_file(tmp_path / "a.sqlite3", "id-a", 3, "inode 1 offset 10")
    second = host_file(tmp_path / "b.sqlite3", "id-b", 1, "inode 2 offset 20")
    config = tmp_path / "config.toml"
    config.write_text(f'[cache]\nbackend = "postgresql"\ndsn = "{cache.dsn}"\npath = "{first}"\n')

    copied = run_cli("-c", str(config), "copy-to-postgresql")
    assert copied.returncode == 0, copied
    assert "sts_policy: 2 rows" in copied.stdout and "tlsrpt_report: 1 rows" in copied.stdout
    assert "password" not in copied.stdout + copied.stderr
    again = run_cli("-c", str(config), "copy-to-postgresql")
    assert again.returncode == 0 and "nothing copied" in again.stdout and "was copied on" in again.stdout, again
    other = run_cli("-c", str(config), "copy-to-postgresql", "--from", str(second))
    assert other.returncode == 0 and "1 report decisions left out" in other.stdout, other

    policies = {p.domain: p for p in fleet.load_policies()}
    assert policies["a.example"].fetched_at == 2000.0 and policies["b.example"].fetched_at == 1.0
    assert fleet.outcome_counts(DAY, "r.example") == [(STS, "success", "", 5 + 3 + 1)]   # each host's sessions once
    assert fleet.feed_cursor("postfix-log") == "inode 2 offset 20"   # this host's cursor (both files are this host's)
    assert PostgresStore(cache, host="elsewhere").feed_cursor("postfix-log") is None
    assert [(r.report_id, r.body) for r in fleet.reports()] == [("id-a", b"gzip")]
    assert [(d.state, d.attempts, d.first_attempt_at) for d in fleet.deliveries("id-a")] == [(SENT, 1, 30.0)]
    assert [(a.result, a.detail) for a in fleet.attempts("id-a")] == [(SENT, "250 ok")]
    assert fleet.policy_in_force("r.example") == STS
    assert socket.gethostname() in again.stdout
    fleet.close()


def test_copy_needs_postgresql_configured_and_a_file(tmp_path, postgres):
    assert run_cli("copy-to-postgresql").returncode == 64
    config = tmp_path / "config.toml"
    config.write_text(f'[cache]\nbackend = "postgresql"\ndsn = "{postgres.database()}"\npath = "{tmp_path / "no"}"\n')
    missing = run_cli("-c", str(config), "copy-to-postgresql")
    assert missing.returncode == 66 and "no SQLite cache" in missing.stderr, missing
