"""LimitLog: every hit counted, one log line per limit per interval."""

from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mtasts_resolver.limits import LimitLog


def test_hits_are_counted_and_logged_once_per_interval() -> None:
    clock = Clock()
    limits = LimitLog(clock.seconds, interval_s=60)
    with capturedLogs() as events:
        for _ in range(1000):
            limits.hit("daemon.max_connections", "from 127.0.0.1")
        clock.advance(61)
        limits.hit("daemon.max_connections")
        limits.hit("mta_sts.max_header_bytes")
    lines = [e for e in events if e.get("limit")]
    assert [(e["limit"], e["count"]) for e in lines] == [
        ("daemon.max_connections", 1), ("daemon.max_connections", 1000), ("mta_sts.max_header_bytes", 1)]
    assert limits.counts() == {"daemon.max_connections": 1001, "mta_sts.max_header_bytes": 1}


def test_a_resolver_process_forwards_its_hits_to_the_daemon() -> None:
    clock = Clock()
    daemon, child = LimitLog(clock.seconds), LimitLog(clock.seconds)
    child.forward_to(daemon.hit)      # what offload/child.py and processes.py do over the wire
    with capturedLogs() as events:
        child.hit("mta_sts.max_policy_bytes", "mta-sts.example.com")
        child.hit("mta_sts.max_policy_bytes", "mta-sts.example.com")
    assert child.counts() == {}
    assert daemon.counts() == {"mta_sts.max_policy_bytes": 2}
    assert [e["limit"] for e in events if e.get("limit")] == ["mta_sts.max_policy_bytes"]
