"""SQLite tables of the TLS-RPT spool and reporter (schema versions 2 and 4).

The outcome writer has its own connection (``check_same_thread=False``: it is
created on the reactor thread and used only by the spool's writer thread);
WAL lets the reactor thread and the reporter process read meanwhile.  With
``synchronous=FULL`` a batch is on disk when ``add`` returns.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from mtasts_resolver.store import AttemptRow, DeliveryRow, OutcomeRow, ReportRow, StoreError

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
                self._db.executemany(
                    "INSERT INTO tlsrpt_outcome (day, report_domain, policy, kind, failure, sessions) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, report_domain, policy, kind, failure) "
                    "DO UPDATE SET sessions = sessions + excluded.sessions", rows)
                self._db.executemany("INSERT OR REPLACE INTO tlsrpt_cursor (feed, position) VALUES (?, ?)",
                                     cursors.items())
                self._db.executemany("INSERT OR REPLACE INTO tlsrpt_policy (domain, policy, updated_at) "
                                     "VALUES (?, ?, ?)", [(d, p, at) for d, (p, at) in (policies or {}).items()])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot spool TLS-RPT outcomes: {exc}") from exc

    def close(self) -> None:
        self._db.close()


class TlsrptTables:
    """The :class:`~mtasts_resolver.store.ReportStore` half of :class:`SqliteStore`."""

    _db: sqlite3.Connection
    path: Path

    def outcome_writer(self) -> SqliteOutcomeWriter:
        return SqliteOutcomeWriter(self.path)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the TLS-RPT spool: {exc}") from exc

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write TLS-RPT report state: {exc}") from exc

    def policy_in_force(self, domain: str) -> str | None:
        """The policy JSON the daemon last applied to ``domain`` (any worker), None if it never resolved it."""
        rows = self._read("SELECT policy FROM tlsrpt_policy WHERE domain = ?", (domain,))
        return rows[0][0] if rows else None

    def feed_cursor(self, feed: str) -> str | None:
        rows = self._read("SELECT position FROM tlsrpt_cursor WHERE feed = ?", (feed,))
        return rows[0][0] if rows else None

    def spooled_days(self) -> list[str]:
        return [row[0] for row in self._read("SELECT DISTINCT day FROM tlsrpt_outcome ORDER BY day")]

    def unreported(self, days: Iterable[str]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for day in days:
            found += self._read(
                "SELECT DISTINCT o.day, o.report_domain FROM tlsrpt_outcome o WHERE o.day = ? AND NOT EXISTS "
                "(SELECT 1 FROM tlsrpt_report r WHERE r.day = o.day AND r.report_domain = o.report_domain) "
                "ORDER BY o.report_domain", (day,))
        return found

    def outcome_counts(self, day: str, report_domain: str) -> list[tuple[str, str, str, int]]:
        return self._read("SELECT policy, kind, failure, sessions FROM tlsrpt_outcome "
                          "WHERE day = ? AND report_domain = ? ORDER BY policy, kind, failure", (day, report_domain))

    def add_report(self, report: ReportRow, destinations: Iterable[str], first_attempt_at: float,
                   rejected: Iterable[tuple[str, str]] = ()) -> None:
        statements = [("INSERT INTO tlsrpt_report (report_id, day, report_domain, state, detail, created_at, body) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (report.report_id, report.day, report.report_domain, report.state, report.detail,
                        report.created_at, report.body))]
        statements += [("INSERT INTO tlsrpt_delivery (report_id, destination, state, next_attempt_at) "
                        "VALUES (?, ?, 'pending', ?)", (report.report_id, destination, first_attempt_at))
                       for destination in destinations]
        for destination, reason in rejected:
            statements += [("INSERT INTO tlsrpt_delivery (report_id, destination, state, next_attempt_at) "
                            "VALUES (?, ?, 'failed', ?)", (report.report_id, destination, first_attempt_at)),
                           ("INSERT INTO tlsrpt_attempt (report_id, destination, at, result, detail) "
                            "VALUES (?, ?, ?, 'rejected', ?)", (report.report_id, destination, report.created_at,
                                                                 f"not used: {reason}"))]
        self._write(statements)

    def reports(self) -> list[ReportRow]:
        return [ReportRow(*row) for row in self._read(
            "SELECT report_id, day, report_domain, state, detail, created_at, body FROM tlsrpt_report "
            "ORDER BY day, report_domain")]

    def deliveries(self, report_id: str | None = None) -> list[DeliveryRow]:
        where, args = ("WHERE report_id = ?", (report_id,)) if report_id is not None else ("", ())
        return [DeliveryRow(*row) for row in self._read(
            "SELECT report_id, destination, state, attempts, next_attempt_at, first_attempt_at "
            f"FROM tlsrpt_delivery {where} ORDER BY next_attempt_at, report_id, destination", args)]

    def attempts(self, report_id: str) -> list[AttemptRow]:
        return [AttemptRow(*row) for row in self._read(
            "SELECT report_id, destination, at, result, detail FROM tlsrpt_attempt WHERE report_id = ? "
            "ORDER BY at, rowid", (report_id,))]

    def set_delivery(self, delivery: DeliveryRow, attempt: AttemptRow | None = None) -> None:
        statements = [("UPDATE tlsrpt_delivery SET state = ?, attempts = ?, next_attempt_at = ?, first_attempt_at = ? "
                       "WHERE report_id = ? AND destination = ?",
                       (delivery.state, delivery.attempts, delivery.next_attempt_at, delivery.first_attempt_at,
                        delivery.report_id, delivery.destination))]
        if attempt is not None:
            statements.append(("INSERT INTO tlsrpt_attempt (report_id, destination, at, result, detail) "
                               "VALUES (?, ?, ?, ?, ?)", (attempt.report_id, attempt.destination, attempt.at,
                                                          attempt.result, attempt.detail)))
        self._write(statements)

    def prune(self, before_day: str) -> int:
        old = "(SELECT report_id FROM tlsrpt_report WHERE day < ?)"
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                deleted = self._db.execute("DELETE FROM tlsrpt_outcome WHERE day < ?", (before_day,)).rowcount
                for table in ("tlsrpt_attempt", "tlsrpt_delivery"):
                    deleted += self._db.execute(f"DELETE FROM {table} WHERE report_id IN {old}", (before_day,)).rowcount
                deleted += self._db.execute("DELETE FROM tlsrpt_report WHERE day < ?", (before_day,)).rowcount
                deleted += self._db.execute("DELETE FROM tlsrpt_policy WHERE updated_at < ?",   # not resolved since
                                            (_day_start(before_day),)).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prune the TLS-RPT spool: {exc}") from exc
        return deleted


def _day_start(day: str) -> float:
    """00:00 UTC of ``day`` (YYYY-MM-DD), in seconds since the epoch."""
    return datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc).timestamp()
