"""Start and reliably stop the real daemons (nsd, unbound, later MTAs).

Tests must never leave a server behind, even when they crash half-way, so
every daemon runs in its own process group (it may fork helpers, as nsd
does) and an ``atexit`` hook kills whatever is still running.  A daemon
that fails to come up raises with the tail of its logs, since "timeout
waiting for port" alone is useless when a config line is wrong.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_RUNNING: set[Daemon] = set()


class DaemonError(RuntimeError):
    """A daemon failed to start or a control command failed."""


class Daemon:
    """One foreground server process plus the log files worth showing."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path,
                 logs: Sequence[Path] = (), listens: Sequence[tuple[str, int]] = ()) -> None:
        self.name = name
        self.listens = list(listens)  # checked free before start
        self.argv = list(argv)
        self.workdir = Path(workdir)
        self.output = self.workdir / f"{name}.out"  # its stdout+stderr
        self.logs = [self.output, *logs]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready: Callable[[], bool], timeout: float = 10.0) -> None:
        """Spawn the daemon and return once ``ready()`` is true."""
        if self.running:
            return
        for addr, port in self.listens:
            ensure_free(addr, port, self.name)
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"{self.name} not ready after {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait, then SIGKILL the whole process group."""
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # helpers (nsd's xfrd/server children) share the group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def leaf_pids(self) -> set[int]:
        """Live processes of the group that have no children of their own.

        For nsd these are the query-serving children: a reload replaces
        them, and until the old ones exit they may still answer old data.
        """
        if self.proc is None:
            return set()
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited while scanning
            state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
            if pgrp == self.proc.pid and state not in "ZX":
                parents[int(stat.parent.name)] = ppid
        return set(parents) - set(parents.values())

    def tail(self, lines: int = 30) -> str:
        """The last lines of every log, labelled, for error messages."""
        parts = []
        for log in self.logs:
            try:
                text = log.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            parts.append(f"--- {log} ---\n" + "\n".join(text))
        return "\n".join(parts)


def ensure_free(addr: str, port: int, who: str) -> None:
    """Fail early if addr:port is taken (e.g. a second world is running).

    Otherwise the old server would answer the new one's readiness probe.
    """
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:  # ignore TIME_WAIT leftovers
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((addr, port))
            except OSError as exc:
                raise DaemonError(f"{who}: {addr}:{port} is already in use: {exc}") from exc


def run(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30.0) -> str:
    """Run a helper tool; raise with its output if it fails."""
    res = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise DaemonError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res.stdout


@atexit.register
def _stop_all() -> None:
    for daemon in list(_RUNNING):
        daemon.stop(timeout=2)
