"""``status``'s text: what it says for a running, a stopped and a never started daemon, and its store."""

from __future__ import annotations

import pytest

from mtasts_resolver.app.status import render

WORKER = {"worker": 0, "pid": 42, "running": True, "started_at": 0.0, "written_at": 60.0, "dane": "DANE on",
          "cached_domains": 7, "client_connections": 2, "spool_pending_sessions": 0, "limit_hits": {}}
STORE = {"path": "/var/lib/mtasts-resolver/cache.sqlite3", "policies": 3, "spool_backlog": [], "last_report": None}
LAST = {"created_at": 86400.0, "day": "1970-01-01", "report_domain": "example.net", "state": "ready",
        "deliveries": {"sent": 1, "failed": 1},
        "last_attempt": {"at": 90000.0, "destination": "mailto:r@example.net", "result": "failed", "detail": "550 no"}}


def status(workers=(WORKER,), store=STORE, accepting=True):
    return {"config": "/etc/mtasts-resolver/config.toml", "now": 0.0, "workers": list(workers), "metrics": None,
            "listeners": [{"protocol": "socketmap", "address": "127.0.0.1:8461", "accepting": accepting}],
            "store": store}


@pytest.mark.parametrize("shown, expected", [
    (status(), ["worker 0:  pid 42 running, started 1970-01-01 00:00:00 UTC",
                "7 domains in memory, 2 client connections, 0 TLS-RPT sessions not committed; DANE on",
                "listener:  socketmap on 127.0.0.1:8461: accepting", "metrics:   off",
                "3 MTA-STS policies cached", "spool:     0 (day, domain) pairs not reported yet",
                "reports:   none made yet"]),
    (status(workers=[dict(WORKER, running=False, limit_hits={"daemon.max_connections": 3})], accepting=False),
     ["pid 42 NOT running (last snapshot)", "limits reached: daemon.max_connections 3", ": NOT accepting"]),
    (status(workers=[]), ["daemon:    no snapshot: not started since this state directory was made"]),
    (status(store={"path": "/x.sqlite3", "error": "no cache file yet"}), ["store:     /x.sqlite3: no cache file yet"]),
    (status(store=dict(STORE, spool_backlog=[{"day": "2026-11-29", "report_domain": "a.example"},
                                             {"day": "2026-11-30", "report_domain": "b.example"}], last_report=LAST)),
     ["2 (day, domain) pairs not reported yet, oldest 2026-11-29",
      "reports:   last made 1970-01-02 00:00:00 UTC (1970-01-01 example.net: ready); deliveries: 1 failed, 1 sent",
      "last attempt 1970-01-02 01:00:00 UTC to mailto:r@example.net: failed 550 no"]),
])
def test_status_text(shown, expected):
    text = render(shown)
    for line in expected:
        assert line in text, f"{line!r} not in:\n{text}"


def test_a_store_error_shows_nothing_of_the_store_after_it():
    assert "spool:" not in render(status(store={"path": "/x", "error": "locked"}))
