"""``mtasts-resolver salvage-cache``: what the daemon's refusal to start on a damaged cache points to."""

from __future__ import annotations

import sys
import time

from mtasts_resolver.app.exits import EX_CANTCREAT, EX_IOERR, EX_NOINPUT, EX_USAGE, OK
from mtasts_resolver.config import Config
from mtasts_resolver.store import StoreError
from mtasts_resolver.store.salvage import salvage


def salvage_command(config: Config) -> int:
    if config.cache.backend != "sqlite":
        print("salvage-cache: [cache] backend is postgresql: salvage is for a damaged SQLite file "
              "(PostgreSQL keeps its own integrity)", file=sys.stderr)
        return EX_USAGE
    path = config.cache_path
    try:
        result = salvage(path, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    except FileNotFoundError as exc:
        print(f"salvage-cache: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except StoreError as exc:
        print(f"salvage-cache: cannot write a fresh cache at {path}: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    except OSError as exc:
        print(f"salvage-cache: {exc}", file=sys.stderr)
        return EX_IOERR
    print(f"salvage-cache: {result.policies} policies copied into a fresh {path}; "
          f"the damaged file is kept as {result.damaged_copy}")
    for table, rows in result.tables.items():
        print(f"  {table}: {rows} rows copied")
    for what, why in result.lost:
        print(f"  NOT copied: {what}: {why}")
    if result.lost:
        print(f"salvage-cache: {len(result.lost)} items lost; domains listed above get their policy "
              "again at their next lookup")
    return OK
