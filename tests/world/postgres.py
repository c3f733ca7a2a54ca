"""A real PostgreSQL server of the suite's own: Debian's postgresql, initdb and postgres in a temporary directory.

No server is assumed running.  The cluster belongs to an unprivileged user
(``nobody`` when the suite runs as root: PostgreSQL refuses to run as root),
listens on a UNIX socket in its directory only (``listen_addresses = ''``:
no TCP port to collide with another world) and asks for a password
(SCRAM), which clients read from a passfile, as the README tells admins to.
``fsync = off``: test data need not survive a power cut, and the suite runs
faster.  Each test takes a database of its own (:meth:`PostgresServer.database`).
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import psycopg

from tests.world.procs import Daemon, run

USER = "mtasts"
BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)   # the newest installed first


def _tool(name: str) -> str:
    for directory in BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


class PostgresServer:
    """``with PostgresServer() as pg: pg.database("t1")`` → a DSN naming a fresh database."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mtasts-pg-"))
        self.dir.chmod(0o755)
        self.sockets = self.dir / "sockets"
        self.password = secrets.token_hex(16)
        self.passfile = self.dir / "pgpass"    # the clients' (root's or ours), mode 0600 as libpq insists
        self._names = itertools.count(1)
        self._as: list[str] = []
        self.server: Daemon | None = None

    def __enter__(self) -> Self:
        data = self.dir / "data"
        pwfile = self.dir / "initdb-password"
        self.sockets.mkdir()
        pwfile.write_text(self.password + "\n")
        if os.getuid() == 0:
            owner = pwd.getpwnam("nobody")
            for path in (self.dir, self.sockets, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._as = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups", "--"]
        run([*self._as, _tool("initdb"), "-D", str(data), "-U", USER, "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"], cwd=self.dir, timeout=120)
        pwfile.unlink()
        self.passfile.write_text(f"*:*:*:{USER}:{self.password}\n")
        self.passfile.chmod(0o600)
        self.server = Daemon("postgres", [*self._as, _tool("postgres"), "-D", str(data), "-k", str(self.sockets),
                                          "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=200"],
                             self.dir)
        self.server.start(self._accepts, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected; SIGTERM would wait for them to leave)."""
        if self.server is not None and self.server.proc is not None:
            self.server.proc.send_signal(signal.SIGINT)
            try:
                self.server.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            self.server.stop()

    def start_again(self) -> None:
        """After :meth:`stop`: the same cluster up again (its databases kept)."""
        assert self.server is not None
        self.server.start(self._accepts, timeout=60)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.sockets} dbname={dbname} user={USER} passfile={self.passfile}"

    def _accepts(self) -> bool:
        with psycopg.connect(self.dsn(), connect_timeout=2):
            return True

    def database(self, prefix: str = "t") -> str:
        """A new empty database; its DSN."""
        name = f"{prefix}{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def sql(self, dsn: str, query: str, args: tuple = ()) -> list[tuple]:
        """Rows of one query, for tests to look at what the daemons wrote."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(query, args)
            return cursor.fetchall() if cursor.description else []

