"""Persistent storage behind one small interface.

The daemon keeps every answer in memory and touches the store only when a
policy changes and once at start-up, so the interface is synchronous and
tiny.  SQLite is the embedded default; a PostgreSQL backend for fleets
implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from mtasts_resolver.policy.model import CachedPolicy


class StoreError(Exception):
    """The store could not do what was asked (disk full, corrupt file, locked)."""


class PolicyStore(Protocol):
    def load_policies(self) -> Iterator[CachedPolicy]:
        """Every stored policy, expired ones included (the caller decides)."""
        ...

    def save_policy(self, policy: CachedPolicy) -> None:
        """Insert or replace the policy of ``policy.domain``, durably."""
        ...

    def delete_policy(self, domain: str) -> None:
        ...

    def close(self) -> None:
        ...


def open_store(backend: str, location: str) -> PolicyStore:
    """The configured backend; ``location`` is a path for SQLite."""
    if backend == "sqlite":
        from mtasts_resolver.store.sqlite import SqliteStore

        return SqliteStore(location)
    raise StoreError(f"unknown store backend {backend!r}")
