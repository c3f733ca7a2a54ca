"""The TLS-RPT spool and reporter tables in SQL both backends speak (schema: sqlite-2/4, postgresql-1).

Written once with ``?`` placeholders; a backend supplies :meth:`TlsrptTables._read`
and :meth:`TlsrptTables._write` (PostgreSQL turns the placeholders into its
own).  Counters are added with an upsert, so outcomes of every daemon
sharing the store land in one day's counters, each session counted once.
Feed cursors are a host's own (:meth:`TlsrptTables.cursor_key`): two hosts
following their own mail log must not share one read position.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from mtasts_resolver.store import (
    FAILED,
    PENDING,
    AttemptRow,
    DeliveryRow,
    OutcomeRow,
    ReportRow,
)

Statement = tuple[str, tuple]

ADD_OUTCOMES = ("INSERT INTO tlsrpt_outcome (day, report_domain, policy, kind, failure, sessions) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, report_domain, policy, kind, failure) "
                "DO UPDATE SET sessions = tlsrpt_outcome.sessions + excluded.sessions")
SET_CURSOR = ("INSERT INTO tlsrpt_cursor (feed, position) VALUES (?, ?) "
              "ON CONFLICT (feed) DO UPDATE SET position = excluded.position")
SET_POLICY = ("INSERT INTO tlsrpt_policy (domain, policy, updated_at) VALUES (?, ?, ?) "
              "ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at")

INSERT_REPORT = ("INSERT INTO tlsrpt_report (report_id, day, report_domain, state, detail, created_at, body) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")
INSERT_DELIVERY = "INSERT INTO tlsrpt_delivery (report_id, destination, state, next_attempt_at) VALUES (?, ?, ?, ?)"
INSERT_ATTEMPT = "INSERT INTO tlsrpt_attempt (report_id, destination, at, result, detail) VALUES (?, ?, ?, ?, ?)"
UPDATE_DELIVERY = ("UPDATE tlsrpt_delivery SET state = ?, attempts = ?, next_attempt_at = ?, first_attempt_at = ? "
                   "WHERE report_id = ? AND destination = ?")


def outcome_rows(rows: Iterable[OutcomeRow], cursors: Mapping[str, str],
                 policies: Mapping[str, tuple[str, float]] | None, cursor_key) -> list[tuple[str, list[tuple]]]:
    """The (statement, many rows) of one outcome writer batch, in the order they are written."""
    return [(ADD_OUTCOMES, list(rows)),
            (SET_CURSOR, [(cursor_key(feed), position) for feed, position in cursors.items()]),
            (SET_POLICY, [(domain, policy, at) for domain, (policy, at) in (policies or {}).items()])]


class TlsrptTables:
    """The :class:`~mtasts_resolver.store.ReportStore` half of a store, over :meth:`_read` and :meth:`_write`."""

    #: The column giving attempts of one instant their insertion order.
    attempt_order = "rowid"

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of one query; StoreError if it fails."""
        raise NotImplementedError

    def _write(self, statements: list[Statement]) -> list[int]:
        """Run ``statements`` in one durable transaction; their row counts.  StoreError if it fails."""
        raise NotImplementedError

    def cursor_key(self, feed: str) -> str:
        """The cursor row of ``feed`` of this host."""
        return feed

    def policy_in_force(self, domain: str) -> str | None:
        """The policy JSON the daemon last applied to ``domain`` (any worker), None if it never resolved it."""
        rows = self._read("SELECT policy FROM tlsrpt_policy WHERE domain = ?", (domain,))
        return rows[0][0] if rows else None

    def policies_in_force_since(self, at: float) -> list[tuple[str, str, float]]:
        """(domain, policy JSON, updated_at) of every policy in force recorded at or after ``at``."""
        return [tuple(row) for row in self._read(
            "SELECT domain, policy, updated_at FROM tlsrpt_policy WHERE updated_at >= ?", (at,))]

    def feed_cursor(self, feed: str) -> str | None:
        rows = self._read("SELECT position FROM tlsrpt_cursor WHERE feed = ?", (self.cursor_key(feed),))
        return rows[0][0] if rows else None

    def spooled_days(self) -> list[str]:
        return [row[0] for row in self._read("SELECT DISTINCT day FROM tlsrpt_outcome ORDER BY day")]

    def unreported(self, days: Iterable[str]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for day in days:
            found += [tuple(row) for row in self._read(
                "SELECT DISTINCT o.day, o.report_domain FROM tlsrpt_outcome o WHERE o.day = ? AND NOT EXISTS "
                "(SELECT 1 FROM tlsrpt_report r WHERE r.day = o.day AND r.report_domain = o.report_domain) "
                "ORDER BY o.report_domain", (day,))]
        return found

    def outcome_counts(self, day: str, report_domain: str) -> list[tuple[str, str, str, int]]:
        return [tuple(row) for row in self._read(
            "SELECT policy, kind, failure, sessions FROM tlsrpt_outcome "
            "WHERE day = ? AND report_domain = ? ORDER BY policy, kind, failure", (day, report_domain))]

    def add_report(self, report: ReportRow, destinations: Iterable[str], first_attempt_at: float,
                   rejected: Iterable[tuple[str, str]] = ()) -> None:
        statements: list[Statement] = [(INSERT_REPORT, (report.report_id, report.day, report.report_domain,
                                                        report.state, report.detail, report.created_at, report.body))]
        statements += [(INSERT_DELIVERY, (report.report_id, destination, PENDING, first_attempt_at))
                       for destination in destinations]
        for destination, reason in rejected:
            statements += [(INSERT_DELIVERY, (report.report_id, destination, FAILED, first_attempt_at)),
                           (INSERT_ATTEMPT, (report.report_id, destination, report.created_at, "rejected",
                                             f"not used: {reason}"))]
        self._write(statements)

    def reports(self) -> list[ReportRow]:
        return [ReportRow(report_id, day, domain, state, detail, created_at, bytes(body) if body is not None else None)
                for report_id, day, domain, state, detail, created_at, body in self._read(
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
            f"ORDER BY at, {self.attempt_order}", (report_id,))]

    def set_delivery(self, delivery: DeliveryRow, attempt: AttemptRow | None = None) -> None:
        statements = [_update_delivery(delivery, "")]
        if attempt is not None:
            statements.append((INSERT_ATTEMPT, (attempt.report_id, attempt.destination, attempt.at, attempt.result,
                                                attempt.detail)))
        self._write(statements)

    def claim_delivery(self, delivery: DeliveryRow) -> bool:
        """Set ``delivery`` (the next attempt, state ``sending``) only if the row is still the ``pending`` one
        with one attempt less: False when another run got there first, which then must not send."""
        sql, args = _update_delivery(delivery, " AND state = ? AND attempts = ?")
        (changed,) = self._write([(sql, (*args, PENDING, delivery.attempts - 1))])
        return changed == 1

    def prune(self, before_day: str) -> int:
        old = "(SELECT report_id FROM tlsrpt_report WHERE day < ?)"
        return sum(self._write([
            ("DELETE FROM tlsrpt_outcome WHERE day < ?", (before_day,)),
            *((f"DELETE FROM {table} WHERE report_id IN {old}", (before_day,))
              for table in ("tlsrpt_attempt", "tlsrpt_delivery")),
            ("DELETE FROM tlsrpt_report WHERE day < ?", (before_day,)),
            ("DELETE FROM tlsrpt_policy WHERE updated_at < ?", (_day_start(before_day),)),   # not resolved since
        ]))


def _update_delivery(delivery: DeliveryRow, condition: str) -> Statement:
    return (f"{UPDATE_DELIVERY}{condition}", (delivery.state, delivery.attempts, delivery.next_attempt_at, delivery.first_attempt_at,
             delivery.report_id, delivery.destination))


def _day_start(day: str) -> float:
    """00:00 UTC of ``day`` (YYYY-MM-DD), in seconds since the epoch."""
    return datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.UTC).timestamp()
