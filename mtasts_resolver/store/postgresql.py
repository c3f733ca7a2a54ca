"""PostgreSQL store: one policy cache and one TLS-RPT spool for a fleet of MTAs.

Every daemon of the fleet, and every ``mtasts-resolver report`` run on any
host, opens the same database.  The interface is the synchronous one of
every store; the daemon never calls it on the reactor thread after start-up
(:mod:`mtasts_resolver.store.retrying` runs policy writes in threads, the
spool has its writer thread), so a slow or absent database server never
stalls a lookup: the hot path is in memory.

Driver: psycopg 3 (Debian's python3-psycopg) through plain threads, one
connection per thread.  The daemon runs on Twisted's asyncio reactor, so
psycopg's AsyncConnection was the alternative; measured on this project's
test machine (2 cores, PostgreSQL 15 on a UNIX socket, psycopg 3.1.7, 2,000
single-row upserts each in its own transaction, two runs, ``python
bench/store_driver.py DSN``): through a thread, 0.39-0.58 ms per write and
0.05-0.10 ms of it on the reactor thread; AsyncConnection, 0.30-0.67 ms per
write and 0.24-0.47 ms on the reactor thread (its protocol code runs
there).  The wall time is the same; the reactor thread, which also answers
every lookup, pays four to five times less with threads.  And the store
stays one synchronous implementation for the daemon, the reporter and the
copy command alike.

Several daemons start at once: schema steps run under a transaction-level
advisory lock (:data:`MIGRATION_LOCK`), read the version inside it, and only
the first applies a step.  The report lock is a session-level advisory lock
(:data:`REPORT_LOCK`) on a connection of its own: it is released when the
run ends or its process dies, wherever that process ran.

The DSN is libpq's (string or URI).  The password is best kept out of it
(``passfile=``, PGPASSFILE or PGPASSWORD: libpq reads them itself);
:func:`redacted` is what log lines and errors show of the DSN.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from importlib import resources

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mtasts_resolver.config import CacheConfig
from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.store import (
    DamagedCache,
    OutcomeRow,
    ReportLocked,
    StoreError,
    Unreachable,
)
from mtasts_resolver.store.sqlite import loaded_policy, policy_from_row, policy_rows
from mtasts_resolver.store.tlsrpt_sql import Statement, TlsrptTables, outcome_rows

SCHEMA_VERSION = 1
#: Advisory lock keys (class, object): the class is this program's, "MTST" in ASCII.
LOCK_CLASS = 0x4D545354
MIGRATION_LOCK = (LOCK_CLASS, 1)
REPORT_LOCK = (LOCK_CLASS, 2)
LOAD_CHUNK_ROWS = 1000
RECONNECT_AFTER_S = 2.0


def redacted(dsn: str) -> str:
    """The DSN as log lines show it: every parameter but the password (or the DSN's own words if it does not parse)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(a DSN libpq cannot parse)"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def _fetch_lock_key(domain: str) -> int:
    """The advisory lock of one domain's fetch: 64 bits of a hash, in a space of this program's own."""
    return int.from_bytes(hashlib.blake2b(b"mtasts-resolver fetch " + domain.encode(), digest_size=8).digest(),
                          "big", signed=True)


def placeholders(sql: str) -> str:
    """``?`` (the SQL of both backends) as psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connections:
    """One autocommit connection per thread, opened when first needed and again after it broke.

    After a failed connection attempt every call fails at once for
    :data:`RECONNECT_AFTER_S`: a database that is down must not cost each
    cold lookup (and each retry) a whole ``connect_timeout_s``.
    ``tcp_user_timeout`` bounds a call on a connection whose network went
    away (no reset ever comes) as ``statement_timeout`` bounds a slow one.
    """

    def __init__(self, cache: CacheConfig) -> None:
        self._dsn = cache.dsn
        self._connect_timeout_s = cache.connect_timeout_s
        timeout_ms = int(cache.statement_timeout_s * 1000)
        self._options = {"options": f"-c statement_timeout={timeout_ms}", "tcp_user_timeout": timeout_ms}
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._guard = threading.Lock()
        self._down: tuple[float, str] | None = None   # (monotonic time of the next attempt, why the last failed)
        self.where = redacted(cache.dsn)

    def open(self) -> psycopg.Connection:
        with self._guard:
            if self._down is not None and time.monotonic() < self._down[0]:
                raise Unreachable(f"PostgreSQL {self.where} is unreachable ({self._down[1]}); next attempt in "
                                  f"{self._down[0] - time.monotonic():.1f} s")
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout_s,
                                   application_name="mtasts-resolver", **self._options)
        except psycopg.Error as exc:
            with self._guard:
                self._down = (time.monotonic() + RECONNECT_AFTER_S, _why(exc))
            raise Unreachable(f"cannot connect to PostgreSQL {self.where}: {_why(exc)}") from None
        with self._guard:
            self._down = None
            self._all.append(conn)
        return conn

    def get(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._forget(conn)
            conn = self._local.conn = self.open()
        return conn

    def _forget(self, conn: psycopg.Connection) -> None:
        conn.close()
        with self._guard:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        with self._guard:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()


def _why(exc: psycopg.Error) -> str:
    return str(exc).strip().replace("\n", "; ") or type(exc).__name__


@contextmanager
def _transaction(connections: _Connections, what: str) -> Iterator[psycopg.Cursor]:
    """A cursor in one transaction of this thread's connection; a failure is a StoreError saying ``what`` failed."""
    try:
        conn = connections.get()
        with conn.transaction(), conn.cursor() as cursor:
            yield cursor
    except psycopg.Error as exc:
        raise StoreError(f"cannot {what} at {connections.where}: {_why(exc)}") from None


UPSERT_POLICY = ("INSERT INTO sts_policy (domain, txt_id, policy, fetched_at, checksum) VALUES (%s, %s, %s, %s, %s) "
                 "ON CONFLICT (domain) DO UPDATE SET txt_id = excluded.txt_id, policy = excluded.policy, "
                 "fetched_at = excluded.fetched_at, checksum = excluded.checksum "
                 "WHERE sts_policy.fetched_at <= excluded.fetched_at")


class PostgresOutcomeWriter:
    """The spool's writer: its own connection, used by its writer thread only."""

    def __init__(self, connections: _Connections, cursor_key) -> None:
        self._connections = connections
        self._cursor_key = cursor_key

    def add(self, rows: Iterable[OutcomeRow], cursors: Mapping[str, str],
            policies: Mapping[str, tuple[str, float]] | None = None) -> None:
        with _transaction(self._connections, "spool TLS-RPT outcomes") as cursor:
            for sql, many in outcome_rows(rows, cursors, policies, self._cursor_key):
                if many:
                    cursor.executemany(placeholders(sql), many)

    def close(self) -> None:
        self._connections.close()


class PostgresStore(TlsrptTables):
    attempt_order = "seq"
    remote = True

    def __init__(self, cache: CacheConfig, host: str | None = None) -> None:
        self._cache = cache
        self._connections = _Connections(cache)
        self.where = self._connections.where
        self._host = host or socket.gethostname()
        self._migrate()

    def _migrate(self) -> None:
        """Create or upgrade the schema, one step per transaction, under the migration lock."""
        conn = self._connections.get()
        try:
            while True:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
                    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                    row = conn.execute("SELECT version FROM schema_version").fetchone()
                    current = row[0] if row else 0
                    if current > SCHEMA_VERSION:
                        raise StoreError(f"PostgreSQL schema version {current} at {self.where} is newer than this "
                                         f"program ({SCHEMA_VERSION})")
                    if current == SCHEMA_VERSION:
                        return
                    version = current + 1
                    script = resources.files("mtasts_resolver.store").joinpath(f"schema/postgresql-{version}.sql")
                    conn.execute(script.read_text())
                    conn.execute("DELETE FROM schema_version")
                    conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        except psycopg.Error as exc:
            raise StoreError(f"cannot set up the schema at {self.where}: {_why(exc)}") from None

    # -- the policy cache

    def load_policies(self) -> Iterator[CachedPolicy]:
        damaged: list[tuple[str, str]] = []
        try:
            with self._connections.get().cursor() as cursor:
                cursor.execute("SELECT domain, txt_id, policy, fetched_at, checksum FROM sts_policy")
                while rows := cursor.fetchmany(LOAD_CHUNK_ROWS):
                    for domain, txt_id, text, fetched_at, stored in rows:
                        loaded = policy_from_row(domain.encode(), txt_id.encode(), text.encode(), fetched_at,
                                                 stored.encode())
                        if isinstance(loaded, CachedPolicy):
                            yield loaded
                        else:
                            damaged.append(loaded)
        except psycopg.Error as exc:
            raise StoreError(f"cannot load policies from {self.where}: {_why(exc)}") from None
        if damaged:
            raise DamagedCache(self.where, damaged)

    def load_policy(self, domain: str) -> CachedPolicy | None:
        try:
            rows = self._connections.get().execute(
                "SELECT domain, txt_id, policy, fetched_at, checksum FROM sts_policy WHERE domain = %s",
                (domain,)).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"cannot read the policy of {domain} at {self.where}: {_why(exc)}") from None
        if not rows:
            return None
        name, txt_id, text, fetched_at, stored = rows[0]
        return loaded_policy((name.encode(), txt_id.encode(), text.encode(), fetched_at, stored.encode()))

    def try_fetch_lock(self, domain: str) -> bool:
        """A session advisory lock of this thread's connection: released by the server if the daemon dies."""
        try:
            return bool(self._connections.get().execute("SELECT pg_try_advisory_lock(%s)",
                                                        (_fetch_lock_key(domain),)).fetchone()[0])
        except psycopg.Error as exc:
            raise StoreError(f"cannot take the fetch lock of {domain} at {self.where}: {_why(exc)}") from None

    def release_fetch_lock(self, domain: str) -> None:
        try:
            self._connections.get().execute("SELECT pg_advisory_unlock(%s)", (_fetch_lock_key(domain),))
        except psycopg.Error as exc:   # a connection that broke has lost the lock already
            raise StoreError(f"cannot release the fetch lock of {domain} at {self.where}: {_why(exc)}") from None

    def policy_writer(self) -> PostgresStore:
        """This store: its connections are per thread already."""
        return self

    def save_policy(self, policy: CachedPolicy) -> None:
        self.save_policies([policy])

    def save_policies(self, policies: Iterable[CachedPolicy]) -> None:
        """Upsert in one transaction; a row fetched later by another daemon is not replaced by an older one."""
        rows = policy_rows(policies)
        domains = ", ".join(row[0] for row in rows[:3]) + (" ..." if len(rows) > 3 else "")
        with self.transaction(f"save the policy of {domains}") as cursor:
            cursor.executemany(UPSERT_POLICY, rows)

    def delete_policy(self, domain: str) -> None:
        self._write([("DELETE FROM sts_policy WHERE domain = ?", (domain,))])

    def close(self) -> None:
        self._connections.close()

    # -- TLS-RPT

    def cursor_key(self, feed: str) -> str:
        return f"{self._host}/{feed}"

    def outcome_writer(self) -> PostgresOutcomeWriter:
        return PostgresOutcomeWriter(_Connections(self._cache), self.cursor_key)

    @contextmanager
    def report_lock(self) -> Iterator[None]:
        """The fleet's report lock, on a connection of its own held for the run."""
        conn = self._connections.open()
        try:
            try:
                (taken,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", REPORT_LOCK).fetchone()
            except psycopg.Error as exc:
                raise StoreError(f"cannot take the report lock at {self.where}: {_why(exc)}") from None
            if not taken:
                raise ReportLocked(f"another report run (on some host) holds the report lock at {self.where}")
            yield
        finally:
            conn.close()

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._connections.get().execute(placeholders(sql), args).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"cannot read the TLS-RPT spool at {self.where}: {_why(exc)}") from None

    def _write(self, statements: list[Statement]) -> list[int]:
        counts = []
        with self.transaction("write") as cursor:
            for sql, args in statements:
                cursor.execute(placeholders(sql), args)
                counts.append(cursor.rowcount)
        return counts

    def transaction(self, what: str) -> AbstractContextManager[psycopg.Cursor]:
        """A cursor in one transaction (the copy command writes through it)."""
        return _transaction(self._connections, what)
