"""A resolver process's side of the wire (offload/child.py), driven message by message without a process."""

from __future__ import annotations

import pickle
import struct

import pytest
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel

from mtasts_resolver.app import logs
from mtasts_resolver.config import Config
from mtasts_resolver.limits import LIMITS
from mtasts_resolver.net.local import LocalFailure
from mtasts_resolver.offload import child as child_module
from mtasts_resolver.offload.child import ResolverChild
from mtasts_resolver.offload.wire import HELLO, LIMIT, LOG_LEVEL
from mtasts_resolver.policy.model import StsTxt


def frames(data: bytes) -> list[object]:
    out = []
    while data:
        (length,) = struct.unpack("!I", data[:4])
        out.append(pickle.loads(data[4:4 + length]))
        data = data[4 + length:]
    return out


@pytest.fixture
def child(monkeypatch):
    monkeypatch.setattr(child_module, "start_logging", logs.set_level)   # not the test process's global log
    monkeypatch.setattr(child_module.os, "nice", lambda increment: 0)
    resolver = ResolverChild(MemoryReactorClock())
    wire = StringTransport()
    resolver.channel.makeConnection(wire)
    resolver.channel.send_to_child = lambda message: resolver.channel.dataReceived(
        struct.pack("!I", len(data := pickle.dumps(message))) + data)
    yield resolver, wire
    LIMITS.forward_to(None)
    logs.set_level("info")


def test_the_first_message_configures_then_hello(child):
    resolver, wire = child
    resolver.channel.send_to_child(Config())
    [(hello, ok, pid)] = frames(wire.value())
    assert hello == HELLO and ok is True and isinstance(pid, int)


def test_calls_are_answered_with_their_typed_results_or_errors(child):
    resolver, wire = child
    resolver.channel.send_to_child(Config())
    wire.clear()
    txt = StsTxt("1", "v=STSv1; id=1")
    resolver._network.discover = lambda domain: succeed(txt)
    resolver._network.fetch = lambda domain: (_ for _ in ()).throw(LocalFailure("no socket"))
    resolver._network.dane = lambda domain: (_ for _ in ()).throw(ValueError("a bug"))
    for call_id, method in enumerate(["discover", "fetch", "dane", "unknown"], start=1):
        resolver.channel.send_to_child((call_id, method, "example.com"))
    replies = {call_id: (ok, value) for call_id, ok, value in frames(wire.value())}
    assert replies[1] == (True, txt)
    assert replies[2] == (False, (True, "no socket"))               # local: the daemon answers TEMP
    assert replies[3][0] is False and replies[3][1][0] is False and "ValueError: a bug" in replies[3][1][1]
    assert replies[4] == (False, (False, "unknown method 'unknown'"))


def test_limit_hits_and_log_levels_cross_the_wire(child):
    resolver, wire = child
    resolver.channel.send_to_child(Config())
    wire.clear()
    LIMITS.hit("mta_sts.max_policy_bytes", "mta-sts.example.com")
    assert frames(wire.value()) == [(LIMIT, "mta_sts.max_policy_bytes", "mta-sts.example.com")]
    resolver.channel.send_to_child((LOG_LEVEL, "error", None))
    assert logs._PREDICATE.logLevelForNamespace("mtasts_resolver") == LogLevel.error


def test_the_daemon_handles_one_result_per_child_per_turn():
    """A pipe read with many results must not hold every cached answer behind all of them."""
    from twisted.internet.task import Clock

    from mtasts_resolver.offload.wire import MESSAGES_PER_TURN, MessageChannel

    clock, got = Clock(), []
    channel = MessageChannel(got.append, lambda: None, clock)
    channel.makeConnection(StringTransport())
    frames_in_one_read = b"".join(struct.pack("!I", len(data := pickle.dumps(n))) + data for n in range(5))
    channel.dataReceived(frames_in_one_read)
    assert got == list(range(MESSAGES_PER_TURN))
    while len(got) < 5:
        [turn] = clock.getDelayedCalls()      # the next turn, scheduled (Clock.advance would run them all)
        clock.calls.remove(turn)
        before = len(got)
        turn.func(*turn.args, **turn.kw)
        assert 0 < len(got) - before <= MESSAGES_PER_TURN
    assert got == list(range(5))
