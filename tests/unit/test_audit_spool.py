"""What the audit reads from the daemon's TLS-RPT spool: days with data for a domain, sessions, failures."""

from __future__ import annotations

from mtasts_resolver.audit.facts import Spool
from mtasts_resolver.audit.gather import spool_facts
from mtasts_resolver.store.sqlite import SqliteStore


def test_spool_facts_count_days_and_sessions_of_one_domain(tmp_path):
    store = SqliteStore(tmp_path / "cache.sqlite3")
    writer = store.outcome_writer()
    writer.add([("2026-11-01", "a.example", "{}", "success", "", 7),
                ("2026-11-01", "a.example", "{}", "failure", "", 1),
                ("2026-11-01", "a.example", "{}", "detail", '{"result-type": "x"}', 1),   # not a session count
                ("2026-11-03", "a.example", "{}", "success", "", 2),
                ("2026-11-02", "b.example", "{}", "failure", "", 5)], {})
    writer.close()
    try:
        assert spool_facts(store, "a.example") == Spool(days=2, sessions=10, failed_sessions=1)
        assert spool_facts(store, "b.example") == Spool(days=1, sessions=5, failed_sessions=5)
        assert spool_facts(store, "c.example") == Spool(0, 0, 0)
    finally:
        store.close()
