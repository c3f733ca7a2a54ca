"""``mtasts-resolver salvage-cache``: the readable rows of a damaged cache file, copied into a fresh one.

The daemon refuses to start on a damaged cache (see :class:`DamagedCache`);
this is the admin's way forward.  The damaged file is renamed aside (never
deleted: it may be worth a closer look), every policy row that still loads
goes into a new file with the current schema, and so does every TLS-RPT
table that can still be read as a whole.  What could not be copied is
listed, by domain or table, so the admin knows which domains lost their
cached policy.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.store.sqlite import SqliteStore, policy_from_row

# The TLS-RPT tables, copied whole (a counter or a delivery state half-copied would mislead the reporter).
TLSRPT_TABLES = ("tlsrpt_outcome", "tlsrpt_cursor", "tlsrpt_report", "tlsrpt_delivery", "tlsrpt_attempt",
                 "tlsrpt_policy")
# Past a broken page, rowids are probed this far ahead (doubling) before giving up on the rest of the table.
MAX_SKIP_ROWS = 1 << 24
_SELECT_AFTER = ("SELECT rowid, CAST(domain AS BLOB), CAST(txt_id AS BLOB), CAST(policy AS BLOB), fetched_at, {checksum} "
                 "FROM sts_policy WHERE rowid > ? ORDER BY rowid")


@dataclass
class Salvage:
    damaged_copy: Path
    policies: int = 0
    lost: list[tuple[str, str]] = field(default_factory=list)   # (domain, table or "file", why)
    tables: dict[str, int] = field(default_factory=dict)        # TLS-RPT rows copied per table


def salvage(path: Path, stamp: str) -> Salvage:
    """Move ``path`` aside (suffix ``.damaged-STAMP``) and put a fresh file with its readable rows in its place.

    Raises FileNotFoundError when there is no cache file to salvage.
    """
    if not path.exists():
        raise FileNotFoundError(f"no policy cache at {path}")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):   # the write-ahead log goes with it: it holds the latest commits
        if Path(f"{path}{suffix}").exists():
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    result = Salvage(aside)
    policies = _readable_policies(aside, result.lost)
    fresh = path.with_name(f"{path.name}.salvage-tmp")
    for leftover in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm"), Path(f"{fresh}.lock")):
        leftover.unlink(missing_ok=True)
    store = SqliteStore(fresh)
    try:
        store.save_policies(policies)
        result.policies = len(policies)
        _copy_tlsrpt(store._db, aside, result)
    finally:
        store.close()
    Path(f"{fresh}.lock").unlink(missing_ok=True)
    os.rename(fresh, path)
    return result


def _readable_policies(path: Path, lost: list[tuple[str, str]]) -> list[CachedPolicy]:
    policies: list[CachedPolicy] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        lost.append(("file", f"cannot be opened: {exc}"))
        return policies
    try:
        try:   # a file of schema version 2 has no checksums
            columns = {row[1] for row in db.execute("PRAGMA table_info(sts_policy)")}
        except sqlite3.Error:
            columns = set()
        select = _SELECT_AFTER.format(checksum="CAST(checksum AS BLOB)" if "checksum" in columns else "NULL")
        last, skip = 0, 1
        while skip <= MAX_SKIP_ROWS:
            try:
                for rowid, *row in db.execute(select, (last,)):
                    last, skip = rowid, 1
                    loaded = policy_from_row(*row)
                    if isinstance(loaded, CachedPolicy):
                        policies.append(loaded)
                    else:
                        lost.append(loaded)
                break
            except sqlite3.Error as exc:
                if skip == 1:
                    lost.append(("file", f"policy rows after rowid {last} unreadable: {exc}"))
                last, skip = last + skip, skip * 2
    finally:
        db.close()
    return policies


def _copy_tlsrpt(db: sqlite3.Connection, damaged: Path, result: Salvage) -> None:
    try:
        db.execute("ATTACH DATABASE ? AS damaged", (str(damaged),))
    except sqlite3.Error as exc:
        result.lost.append(("TLS-RPT tables", f"cannot be read: {exc}"))
        return
    try:
        try:   # a file of an older schema lacks the newer tables: nothing of them to lose
            present = {row[0] for row in db.execute("SELECT name FROM damaged.sqlite_master WHERE type = 'table'")}
        except sqlite3.Error:
            present = set(TLSRPT_TABLES)
        for table in TLSRPT_TABLES:
            if table not in present:
                continue
            try:
                with db:
                    copied = db.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM damaged.{table}").rowcount
                result.tables[table] = copied
            except sqlite3.Error as exc:
                result.lost.append((table, f"table not copied: {exc}"))
    finally:
        db.execute("DETACH DATABASE damaged")
