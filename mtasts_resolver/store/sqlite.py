"""SQLite store: WAL journal, versioned schema; the policy cache here, TLS-RPT in sqlite_tlsrpt.py.

Writes are rare (a policy changes) and small, so they run synchronously on
the reactor thread; ``synchronous=FULL`` makes each committed policy survive
power loss, which is the point of a persistent MTA-STS cache.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mtasts_resolver.policy.model import CachedPolicy, StsPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import StoreError
from mtasts_resolver.store.sqlite_tlsrpt import TlsrptTables, connect

LOAD_CHUNK_ROWS = 1000
SCHEMA_VERSION = 2


@contextmanager
def _opening_lock(path: Path) -> Iterator[None]:
    """One process at a time switches a new file to WAL and applies schema steps.

    The workers of a pool open the store at the same moment; SQLite answers
    "database is locked" at once, without waiting, when two connections
    would deadlock changing the journal mode of a fresh file.
    """
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class SqliteStore(TlsrptTables):
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        try:
            if str(path) == ":memory:":
                self._db = connect(path)
                self._migrate()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                with _opening_lock(path):
                    self._db = connect(path)
                    self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open policy cache {path}: {exc}") from exc

    def _migrate(self) -> None:
        """Create or upgrade the schema stepwise, each step in one transaction.

        The version is read inside each step's write transaction: processes
        of a worker pool open the store at the same moment, and only the
        first may apply a step.
        """
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        while True:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT version FROM schema_version").fetchone()
                current = row[0] if row else 0
                if current > SCHEMA_VERSION:
                    raise StoreError(f"cache schema version {current} is newer than this program ({SCHEMA_VERSION})")
                if current == SCHEMA_VERSION:
                    self._db.execute("COMMIT")
                    return
                version = current + 1
                script = resources.files("mtasts_resolver.store").joinpath(f"schema/sqlite-{version}.sql").read_text()
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("DELETE FROM schema_version")
                self._db.execute("INSERT INTO schema_version VALUES (?)", (version,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def load_policies(self) -> Iterator[CachedPolicy]:
        """Rows a chunk at a time: holding all 100,000 raw rows next to their
        parsed copies would leave tens of MB of freed memory in the process."""
        try:
            cursor = self._db.execute("SELECT domain, txt_id, policy, fetched_at FROM sts_policy")
            while rows := cursor.fetchmany(LOAD_CHUNK_ROWS):
                for domain, txt_id, text, fetched_at in rows:
                    policy = parse_policy(text.encode("utf-8"))
                    if isinstance(policy, StsPolicy):  # a row this program wrote always parses
                        yield CachedPolicy(domain, txt_id, policy, fetched_at)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read policy cache: {exc}") from exc

    def save_policy(self, cached: CachedPolicy) -> None:
        self.save_policies([cached])

    def save_policies(self, policies: Iterable[CachedPolicy]) -> None:
        """Several policies in one transaction (one fsync): imports and benchmarks."""
        rows = [(p.domain, p.txt_id, "\n".join(p.policy.lines), p.fetched_at) for p in policies]
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO sts_policy (domain, txt_id, policy, fetched_at) VALUES (?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            domains = ", ".join(row[0] for row in rows[:3]) + (" ..." if len(rows) > 3 else "")
            raise StoreError(f"cannot save policy of {domains}: {exc}") from exc

    def delete_policy(self, domain: str) -> None:
        try:
            with self._db:
                self._db.execute("DELETE FROM sts_policy WHERE domain = ?", (domain,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete policy of {domain}: {exc}") from exc

    def close(self) -> None:
        self._db.close()
