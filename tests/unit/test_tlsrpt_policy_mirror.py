"""PolicyMirror: a remote store's policies in force for the feeds, refreshed off the reactor thread."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mtasts_resolver.store import StoreError
from mtasts_resolver.tlsrpt.feeds.policy_mirror import OVERLAP_S, PolicyMirror


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float]] = []
        self.asked: list[float] = []
        self.down = False

    def changed_since(self, at: float):
        self.asked.append(at)
        if self.down:
            raise StoreError("connection refused")
        return [row for row in self.rows if row[2] >= at]


def test_the_mirror_follows_what_the_fleet_commits_and_keeps_it_when_the_store_is_down():
    table, clock = Table(), Clock()
    mirror = PolicyMirror(clock, table.changed_since, lambda call, *args: maybeDeferred(call, *args))
    table.rows = [("a.example", '{"a": 1}', 100.0)]
    mirror.refresh()
    assert mirror.get("a.example") == '{"a": 1}' and mirror.get("b.example") is None
    table.rows.append(("b.example", '{"b": 1}', 90.0))     # committed late, with an earlier clock: not missed
    table.rows[0] = ("a.example", '{"a": 2}', 160.0)
    mirror.refresh()
    assert table.asked[-1] == 100.0 - OVERLAP_S
    assert mirror.get("a.example") == '{"a": 2}' and mirror.get("b.example") == '{"b": 1}'
    table.down = True
    with capturedLogs() as events:
        mirror.refresh()
    assert mirror.get("a.example") == '{"a": 2}'           # kept
    assert any("not refreshed" in (e.get("log_format") or "") for e in events)


def test_a_refresh_still_out_is_not_doubled():
    clock, calls = Clock(), []

    def in_thread(call, *args):
        calls.append(Deferred())
        return calls[-1]

    mirror = PolicyMirror(clock, lambda at: [], in_thread)
    mirror.refresh()
    assert mirror.refresh() is None and len(calls) == 1     # a slow database: one query at a time
    calls[0].callback([])
    mirror.refresh()
    assert len(calls) == 2
    calls[1].callback([])


def test_failures_other_than_the_stores_are_not_swallowed():
    mirror = PolicyMirror(Clock(), lambda at: [], lambda call, *args: fail(ValueError("a bug")))
    d = mirror.refresh()
    failures = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ValueError)
