"""SQLite side of the TLS-RPT spool and reporter (schema versions 2 and 4; the SQL is store/tlsrpt_sql.py).

The outcome writer has its own connection (``check_same_thread=False``: it is
created on the reactor thread and used only by the spool's writer thread);
WAL lets the reactor thread and the reporter process read meanwhile.  With
``synchronous=FULL`` a batch is on disk when ``add`` returns.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mtasts_resolver.store import OutcomeRow, ReportLocked, StoreError
from mtasts_resolver.store.tlsrpt_sql import Statement, TlsrptTables, outcome_rows

BUSY_TIMEOUT_MS = 5000


def connect(path: Path | str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    # The busy timeout first: switching to WAL takes a lock that another
    # process (a worker starting at the same moment) may hold.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread,
                         timeout=BUSY_TIMEOUT_MS / 1000)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class SqliteOutcomeWriter:
    def __init__(self, path: Path | str) -> None:
        try:
            self._db = connect(path, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the TLS-RPT spool {path}: {exc}") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def add(self, rows: Iterable[OutcomeRow], cursors: Mapping[str, str],
            policies: Mapping[str, tuple[str, float]] | None = None) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, many in outcome_rows(rows, cursors, policies, lambda feed: feed):
                    self._db.executemany(sql, many)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot spool TLS-RPT outcomes: {exc}") from exc

    def close(self) -> None:
        self._db.close()


class SqliteTlsrpt(TlsrptTables):
    """The TLS-RPT half of :class:`~mtasts_resolver.store.sqlite.SqliteStore`."""

    _db: sqlite3.Connection
    path: Path

    def outcome_writer(self) -> SqliteOutcomeWriter:
        return SqliteOutcomeWriter(self.path)

    @contextmanager
    def report_lock(self) -> Iterator[None]:
        """An exclusive flock on ``report.lock`` next to the database file (released when the process dies)."""
        path = self.path.with_name("report.lock")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the report lock {path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReportLocked(f"another report run holds {path}") from None
            yield
        finally:
            os.close(fd)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the TLS-RPT spool: {exc}") from exc

    def _write(self, statements: list[Statement]) -> list[int]:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                return [self._db.execute(sql, args).rowcount for sql, args in statements]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write TLS-RPT report state: {exc}") from exc
