"""SQLite store: WAL journal, versioned schema; the policy cache here, TLS-RPT in sqlite_tlsrpt.py.

Writes are rare (a policy changes) and small, so they run synchronously on
the reactor thread; ``synchronous=FULL`` makes each committed policy survive
power loss, which is the point of a persistent MTA-STS cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mtasts_resolver.policy.model import CachedPolicy, StsPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import CannotCreate, DamagedCache, StoreError
from mtasts_resolver.store.sqlite_tlsrpt import SqliteTlsrpt, connect

LOAD_CHUNK_ROWS = 1000
SCHEMA_VERSION = 4  # 4: tlsrpt_policy (sqlite_tlsrpt.py)


_SELECT_RAW_POLICIES = ("SELECT CAST(domain AS BLOB), CAST(txt_id AS BLOB), CAST(policy AS BLOB), fetched_at, "
                        "CAST(checksum AS BLOB) FROM sts_policy")


def checksum(domain: str, txt_id: str, text: str, fetched_at: float) -> str:
    """What a row must hash to: a byte changed on disk that still parses is caught too."""
    data = "\0".join((domain, txt_id, text, repr(float(fetched_at)))).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def policy_rows(policies: Iterable[CachedPolicy]) -> list[tuple[str, str, str, float, str]]:
    """(domain, txt_id, policy text, fetched_at, checksum) of each policy: a stored row, in either backend."""
    return [(p.domain, p.txt_id, text, p.fetched_at, checksum(p.domain, p.txt_id, text, p.fetched_at))
            for p in policies for text in ("\n".join(p.policy.lines),)]


def loaded_policy(row: tuple | None) -> CachedPolicy | None:
    """One ``load_policy`` row (as bytes, as :func:`policy_from_row` takes it) or None; a bad row is a StoreError."""
    if row is None:
        return None
    loaded = policy_from_row(*row)
    if not isinstance(loaded, CachedPolicy):
        raise StoreError(f"the stored policy of {loaded[0]} cannot be loaded: {loaded[1]}")
    return loaded


def policy_from_row(domain: bytes, txt_id: bytes, text: bytes, fetched_at: object,
                    stored_checksum: object = None) -> CachedPolicy | tuple[str, str]:
    """One stored row as a policy, or (domain, why it cannot be loaded): a row this program wrote always loads.

    ``stored_checksum`` None: a row written before schema version 3, taken as it is.
    """
    name = domain.decode("utf-8", errors="replace") if isinstance(domain, bytes) else repr(domain)
    try:
        domain_text, txt_text, policy_text = (value.decode("utf-8") for value in (domain, txt_id, text))
    except (UnicodeDecodeError, AttributeError) as exc:
        return name, f"not UTF-8 text ({exc})"
    if isinstance(fetched_at, bool) or not isinstance(fetched_at, (int, float)):
        return name, f"fetched_at is not a number: {fetched_at!r}"
    expected = checksum(domain_text, txt_text, policy_text, fetched_at).encode()
    if stored_checksum is not None and stored_checksum != expected:
        return name, "the row does not match its checksum (changed on disk)"
    policy = parse_policy(policy_text.encode("utf-8"))
    if not isinstance(policy, StsPolicy):
        return name, f"the stored policy does not parse: {policy}"
    return CachedPolicy(domain_text, txt_text, policy, float(fetched_at))


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


# SQLite's own words for a file that is not (or no longer) a whole database.
_DAMAGE_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
# ... and for one that cannot be created or written where it is.
_CANNOT_CREATE_ERRORS = frozenset({"SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM"})
QUICK_CHECK_LINES = 5   # of quick_check's findings, shown in the refusal to start


class _PolicyTable:
    """The policy table's single-row operations on ``self._db``: the store's own connection, or a writer's."""

    _db: sqlite3.Connection

    def load_policy(self, domain: str) -> CachedPolicy | None:
        try:
            row = self._db.execute(f"{_SELECT_RAW_POLICIES} WHERE domain = ?", (domain,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the policy of {domain}: {exc}") from exc
        return loaded_policy(row)

    def save_policy(self, cached: CachedPolicy) -> None:
        self.save_policies([cached])

    def save_policies(self, policies: Iterable[CachedPolicy]) -> None:
        """Several policies in one transaction: one fsync (the connection is in autocommit mode: BEGIN)."""
        rows = policy_rows(policies)
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO sts_policy (domain, txt_id, policy, fetched_at, checksum) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            domains = ", ".join(row[0] for row in rows[:3]) + (" ..." if len(rows) > 3 else "")
            raise StoreError(f"cannot save policy of {domains}: {exc}") from exc

    def try_fetch_lock(self, domain: str) -> bool:
        """Always: one host's workers each fetch a domain new to all of them at most once (their misses read the
        store first); a fleet-wide lock is PostgreSQL's."""
        return True

    def release_fetch_lock(self, domain: str) -> None:
        """Nothing was taken."""

    def delete_policy(self, domain: str) -> None:
        try:
            with self._db:
                self._db.execute("DELETE FROM sts_policy WHERE domain = ?", (domain,))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete policy of {domain}: {exc}") from exc


class SqlitePolicyWriter(_PolicyTable):
    """Policy writes on a connection of their own, for a thread that is not the reactor's.

    On the reactor thread every new policy cost a commit with
    ``synchronous=FULL`` (an fsync: 0.7 ms, 5 ms at the 99th percentile on
    this project's test machine), and a storm of new domains is a storm of
    commits.  WAL lets this connection write while the store's own reads.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._db = connect(path, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the policy cache {path} for writing: {exc}") from exc

    def close(self) -> None:
        self._db.close()


class SqliteStore(_PolicyTable, SqliteTlsrpt):
    remote = False

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self.where = str(path)
        try:
            if str(path) == ":memory:":
                self._db = connect(path)
                self._migrate()
            else:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise CannotCreate(f"cannot create the state directory {path.parent}: {exc.strerror}") from None
                with _opening_lock(path):
                    if path.exists() and path.stat().st_size == 0:
                        # This program never leaves an empty file: it was truncated.
                        raise DamagedCache(str(path), [("file", "it is empty (0 bytes)")])
                    self._db = connect(path)
                    self._check()
                    self._migrate()
        except StoreError:
            raise
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if name in _DAMAGE_ERRORS:
                raise DamagedCache(str(path), [("file", str(exc))]) from exc
            if name in _CANNOT_CREATE_ERRORS:
                raise CannotCreate(f"cannot open policy cache {path}: {exc}") from exc
            raise StoreError(f"cannot open policy cache {path}: {exc}") from exc
        except OSError as exc:
            raise CannotCreate(f"cannot open policy cache {path}: {exc}") from exc

    def _check(self) -> None:
        """SQLite's ``quick_check``: every page and record well-formed (a damaged file is never used)."""
        findings = [row[0] for row in self._db.execute(f"PRAGMA quick_check({QUICK_CHECK_LINES})")]
        if findings != ["ok"]:
            raise DamagedCache(str(self.path), [("file", finding) for finding in findings])

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
        """Every row that loads; then :class:`DamagedCache` naming each one that does not.

        Rows come a chunk at a time: holding all 100,000 raw rows next to
        their parsed copies would leave tens of MB of freed memory in the
        process.  Text comes as bytes, so that one undecodable row is named
        instead of ending the read.
        """
        damaged: list[tuple[str, str]] = []
        try:
            cursor = self._db.execute(_SELECT_RAW_POLICIES)
            while rows := cursor.fetchmany(LOAD_CHUNK_ROWS):
                for row in rows:
                    loaded = policy_from_row(*row)
                    if isinstance(loaded, CachedPolicy):
                        yield loaded
                    else:
                        damaged.append(loaded)
        except sqlite3.Error as exc:
            raise DamagedCache(str(self.path), [*damaged, ("file", f"reading stopped: {exc}")]) from exc
        if damaged:
            raise DamagedCache(str(self.path), damaged)

    def close(self) -> None:
        self._db.close()

    def policy_writer(self) -> SqlitePolicyWriter:
        """A connection of its own for the policy writes of :class:`~mtasts_resolver.store.retrying.RetryingPolicyStore`'s thread."""
        return SqlitePolicyWriter(self.path)
