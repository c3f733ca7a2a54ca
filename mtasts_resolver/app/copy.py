"""``mtasts-resolver copy-to-postgresql``: moving a host to the fleet's PostgreSQL store (README "Fleet")."""

from __future__ import annotations

import sys
from pathlib import Path

from mtasts_resolver.app.exits import EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_USAGE, OK
from mtasts_resolver.config import Config
from mtasts_resolver.store import DamagedCache, StoreError
from mtasts_resolver.store.copy import AlreadyCopied, copy_to_postgresql
from mtasts_resolver.store.postgresql import PostgresStore


_STATUS = {FileNotFoundError: EX_NOINPUT, DamagedCache: EX_DATAERR}   # else EX_IOERR: the database failed


def copy_command(config: Config, source: str | None) -> int:
    """0 when copied or copied before; 64 unless [cache] names PostgreSQL; 66 no file; 65 damaged; 74 database."""
    if config.cache.backend != "postgresql":
        print('copy-to-postgresql: set [cache] backend = "postgresql" and dsn first: that is where it copies to',
              file=sys.stderr)
        return EX_USAGE
    path = Path(source) if source else config.cache_path
    try:
        target = PostgresStore(config.cache)
    except StoreError as exc:
        print(f"copy-to-postgresql: {exc}", file=sys.stderr)
        return EX_IOERR
    try:
        copied = copy_to_postgresql(path, target)
    except AlreadyCopied as exc:
        print(f"copy-to-postgresql: nothing copied: {exc}")
        return OK
    except (FileNotFoundError, StoreError) as exc:
        print(f"copy-to-postgresql: nothing copied: {exc}", file=sys.stderr)
        return _STATUS.get(type(exc), EX_IOERR)
    finally:
        target.close()
    print(f"copy-to-postgresql: {path} copied into {target.where}")
    for table, rows in copied.rows.items():
        print(f"  {table}: {rows} rows")
    if copied.left_out:
        print(f"  {copied.left_out} report decisions left out: those days were already reported by another host")
    return OK
