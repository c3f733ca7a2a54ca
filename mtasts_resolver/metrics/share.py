"""Each worker's snapshot as a file: how worker 0 sums a pool, and how ``status`` sees a running daemon.

Every worker writes ``STATE_DIR/status/worker-N.json`` every
``metrics.snapshot_interval_s`` and once more as it stops, replacing it
atomically (write, fsync-free rename: a lost snapshot costs one interval of
freshness, nothing else).  Files rather than asking the workers over a
socket: a scrape then never waits on a busy worker, nothing new listens,
and ``status`` reads the same files whether the daemon runs or not (a file
whose process is gone shows the last numbers, marked as not running).  The
cost is freshness: other workers' counts are up to one interval old in a
scrape, worker 0's own are live.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.logger import Logger

from mtasts_resolver.metrics.snapshot import Snapshot

log = Logger()


def snapshot_path(directory: Path, worker: int) -> Path:
    return directory / f"worker-{worker}.json"


def write_snapshot(directory: Path, snapshot: Snapshot) -> None:
    """Replace the worker's file atomically; raises OSError."""
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = snapshot_path(directory, snapshot.worker)
    partial = path.with_name(f".{path.name}.{snapshot.pid}")
    partial.write_text(snapshot.to_json())
    os.replace(partial, path)


def read_snapshots(directory: Path, workers: int) -> list[Snapshot]:
    """The snapshots of workers 0..``workers``-1 that exist and parse (a missing or torn file is skipped)."""
    found = []
    for worker in range(workers):
        try:
            found.append(Snapshot.from_json(snapshot_path(directory, worker).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def running(snapshot: Snapshot) -> bool:
    """Whether the process that wrote ``snapshot`` is still alive."""
    try:
        os.kill(snapshot.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's (status run by an admin without the service's rights)
        return True
    return True


class SnapshotWriter(TimerService):
    """Writes ``sample()`` every ``interval_s`` and once more when stopped."""

    def __init__(self, reactor, directory: Path, interval_s: float, sample: Callable[[], Snapshot]) -> None:
        super().__init__(interval_s, self.write)
        self.clock = reactor
        self._directory = directory
        self._sample = sample
        self._failing = False

    def write(self) -> None:
        try:
            write_snapshot(self._directory, self._sample())
        except OSError as exc:
            if not self._failing:   # once, not every interval
                log.error("cannot write the status snapshot in {directory}: {error}", directory=self._directory,
                          error=exc)
            self._failing = True
        else:
            self._failing = False

    def stopService(self):
        stopped = super().stopService()
        self.write()
        return stopped
