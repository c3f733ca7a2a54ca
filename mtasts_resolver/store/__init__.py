"""Persistent storage behind one small interface, for every backend.

The daemon keeps every answer in memory and touches the store only when a
policy changes and once at start-up, so the interface is synchronous and
tiny; what must not wait on the reactor thread (a network database) is run
in threads by :mod:`mtasts_resolver.store.retrying`.  SQLite is the embedded
default; PostgreSQL (:mod:`mtasts_resolver.store.postgresql`) is one store
for a fleet of MTAs.  ``tests/unit/test_store_contract.py`` runs the same
contract against both.

TLS-RPT adds two parts: the outcome spool (:class:`OutcomeWriter`, written in
batches from one writer thread, so bursts never block the reactor) and the
reporter's delivery state (:class:`ReportStore`, used by ``mtasts-resolver
report``, a separate process sharing the same database), whose states are
named here and whose run lock is the store's own (one run at a time across
every process, and every host, sharing the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mtasts_resolver.config import CacheConfig
from mtasts_resolver.policy.model import CachedPolicy


class StoreError(Exception):
    """The store could not do what was asked (disk full, corrupt file, locked)."""


class ReportLocked(StoreError):
    """Another report run holds the store's report lock: this one is not needed (try again later)."""


class Unreachable(StoreError):
    """The database server cannot be reached now (down, restarting, network): worth trying again later."""


class CannotCreate(StoreError):
    """The cache file or its directory cannot be created or written (read-only, missing, not a directory)."""


#: Named in the refusal to start on a damaged cache; see :mod:`mtasts_resolver.store.salvage`.
SALVAGE_COMMAND = "mtasts-resolver salvage-cache"


class DamagedCache(StoreError):
    """The cache file is damaged: some of what it held cannot be read.

    The daemon refuses to start rather than forget: a domain whose cached
    policy is lost is open to the downgrade RFC 8461 §5.1's persistent cache
    exists to stop.  ``problems`` are (domain or "file", why) pairs.
    """

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        shown = "; ".join(f"{what}: {why}" for what, why in problems[:3])
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        super().__init__(f"policy cache {path} is damaged ({shown}{more}); run `{SALVAGE_COMMAND}` to copy the "
                         "readable policies into a fresh file (the damaged one is kept aside), then start again")


class PolicyStore(Protocol):
    #: What to call the store in log lines and errors (a path, or a DSN without its password).
    where: str
    #: True when a read may wait on the network (PostgreSQL): reads then run in the store's thread too.
    remote: bool

    def load_policies(self) -> Iterator[CachedPolicy]:
        """Every stored policy, expired ones included (the caller decides)."""
        ...

    def load_policy(self, domain: str) -> CachedPolicy | None:
        """The stored policy of one domain (expired or not), None if there is none.

        What a worker or fleet member that misses in memory asks before fetching: another one may have
        fetched it.  A row that cannot be loaded raises :class:`StoreError`.
        """
        ...

    def save_policy(self, policy: CachedPolicy) -> None:
        """Insert or replace the policy of ``policy.domain``, durably."""
        ...

    def save_policies(self, policies: Iterable[CachedPolicy]) -> None:
        """``save_policy`` for many at once, in one transaction."""
        ...

    def delete_policy(self, domain: str) -> None:
        ...

    def policy_writer(self) -> PolicyWriter:
        """Where a thread that is not the reactor's writes policies: a connection of its own (or this store,
        when its connections are per thread already)."""
        ...

    def close(self) -> None:
        ...


class PolicyWriter(Protocol):
    """The policy operations :class:`~mtasts_resolver.store.retrying.RetryingPolicyStore` runs in its thread."""

    def load_policy(self, domain: str) -> CachedPolicy | None: ...

    def save_policies(self, policies: Iterable[CachedPolicy]) -> None: ...

    def delete_policy(self, domain: str) -> None: ...

    def try_fetch_lock(self, domain: str) -> bool:
        """Take the right to fetch ``domain``'s policy for the whole fleet, if no one holds it (never waits)."""
        ...

    def release_fetch_lock(self, domain: str) -> None: ...

    def close(self) -> None: ...


#: One spool counter: (UTC day, report domain, policy JSON, kind, failure JSON or '', sessions),
#: kind being success / failure (summary session counts) or detail (one failure-details entry).
OutcomeRow = tuple[str, str, str, str, str, int]


class OutcomeWriter(Protocol):
    """Adds outcome counters; one instance per writer thread."""

    def add(self, rows: Iterable[OutcomeRow], cursors: Mapping[str, str],
            policies: Mapping[str, tuple[str, float]] | None = None) -> None:
        """Add ``rows`` to the counters, set the feed ``cursors`` and the ``policies`` in force
        (domain -> (policy JSON, when)), in one durable transaction."""
        ...

    def close(self) -> None:
        ...


# A report decision's state (ReportRow.state) ...
READY, NO_RECORD, SKIPPED = "ready", "no-record", "skipped"
# ... and a delivery's (DeliveryRow.state): ``sending`` is committed before an attempt, so one seen by the
# next run is a crashed run's and becomes ``uncertain`` (never sent again).
PENDING, SENDING, SENT, UNCERTAIN, FAILED = "pending", "sending", "sent", "uncertain", "failed"


@dataclass(frozen=True, slots=True)
class ReportRow:
    report_id: str
    day: str
    report_domain: str
    state: str          # READY | NO_RECORD | SKIPPED
    detail: str
    created_at: float
    body: bytes | None  # gzipped JSON when ready


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    report_id: str
    destination: str
    state: str          # PENDING | SENDING | SENT | UNCERTAIN | FAILED
    attempts: int
    next_attempt_at: float
    first_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    report_id: str
    destination: str
    at: float
    result: str
    detail: str


class ReportStore(Protocol):
    """The spool as the reporter reads it, and the persistent delivery state."""

    def report_lock(self) -> AbstractContextManager[None]:
        """Held for one reporter run: :class:`ReportLocked` at once when another process (any host) holds it.

        A run that dies releases it (flock: the file closes; PostgreSQL: the
        session ends), so the next run takes over.
        """
        ...

    def outcome_writer(self) -> OutcomeWriter: ...

    def feed_cursor(self, feed: str) -> str | None: ...

    def unreported(self, days: Iterable[str]) -> list[tuple[str, str]]:
        """(day, report domain) pairs of ``days`` with outcomes and no report decision yet."""
        ...

    def spooled_days(self) -> list[str]: ...

    def outcome_counts(self, day: str, report_domain: str) -> list[tuple[str, str, str, int]]:
        """(policy JSON, kind, failure JSON or '', sessions) of one day and report domain."""
        ...

    def add_report(self, report: ReportRow, destinations: Iterable[str], first_attempt_at: float,
                   rejected: Iterable[tuple[str, str]] = ()) -> None:
        """Record a report decision (and its pending deliveries) in one transaction; each ``rejected``
        (uri, reason) is a failed delivery with one attempt saying why it was not used."""
        ...

    def reports(self) -> list[ReportRow]: ...

    def deliveries(self, report_id: str | None = None) -> list[DeliveryRow]: ...

    def attempts(self, report_id: str) -> list[AttemptRow]: ...

    def set_delivery(self, delivery: DeliveryRow, attempt: AttemptRow | None = None) -> None:
        """Persist a delivery's new state (and the attempt that led to it) durably."""
        ...

    def claim_delivery(self, delivery: DeliveryRow) -> bool:
        """Persist ``delivery`` (state ``sending``, one attempt more) only if its row is still ``pending`` with one
        attempt less; False when another run claimed it first (at most once, whatever the locks did)."""
        ...

    def prune(self, before_day: str) -> int:
        """Delete outcomes and reports of days before ``before_day``; returns rows deleted."""
        ...


class Store(PolicyStore, ReportStore, Protocol):
    """What every backend is: the policy cache and the TLS-RPT spool in one database."""


def open_store(cache: CacheConfig, sqlite_path: Path) -> Store:
    """The configured backend; ``sqlite_path`` is where the SQLite file lives (``Config.cache_path``)."""
    if cache.backend == "postgresql":
        from mtasts_resolver.store.postgresql import PostgresStore

        return PostgresStore(cache)
    from mtasts_resolver.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path)
