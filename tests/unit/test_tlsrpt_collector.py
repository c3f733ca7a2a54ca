"""The datagram collector on a real UNIX socket and reader thread, and the spool's commit timing, as any
user: a steady stream is handed over at once, stopping never waits for the sender, a bad datagram costs
only itself, sessions are dated by arrival, and every outcome is committed within the flush interval."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time

import pytest
from twisted.internet.task import Clock

from mtasts_resolver.config import SocketSpec
from mtasts_resolver.tlsrpt.feeds.collector import DRAIN_BATCH_MAX_S, DatagramCollector
from mtasts_resolver.tlsrpt.model import Outcome, PolicyType, ReportPolicy, day_bounds
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

GOOD = json.dumps({"d": "a.test", "dpv": "1", "policies": [{"policy-type": 9, "f": 0}]}).encode()
BAD = [b"[" * 100000, json.dumps({"d": "a.test", "policies": [{"policy-type": [9], "f": 0}]}).encode(),
       json.dumps({"d": "a\ud800.test", "policies": [{"policy-type": 9, "f": 0}]}).encode(), b"\xff" * 10]


class ThreadedClock:
    """What the collector needs of the reactor: seconds() (settable) and callFromThread (pumped by the test)."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()
        self.now: float | None = None

    def seconds(self) -> float:
        return time.time() if self.now is None else self.now

    def callFromThread(self, f, *args) -> None:
        self.calls.put((f, args))

    def pump(self, timeout_s: float) -> bool:
        try:
            f, args = self.calls.get(timeout=timeout_s)
        except queue.Empty:
            return False
        f(*args)
        return True


class KeySink:
    def __init__(self) -> None:
        self.keys: list[tuple] = []
        self.at: list[float] = []

    def add_keys(self, keys, cursor=None) -> None:
        self.keys += keys
        self.at.append(time.monotonic())


@pytest.fixture
def collector(tmp_path):
    reactor, sink = ThreadedClock(), KeySink()
    path = str(tmp_path / "tlsrpt.sock")
    service = DatagramCollector(reactor, sink, SocketSpec(path, mode=0o600), 65536)
    service.startService()
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield service, reactor, sink, lambda data: sender.sendto(data, path)
    sender.close()
    if service.running:
        service.stopService()


def summaries(sink: KeySink) -> int:
    return sum(1 for key in sink.keys if key[3] != "detail")


def test_a_steady_stream_is_handed_over_while_it_flows(collector):
    service, reactor, sink, send = collector
    stop = threading.Event()

    def stream() -> None:   # 20/s, never a lull: the old reader waited for a 0.25 s pause
        while not stop.is_set():
            send(GOOD)
            time.sleep(0.05)

    sender = threading.Thread(target=stream)
    started = time.monotonic()
    sender.start()
    try:
        assert reactor.pump(1.0), "nothing handed over within 1 s of a steady stream"
        first = time.monotonic() - started
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            reactor.pump(0.1)
    finally:
        stop.set()
        sender.join()
    assert first < DRAIN_BATCH_MAX_S + 0.2
    assert summaries(sink) >= 15 and len(sink.at) >= 5   # many hand-overs, not one batch at the end


def test_stop_does_not_wait_for_the_sender_to_pause(collector):
    service, reactor, sink, send = collector
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            try:
                send(GOOD)
            except OSError:
                return   # the socket is gone: stopped
            time.sleep(0.001)

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        service.stopService()
        took = time.monotonic() - started
    finally:
        stop.set()
        sender.join()
    assert took < 0.2
    while reactor.pump(0.05):
        pass
    assert service.datagrams > 0 and summaries(sink) == service.datagrams


def test_a_bad_datagram_costs_only_itself(collector):
    service, reactor, sink, send = collector
    for data in [GOOD, *BAD, GOOD, GOOD]:
        send(data)
    deadline = time.monotonic() + 5
    while service.datagrams + service.rejected < 3 + len(BAD) and time.monotonic() < deadline:
        reactor.pump(0.1)
    assert (service.datagrams, service.rejected, summaries(sink)) == (3, len(BAD), 3)


def test_sessions_are_dated_by_arrival(collector):
    service, reactor, sink, send = collector
    day_end = day_bounds("2026-03-01")[1]
    reactor.now = day_end - 0.5          # arrives on 2026-03-01...
    send(GOOD)
    while reactor.calls.empty():
        time.sleep(0.01)
    reactor.now = day_end + 10           # ...counted after midnight
    assert reactor.pump(1.0)
    assert {key[0] for key in sink.keys} == {"2026-03-01"}


# -- the spool's commit timing -------------------------------------------------------------------------------

class ClockReactor(Clock):
    """A fake clock whose thread hand-offs run on the test's thread (the spool commits on a real thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue = queue.Queue()   # (Clock.calls holds its delayed calls)

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.from_threads.put((f, args, kwargs))

    def run_thread_results(self) -> None:
        f, args, kwargs = self.from_threads.get(timeout=5)
        f(*args, **kwargs)


class RecordingWriter:
    def __init__(self, clock: ClockReactor, fail: int = 0) -> None:
        self.clock, self.fail = clock, fail
        self.commits: list[tuple[float, int]] = []   # (clock time, sessions)

    def add(self, rows, cursors, policies=None) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        self.commits.append((self.clock.seconds(), sum(r[5] for r in rows if r[3] != "detail")))

    def close(self) -> None:
        pass


OUTCOME = Outcome(0.0, "a.test", ReportPolicy(PolicyType.NO_POLICY_FOUND, "a.test"))


def test_spool_commits_within_the_interval_under_a_steady_stream():
    clock = ClockReactor()
    writer = RecordingWriter(clock)
    spool = OutcomeSpool(clock, writer, 0.2)
    try:
        added = []
        for _ in range(100):                  # one outcome every 30 ms for 3 s
            spool.add([OUTCOME])
            added.append(clock.seconds())
            clock.advance(0.03)
            while not clock.from_threads.empty():
                clock.run_thread_results()
            if spool._in_flight is not None:
                clock.run_thread_results()
        clock.advance(0.2)
        if spool._in_flight is not None:
            clock.run_thread_results()
        assert sum(n for _, n in writer.commits) == 100
        # every outcome's commit started at most 0.2 s (plus one 30 ms step) after it was added
        commit_times = [t for t, _ in writer.commits]
        for at in added:
            assert min(t for t in commit_times if t >= at) - at <= 0.2 + 0.03 + 1e-9
    finally:
        stopped = []
        spool.stop().addBoth(stopped.append)


def test_when_committed_fires_after_the_commit_and_fails_if_it_never_comes():
    clock = ClockReactor()
    writer = RecordingWriter(clock, fail=100)
    spool = OutcomeSpool(clock, writer, 0.2)
    spool.add([OUTCOME])
    first = []
    spool.when_committed().addBoth(first.append)
    assert first == []
    clock.advance(0.2)
    clock.run_thread_results()              # the commit failed: still waiting, retried later
    assert first == []
    writer.fail = 0
    clock.advance(0.2)
    clock.run_thread_results()
    assert first == [None] and writer.commits[-1][1] == 1
    spool.add([OUTCOME])
    second = []
    spool.when_committed().addBoth(second.append)
    writer.fail = 100
    stopped = []
    spool.stop().addBoth(stopped.append)
    clock.run_thread_results()              # the last try fails
    assert len(second) == 1 and "not spooled" in second[0].getErrorMessage()


def test_a_policy_added_is_seen_by_this_process_until_and_while_it_is_committed():
    clock = ClockReactor()
    writer = RecordingWriter(clock, fail=1)
    spool = OutcomeSpool(clock, writer, 0.2)
    spool.add([], policies=[("a.test", '{"policy-type":"tlsa"}')])
    assert spool.uncommitted_policy("a.test") == '{"policy-type":"tlsa"}' and spool.uncommitted_policy("b.test") is None
    clock.advance(0.2)                       # in flight: still seen
    assert spool.uncommitted_policy("a.test") == '{"policy-type":"tlsa"}'
    clock.run_thread_results()               # failed: back in memory
    assert spool.uncommitted_policy("a.test") == '{"policy-type":"tlsa"}'
    clock.advance(0.2)
    clock.run_thread_results()               # committed: the store has it now
    assert spool.uncommitted_policy("a.test") is None
    spool.stop()
