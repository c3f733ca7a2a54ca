"""``mtasts-resolver copy-to-postgresql``: a host's SQLite cache and TLS-RPT spool, copied into the fleet's store.

Each host moving to the shared store runs it once (daemon stopped).  The
whole copy is one PostgreSQL transaction, so it lands completely or not at
all, and it is recorded in ``store_copy`` under the host and file: run
again, it copies nothing (counters added twice would report sessions
twice).  What meets rows already there:

- a policy replaces the stored one only if it was fetched later;
- outcome counters add to the day's counters (another host's sessions of
  the same day are other sessions);
- the feed cursors become this host's;
- a report decision for a day and domain already decided elsewhere is left
  out with its deliveries (that day was reported, by that host).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtasts_resolver.store import StoreError
from mtasts_resolver.store.postgresql import UPSERT_POLICY, PostgresStore, placeholders
from mtasts_resolver.store.sqlite import SqliteStore, policy_rows
from mtasts_resolver.store.tlsrpt_sql import (
    ADD_OUTCOMES,
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    INSERT_REPORT,
    SET_CURSOR,
    SET_POLICY,
    UPDATE_DELIVERY,
)


class AlreadyCopied(StoreError):
    """This host's file was copied before (when, in the message): nothing is copied again."""


@dataclass
class Copied:
    source: str
    rows: dict[str, int] = field(default_factory=dict)   # rows copied per table
    left_out: int = 0                                     # report decisions already made elsewhere


_SOURCE_ROWS = {
    "tlsrpt_outcome": "SELECT day, report_domain, policy, kind, failure, sessions FROM tlsrpt_outcome",
    "tlsrpt_cursor": "SELECT feed, position FROM tlsrpt_cursor",
    "tlsrpt_policy": "SELECT domain, policy, updated_at FROM tlsrpt_policy",
    "tlsrpt_report": "SELECT report_id, day, report_domain, state, detail, created_at, body FROM tlsrpt_report",
    "tlsrpt_delivery": ("SELECT report_id, destination, state, attempts, next_attempt_at, first_attempt_at "
                        "FROM tlsrpt_delivery"),
    "tlsrpt_attempt": "SELECT report_id, destination, at, result, detail FROM tlsrpt_attempt ORDER BY at, rowid",
}


def copy_to_postgresql(path: Path, target: PostgresStore, host: str | None = None) -> Copied:
    """Copy the SQLite store at ``path`` into ``target``; :class:`AlreadyCopied` if done before.

    Raises FileNotFoundError when there is no file, DamagedCache when a
    policy row cannot be read (salvage it first).
    """
    if not path.is_file():
        raise FileNotFoundError(f"no SQLite cache at {path}")
    source = f"{host or socket.gethostname()}:{path.resolve()}"
    sqlite = SqliteStore(path)
    try:
        policies = policy_rows(sqlite.load_policies())
        tables = {table: sqlite._read(sql) for table, sql in _SOURCE_ROWS.items()}
    finally:
        sqlite.close()
    copied = Copied(source)
    with target.transaction("copy the SQLite store") as cursor:
        cursor.execute("SELECT copied_at FROM store_copy WHERE source = %s FOR UPDATE", (source,))
        if (done := cursor.fetchone()) is not None:
            raise AlreadyCopied(f"{source} was copied on {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(done[0]))}")
        cursor.executemany(UPSERT_POLICY, policies)
        copied.rows["sts_policy"] = len(policies)
        cursor.executemany(placeholders(ADD_OUTCOMES), tables["tlsrpt_outcome"])
        cursor.executemany(placeholders(SET_CURSOR), [(target.cursor_key(feed), position)
                                                      for feed, position in tables["tlsrpt_cursor"]])
        cursor.executemany(placeholders(SET_POLICY), tables["tlsrpt_policy"])
        for table in ("tlsrpt_outcome", "tlsrpt_cursor", "tlsrpt_policy"):
            copied.rows[table] = len(tables[table])
        taken = set()
        for row in tables["tlsrpt_report"]:
            cursor.execute(placeholders(INSERT_REPORT) + " ON CONFLICT DO NOTHING RETURNING report_id", row)
            if cursor.fetchone() is not None:
                taken.add(row[0])
        copied.left_out = len(tables["tlsrpt_report"]) - len(taken)
        deliveries = [row for row in tables["tlsrpt_delivery"] if row[0] in taken]
        # Inserted as the reporter inserts it, then set to where it was with the reporter's own update.
        cursor.executemany(placeholders(INSERT_DELIVERY), [(r[0], r[1], r[2], r[4]) for r in deliveries])
        cursor.executemany(placeholders(UPDATE_DELIVERY), [(r[2], r[3], r[4], r[5], r[0], r[1]) for r in deliveries])
        attempts = [row for row in tables["tlsrpt_attempt"] if row[0] in taken]
        cursor.executemany(placeholders(INSERT_ATTEMPT), attempts)
        copied.rows.update(tlsrpt_report=len(taken), tlsrpt_delivery=len(deliveries), tlsrpt_attempt=len(attempts))
        cursor.execute("INSERT INTO store_copy (source, copied_at) VALUES (%s, %s)", (source, time.time()))
    return copied
