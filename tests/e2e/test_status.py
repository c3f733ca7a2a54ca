"""``mtasts-resolver status`` before, while and after a daemon runs, and ``query --json``."""

from __future__ import annotations

import json
import time

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import AttemptRow, DeliveryRow, ReportRow
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world.daemon import DaemonProcess, run_cli
from tests.world.netstrings import netstring, socketmap_call
from tests.world.policy_server import sts_policy

# DNS points at a closed port: the daemon answers from the cache it loads, and resolves nothing.
OFFLINE = '[dns]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout_s = 0.5\n[dane]\nenabled = false\n' \
          "[metrics]\nsnapshot_interval_s = 0.2\n"
RUA = "mailto:tlsrpt@report.example"


def status(proc: DaemonProcess, *extra: str) -> tuple[int, dict]:
    result = run_cli("-c", str(proc.config_path), "status", "--json", *extra)
    return result.returncode, json.loads(result.stdout)


def seed(path) -> None:
    """One policy, one spooled day not reported yet, and one report sent the day before."""
    store = SqliteStore(path)
    store.save_policy(CachedPolicy("status.example", "1", parse_policy(sts_policy("mx.status.example")), time.time()))
    writer = store.outcome_writer()
    writer.add([("2026-11-30", "spooled.example", '{"policy-type":"no-policy-found"}', "success", "", 3)], {})
    writer.close()
    store.add_report(ReportRow("r1", "2026-11-29", "report.example", "ready", "", 1796000000.0, b""), [RUA],
                     1796000100.0)
    store.set_delivery(DeliveryRow("r1", RUA, "sent", 1, 0.0, 1796000100.0),
                       AttemptRow("r1", RUA, 1796000100.0, "sent", "250 2.0.0 queued"))
    store.close()


def test_status_of_a_daemon_never_started_says_so(tmp_path):
    proc = DaemonProcess(tmp_path, OFFLINE)
    code, shown = status(proc)
    assert code == 69   # EX_UNAVAILABLE: nothing running
    assert shown["workers"] == []
    assert [listener["accepting"] for listener in shown["listeners"]] == [False, False, False]
    assert "no cache file yet" in shown["store"]["error"]
    assert not (tmp_path / "state" / "cache.sqlite3").exists()   # status creates nothing
    text = run_cli("-c", str(proc.config_path), "status")
    assert "not started" in text.stdout and "NOT accepting" in text.stdout


def test_status_while_running_and_after_stop(tmp_path):
    seed(tmp_path / "state" / "cache.sqlite3")
    proc = DaemonProcess(tmp_path, OFFLINE)
    proc.start()
    try:
        assert socketmap_call(proc.socketmap_port, netstring(b"postfix status.example")).startswith(b"OK ")
        time.sleep(0.6)   # a snapshot after the lookup
        code, shown = status(proc)
    finally:
        proc.stop()
    assert code == 0
    (worker,) = shown["workers"]
    assert worker["running"] and worker["pid"] == proc.proc.pid
    assert worker["cached_domains"] == 1
    assert worker["dane"] == "DANE off (dane.enabled = false)"
    assert [listener["accepting"] for listener in shown["listeners"]] == [True, True, True]
    assert shown["metrics"] is None
    store = shown["store"]
    assert store["policies"] == 1
    assert store["spool_backlog"] == [{"day": "2026-11-30", "report_domain": "spooled.example"}]
    assert store["last_report"]["deliveries"] == {"sent": 1}
    assert store["last_report"]["last_attempt"]["result"] == "sent"

    code, after = status(proc)
    assert code == 69
    assert [w["running"] for w in after["workers"]] == [False]   # the last snapshot, written as it stopped
    assert [listener["accepting"] for listener in after["listeners"]] == [False, False, False]
    text = run_cli("-c", str(proc.config_path), "status").stdout
    assert "NOT running (last snapshot)" in text
    assert "1 MTA-STS policies cached" in text and "1 (day, domain) pairs not reported yet, oldest 2026-11-30" in text
    assert "last attempt" in text and "250 2.0.0 queued" in text


def test_query_json_explains_as_data(tmp_path):
    seed(tmp_path / "state" / "cache.sqlite3")
    proc = DaemonProcess(tmp_path, OFFLINE)
    result = run_cli("-c", str(proc.config_path), "query", "--json", "status.example")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["domain"] == "status.example"
    assert shown["answer"] == {"kind": "OK", "text": "secure match=mx.status.example servername=hostname"}
    assert shown["cached_before"]["id"] == "1"
    assert shown["mta_sts"]["txt"]["ok"] is False   # the TXT lookup timed out: the cached policy is kept
    assert shown["mta_sts"]["txt"]["result_type"] == "sts-policy-fetch-error"
    assert shown["mta_sts"]["policy"][:2] == ["version: STSv1", "mode: enforce"]
    assert shown["dane"] is None
    bad = json.loads(run_cli("-c", str(proc.config_path), "query", "--json", ".not-a-domain").stdout)
    assert bad["answer"] == {"kind": "NOTFOUND", "text": ""}
