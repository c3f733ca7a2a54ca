"""The log followers count a line only once the policy its session was resolved under is surely committed."""

from __future__ import annotations

from twisted.internet.task import Clock

from mtasts_resolver.tlsrpt.feeds.logfollow import FileFollower, JournalFollower
from mtasts_resolver.tlsrpt.model import Outcome, PolicyType, ReportPolicy

SETTLE_S = 1.2


class FakeSpool:
    def __init__(self) -> None:
        self.added: list[tuple[list[str], tuple[str, str]]] = []   # (report domains, cursor)

    def add(self, outcomes, cursor=None, policies=()) -> None:
        self.added.append(([o.report_domain for o in outcomes], cursor))


def parse(line: str, now: float) -> list[Outcome]:
    return [Outcome(now, line, ReportPolicy(PolicyType.NO_POLICY_FOUND, line))] if line else []


def test_file_lines_are_counted_once_settled_in_order_and_read_again_after_a_stop(tmp_path):
    log = tmp_path / "maillog"
    log.write_text("a.test\nb.test\n")
    inode = log.stat().st_ino
    clock, spool = Clock(), FakeSpool()
    follower = FileFollower(clock, spool, "feed", str(log), parse, 0.5, None, SETTLE_S)
    follower.startService()                                 # reads at once, then every 0.5 s
    with log.open("a") as handle:
        handle.write("c.test\npartial")
    clock.advance(0.5)
    clock.advance(SETTLE_S - 0.5 - 0.01)
    assert spool.added == []                                # read, not settled yet
    clock.advance(0.01)
    assert spool.added == [(["a.test", "b.test"], ("feed", f"{inode}:14"))]
    clock.advance(0.5)
    assert spool.added[1:] == [(["c.test"], ("feed", f"{inode}:21"))]   # the partial line waits for its end
    with log.open("a") as handle:
        handle.write(" line\n")
    clock.advance(0.3)                                      # read at the next poll...
    follower.stopService()                                  # ...still waiting: not counted,
    clock.advance(SETTLE_S)
    assert len(spool.added) == 2
    again = FileFollower(clock, spool, "feed", str(log), parse, 0.5, spool.added[-1][1][1], SETTLE_S)
    again.startService()                                    # read again from the committed cursor
    clock.advance(SETTLE_S)
    assert spool.added[2:] == [(["partial line"], ("feed", f"{inode}:34"))]
    again.stopService()


def test_journal_entries_settle_too():
    clock, spool = Clock(), FakeSpool()
    follower = JournalFollower(clock, spool, "journal", parse, SETTLE_S)
    follower.outReceived(b'{"SYSLOG_IDENTIFIER": "a.test", "SYSLOG_PID": "1", "MESSAGE": "m", "__CURSOR": "c1"}\n')
    assert spool.added == []
    clock.advance(SETTLE_S)
    assert spool.added == [(["a.test[1]: m"], ("journal", "c1"))]
