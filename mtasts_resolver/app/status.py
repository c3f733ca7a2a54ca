"""``mtasts-resolver status [--json]``: the daemon's state from what it leaves behind, running or not.

Nothing here asks the daemon: it reads the workers' snapshot files
(:mod:`mtasts_resolver.metrics.share`: counts, DANE's state, whether each
process is still alive), tries a connection to each configured listener,
and reads the store (policies cached, the TLS-RPT spool's days not reported
yet, the last report run as ``report`` recorded it).  So it works the same
with the daemon stopped, wedged or busy, and it never creates a cache that
is not there yet.  :func:`gather` does the I/O, :func:`render` is text.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from mtasts_resolver.app.exits import EX_UNAVAILABLE, OK
from mtasts_resolver.app.listeners import where
from mtasts_resolver.app.metrics import status_dir
from mtasts_resolver.config import Config, ListenConfig
from mtasts_resolver.metrics.share import read_snapshots, running
from mtasts_resolver.store import StoreError, open_store

PROBE_TIMEOUT_S = 2.0


def status_command(config: Config, config_path: str, as_json: bool) -> int:
    """0 when at least one worker is running, EX_UNAVAILABLE (69) when none is."""
    status = gather(config, config_path, time.time())
    print(json.dumps(status, indent=2, sort_keys=True) if as_json else render(status))
    return OK if any(worker["running"] for worker in status["workers"]) else EX_UNAVAILABLE


def gather(config: Config, config_path: str, now: float) -> dict[str, Any]:
    snapshots = read_snapshots(status_dir(config), config.daemon.workers)
    workers = [{"worker": s.worker, "pid": s.pid, "running": running(s), "started_at": s.started_at,
                "written_at": s.written_at, "dane": s.info.get("dane", ""),
                "cached_domains": int(s.gauges.get(("cached_domains",), 0)),
                "client_connections": int(s.gauges.get(("client_connections",), 0)),
                "spool_pending_sessions": int(s.gauges.get(("spool_pending_sessions",), 0)),
                "limit_hits": {series[1]: count for series, count in s.counters.items()
                               if series[0] == "limit_hits_total"}}
               for s in snapshots]
    return {"config": config_path, "now": now, "workers": workers,
            "listeners": [{"protocol": listen.protocol, "address": where(listen), "accepting": accepting(listen)}
                          for listen in config.listen],
            "metrics": f"http://{config.metrics.listen}/metrics" if config.metrics.listen else None,
            "store": _store_status(config)}


def accepting(listen: ListenConfig) -> bool:
    """Whether a connection to the listener is accepted now (it is closed again at once)."""
    if listen.tcp is not None:
        family, address = socket.AF_INET6 if ":" in listen.tcp.host else socket.AF_INET, (listen.tcp.host,
                                                                                         listen.tcp.port)
    else:
        family, address = socket.AF_UNIX, listen.unix
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def _store_status(config: Config) -> dict[str, Any]:
    if config.cache.backend == "sqlite" and not config.cache_path.exists():
        return {"path": str(config.cache_path), "error": "no cache file yet (the daemon creates it at its first start)"}
    try:
        store = open_store(config.cache, config.cache_path)
    except StoreError as exc:
        return {"path": str(config.cache_path), "error": str(exc)}
    try:
        backlog = store.unreported(store.spooled_days())
        return {"path": str(config.cache_path), "policies": sum(1 for _ in store.load_policies()),
                "spool_backlog": [{"day": day, "report_domain": domain} for day, domain in backlog],
                "last_report": _last_report(store)}
    except StoreError as exc:
        return {"path": str(config.cache_path), "error": str(exc)}
    finally:
        store.close()


def _last_report(store) -> dict[str, Any] | None:
    """The latest report decision and the latest delivery attempt, with the deliveries' states."""
    reports = store.reports()
    if not reports:
        return None
    latest = max(reports, key=lambda report: report.created_at)
    attempts = [attempt for report in reports for attempt in store.attempts(report.report_id)]
    last = max(attempts, key=lambda attempt: attempt.at, default=None)
    states: dict[str, int] = {}
    for delivery in store.deliveries():
        states[delivery.state] = states.get(delivery.state, 0) + 1
    return {"created_at": latest.created_at, "day": latest.day, "report_domain": latest.report_domain,
            "state": latest.state,
            "last_attempt": None if last is None else {"at": last.at, "destination": last.destination,
                                                       "result": last.result, "detail": last.detail},
            "deliveries": states}


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def render(status: dict[str, Any]) -> str:
    """The human form of :func:`gather`'s result."""
    out = [f"config:    {status['config']}"]
    if not status["workers"]:
        out.append("daemon:    no snapshot: not started since this state directory was made")
    for worker in status["workers"]:
        state = "running" if worker["running"] else "NOT running (last snapshot)"
        out.append(f"worker {worker['worker']}:  pid {worker['pid']} {state}, started {_when(worker['started_at'])}, "
                   f"snapshot {_when(worker['written_at'])}")
        out.append(f"           {worker['cached_domains']} domains in memory, {worker['client_connections']} client "
                   f"connections, {worker['spool_pending_sessions']} TLS-RPT sessions not committed; {worker['dane']}")
        if worker["limit_hits"]:
            hits = ", ".join(f"{limit} {count}" for limit, count in sorted(worker["limit_hits"].items()))
            out.append(f"           limits reached: {hits}")
    for listener in status["listeners"]:
        out.append(f"listener:  {listener['protocol']} on {listener['address']}: "
                   f"{'accepting' if listener['accepting'] else 'NOT accepting'}")
    out.append(f"metrics:   {status['metrics'] or 'off'}")
    store = status["store"]
    if "error" in store:
        out.append(f"store:     {store['path']}: {store['error']}")
        return "\n".join(out)
    out.append(f"store:     {store['path']}: {store['policies']} MTA-STS policies cached")
    backlog = store["spool_backlog"]
    out.append(f"spool:     {len(backlog)} (day, domain) pairs not reported yet"
               + (f", oldest {backlog[0]['day']}" if backlog else ""))
    last = store["last_report"]
    if last is None:
        out.append("reports:   none made yet")
    else:
        states = ", ".join(f"{count} {state}" for state, count in sorted(last["deliveries"].items()))
        out.append(f"reports:   last made {_when(last['created_at'])} ({last['day']} {last['report_domain']}: "
                   f"{last['state']}); deliveries: {states or 'none'}")
        attempt = last["last_attempt"]
        if attempt is not None:
            out.append(f"           last attempt {_when(attempt['at'])} to {attempt['destination']}: "
                       f"{attempt['result']} {attempt['detail']}".rstrip())
    return "\n".join(out)
