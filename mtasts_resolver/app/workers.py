"""Several worker processes sharing the listening sockets, to use every core.

One Python process answers cached lookups on one core.  With
``daemon.workers = N`` the process started by systemd binds every listener
itself, then starts N copies of the daemon that inherit the listening
sockets (the same way systemd socket activation hands them over) and
accept connections from them; the kernel spreads connections across them.
The parent runs no reactor: it only relays readiness and the watchdog to
systemd, forwards SIGTERM / SIGHUP, and exits non-zero if a worker dies
(systemd then restarts the whole group).  Each worker keeps its own memory
cache and all share the persistent store, so a new domain may be fetched
once per worker.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mtasts_resolver.app.exits import EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE
from mtasts_resolver.app.preflight import problems
from mtasts_resolver.app.systemd import notifier
from mtasts_resolver.config import Config
from mtasts_resolver.net.sockets import UnknownOwner, stream_listener

LISTEN_FDS_ENV = "MTASTS_RESOLVER_LISTEN_FDS"   # "fd,fd,...", one per configured listener
WORKER_INDEX_ENV = "MTASTS_RESOLVER_WORKER"     # 0 .. N-1
WORKER_READY_TIMEOUT_S = 60.0


def inherited_fds() -> list[int] | None:
    """The listening sockets handed down by the parent, or None in a standalone daemon."""
    value = os.environ.get(LISTEN_FDS_ENV)
    return [int(fd) for fd in value.split(",")] if value else None


def worker_index() -> int:
    """This process's place in a worker pool; 0 for a standalone daemon.

    Worker 0 alone runs the TLS-RPT feeds: they bind the collector socket and
    follow logs, which must happen once.
    """
    return int(os.environ.get(WORKER_INDEX_ENV, "0"))


class WorkerPool:
    def __init__(self, config: Config, argv: list[str]) -> None:
        self._config = config
        self._argv = argv
        self._notifier = notifier()
        self._workers: list[subprocess.Popen] = []
        self._stopping = False

    def run(self) -> int:
        found = problems(self._config)   # the checks each worker makes too, once, before binding
        for problem in found:
            print(f"cannot start: {problem}", file=sys.stderr)
        if found:
            return found[0].status
        sockets = []
        for listen in self._config.listen:
            try:
                sockets.append(stream_listener(listen.socket))
            except (OSError, UnknownOwner) as exc:
                print(f"cannot start: cannot listen on {listen.socket}: {exc}", file=sys.stderr)
                for sock in sockets:
                    sock.close()
                return EX_CONFIG if isinstance(exc, UnknownOwner) else EX_UNAVAILABLE
        with tempfile.TemporaryDirectory(prefix="mtasts-workers-") as tmp:
            notify_path = str(Path(tmp) / "notify")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(notify_path)
            env = dict(os.environ, NOTIFY_SOCKET=notify_path,
                       **{LISTEN_FDS_ENV: ",".join(str(s.fileno()) for s in sockets)})
            for index in range(self._config.daemon.workers):
                self._workers.append(subprocess.Popen(self._argv, env=dict(env, **{WORKER_INDEX_ENV: str(index)}),
                                                      pass_fds=[s.fileno() for s in sockets]))
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
            signal.signal(signal.SIGHUP, self._forward)
            try:
                return self._supervise(notify)
            finally:
                self._terminate()

    def _supervise(self, notify: socket.socket) -> int:
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)   # learn which worker spoke
        pids = {worker.pid for worker in self._workers}
        ready: set[int] = set()
        pinged: set[int] = set()
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while True:
            if self._stopping:
                return 0
            exited = [worker for worker in self._workers if worker.poll() is not None]
            if exited:   # its status (e.g. 74 for a damaged cache) is the pool's: systemd acts on it
                status = exited[0].returncode if exited[0].returncode > 0 else EX_SOFTWARE
                print(f"worker {exited[0].pid} exited with status {exited[0].returncode}; stopping the others",
                      file=sys.stderr)
                return status
            if ready != pids and time.monotonic() > deadline:
                print("workers did not become ready in time", file=sys.stderr)
                return EX_SOFTWARE
            readable, _, _ = select.select([notify], [], [], 0.5)
            if not readable:
                continue
            message, pid = _receive(notify)
            if "READY=1" in message and pid not in ready:
                ready.add(pid)
                if ready == pids:
                    self._notifier.notify(f"READY=1\nSTATUS={len(pids)} workers ready")
            if "WATCHDOG=1" in message:
                pinged.add(pid)
                if pinged == pids:   # every worker's reactor is turning
                    self._notifier.notify("WATCHDOG=1")
                    pinged.clear()

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _forward(self, signum: int, frame: object) -> None:
        for worker in self._workers:
            worker.send_signal(signum)

    def _terminate(self) -> None:
        self._notifier.notify("STOPPING=1")
        for worker in self._workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self._workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def _receive(notify: socket.socket) -> tuple[str, int]:
    """One sd_notify datagram and the pid of the worker that sent it (SCM_CREDENTIALS)."""
    credentials = struct.calcsize("3i")
    data, ancillary, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(credentials))
    pid = 0
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:credentials])[0]
    return data.decode(errors="replace"), pid
