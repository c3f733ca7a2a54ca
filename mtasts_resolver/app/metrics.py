"""The metrics wired into the daemon: what a snapshot samples, the snapshot files, the /metrics listener.

Every worker samples its numbers into a :class:`Snapshot` and writes it
for the others (:mod:`mtasts_resolver.metrics.share`).  Worker 0 alone
binds ``metrics.listen`` (as it alone runs the TLS-RPT feeds) and answers a
scrape with its own live numbers plus every other running worker's last
snapshot, counters summed, gauges labelled by worker, and the report
deliveries read from the store at that moment (``report`` writes them, in
its own process).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.threads import deferToThread
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from mtasts_resolver import __version__
from mtasts_resolver.app.exits import EX_UNAVAILABLE, Fatal
from mtasts_resolver.app.systemd import dane_status
from mtasts_resolver.config import Config, SocketSpec
from mtasts_resolver.limits import LIMITS
from mtasts_resolver.metrics.counting import Tally
from mtasts_resolver.metrics.exposition import deliveries_by_transport, render
from mtasts_resolver.metrics.http import MetricsResource, MetricsSite
from mtasts_resolver.metrics.share import SnapshotWriter, read_snapshots, running
from mtasts_resolver.metrics.snapshot import Snapshot, combine
from mtasts_resolver.net.dnssec_probe import ValidationProbe
from mtasts_resolver.net.sockets import adopt_listener, stream_listener
from mtasts_resolver.store import DeliveryRow, StoreError
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

log = Logger()


def status_dir(config: Config) -> Path:
    """Where the workers' snapshots live (``status`` reads them too)."""
    return config.state_dir / "status"


@dataclass
class Sources:
    """What one worker's snapshot is sampled from."""

    tally: Tally
    domains: Callable[[], int]
    connections: Callable[[], int]
    spool: OutcomeSpool
    dane_enabled: bool
    probe: ValidationProbe | None


def sample(sources: Sources, worker: int, started_at: float, now: float) -> Snapshot:
    counters = dict(sources.tally.counters)
    counters.update({("limit_hits_total", limit): hits for limit, hits in LIMITS.counts().items()})
    counters[("spool_committed_sessions_total",)] = sources.spool.spooled_sessions
    gauges = {("spool_pending_sessions",): float(sources.spool.pending_sessions),
              ("cached_domains",): float(sources.domains()),
              ("client_connections",): float(sources.connections()),
              ("start_time_seconds",): started_at}
    if sources.dane_enabled and sources.probe is not None:
        gauges[("dane_validating",)] = 1.0 if sources.probe.validating else 0.0
    info = {"version": __version__, "dane": dane_status(sources.dane_enabled, sources.probe)}
    return Snapshot(worker, os.getpid(), started_at, now, counters, gauges, info)


def bind_metrics(config: Config) -> socket.socket:
    """The metrics listening socket; :class:`Fatal` naming the address if it cannot be had."""
    try:
        return stream_listener(SocketSpec(address=config.metrics.listen))
    except OSError as exc:
        raise Fatal(f"cannot listen for metrics on {config.metrics.listen}: {exc.strerror or exc}",
                    EX_UNAVAILABLE) from None


class MetricsListener(Service):
    """Serves /metrics on a bound socket while running."""

    def __init__(self, reactor, sock: socket.socket, site: MetricsSite, spec: SocketSpec) -> None:
        self._reactor = reactor
        self._socket: socket.socket | None = sock
        self._site = site
        self._spec = spec
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        sock, self._socket = self._socket, None
        self._port = adopt_listener(self._reactor, sock, self._site, self._spec)
        log.info("serving metrics on http://{where}/metrics", where=self._spec)

    def stopService(self):
        super().stopService()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        return self._port.stopListening() if self._port is not None else None


def metrics_services(reactor, config: Config, own: Callable[[], Snapshot], deliveries: Callable[[], list[DeliveryRow]],
                     sock: socket.socket | None, remote_store: bool = False) -> list[Service]:
    """The snapshot writer of this worker, and with ``sock`` (worker 0, ``metrics.listen`` set) the listener.

    With a remote store (PostgreSQL) the report deliveries are read in a
    thread every ``snapshot_interval_s`` and a scrape shows the last read: a
    scrape must not hold the event loop for a database round trip (or, with
    the database down, a connect timeout).
    """
    directory = status_dir(config)
    services: list[Service] = [SnapshotWriter(reactor, directory, config.metrics.snapshot_interval_s, own)]
    if sock is None:
        return services

    def read_deliveries() -> dict:
        try:
            return deliveries_by_transport((row.destination, row.state) for row in deliveries())
        except StoreError as exc:   # the other numbers are still worth a scrape
            log.error("metrics: cannot read the report deliveries: {error}", error=exc)
            return {}

    last_read: dict[str, dict] = {"stored": {}}
    if remote_store:
        def refresh():
            return deferToThread(read_deliveries).addCallback(lambda stored: last_read.update(stored=stored))
        refresher = TimerService(config.metrics.snapshot_interval_s, refresh)
        refresher.clock = reactor
        services.append(refresher)

    def scrape() -> bytes:
        mine = own()
        others = [snapshot for snapshot in read_snapshots(directory, config.daemon.workers)
                  if snapshot.worker != mine.worker and running(snapshot)]
        counters, gauges = combine([mine, *others])
        stored = last_read["stored"] if remote_store else read_deliveries()
        return render(counters, gauges, stored)

    spec = SocketSpec(address=config.metrics.listen)
    site = MetricsSite(MetricsResource(scrape), config.metrics.max_connections, config.metrics.timeout_s, LIMITS.hit)
    services.append(MetricsListener(reactor, sock, site, spec))
    return services
