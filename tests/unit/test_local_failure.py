"""Our own trouble is no verdict: LocalFailure detection, and the service answering it TEMP without caching."""

from __future__ import annotations

import errno
import pickle

import pytest
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent, ResponseFailed

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.limits import LimitLog
from mtasts_resolver.lookup import AnswerKind
from mtasts_resolver.net.limits import CappedConnections, HeaderLimits
from mtasts_resolver.net.local import LocalFailure, exhaustion
from mtasts_resolver.net.sts_fetch import PolicyFetcher
from mtasts_resolver.offload.wire import MessageChannel
from mtasts_resolver.policy.model import FailureType, StsFailure, StsTxt
from mtasts_resolver.service import LOCAL_LIMIT, LOCAL_TROUBLE, PolicyService
from mtasts_resolver.store.sqlite import SqliteStore
from tests.unit.helpers import ENFORCE, POLICY, START, ScriptedResolver, results


def _chained(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


EMFILE = OSError(errno.EMFILE, "Too many open files")


@pytest.mark.parametrize("problem, local", [
    (EMFILE, True),
    (OSError(errno.ENFILE, "Too many open files in system"), True),
    (OSError(errno.ENOBUFS, "No buffer space available"), True),
    (MemoryError(), True),
    (error.getConnectError((errno.EMFILE, "Too many open files")), True),   # Twisted's connect failure
    (ResponseFailed([Failure(error.getConnectError((errno.ENFILE, "x")))]), True),   # Agent's reasons list
    (Failure(RequestNotSent()), False),
    (_chained(ValueError("wrapped"), EMFILE), True),
    (OSError(errno.ECONNREFUSED, "Connection refused"), False),             # the remote side's doing
    (error.ConnectionRefusedError(), False),
    (error.DNSLookupError("no such host"), False),
    (ValueError("a bug"), False),
])
def test_exhaustion_is_told_from_the_remote_sides_failures(problem, local):
    assert (exhaustion(problem) is not None) is local


def test_exhaustion_survives_a_cause_cycle():
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert exhaustion(a) is None


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    clock.advance(START)
    resolver = ScriptedResolver()
    store = SqliteStore(tmp_path / "cache.sqlite3")
    limits = LimitLog(clock.seconds)
    service = PolicyService(clock, resolver, store, MtaStsConfig(failure_ttl_s=30), [], limits=limits)
    yield resolver, service, limits, store
    store.close()


def test_a_local_failure_is_temp_and_not_remembered(world):
    resolver, service, limits, store = world
    first = results([service.lookup("postfix", "example.com")])
    resolver.discovers[0][1].errback(LocalFailure("no socket for the query"))
    assert first == [LOCAL_TROUBLE] and LOCAL_TROUBLE.kind is AnswerKind.TEMP
    assert limits.counts()[LOCAL_LIMIT] == 1
    # Nothing cached: the next lookup resolves again, and this time the domain's policy is found.
    second = results([service.lookup("postfix", "example.com")])
    assert len(resolver.discovers) == 2
    resolver.discovers[1][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    assert second == [ENFORCE]
    assert [p.domain for p in store.load_policies()] == ["example.com"]


def test_a_local_failure_of_the_fetch_keeps_a_cached_policy(world):
    resolver, service, _, _ = world
    results([service.lookup("postfix", "example.com")])
    resolver.discovers[0][1].callback(StsTxt("1", "v=STSv1; id=1"))
    resolver.fetches[0][1].callback(POLICY)
    background = service.resolve("example.com")            # a re-check, say on a new TXT id
    resolver.discovers[1][1].callback(StsTxt("2", "v=STSv1; id=2"))
    resolver.fetches[1][1].errback(LocalFailure("out of file descriptors"))
    assert results([background]) == []                      # failed: handled by the caller
    background.addErrback(lambda failure: failure.trap(LocalFailure))
    assert service.lookup("postfix", "example.com") == ENFORCE


def test_the_wire_carries_whole_values_in_order():
    got: list[object] = []
    sender, receiver = MessageChannel(got.append, lambda: None), MessageChannel(got.append, lambda: None)
    wire = StringTransport()
    sender.makeConnection(wire)
    receiver.makeConnection(StringTransport())
    values = [(1, "discover", "example.com"), (2, True, StsTxt("1", "v=STSv1; id=1")), (3, True, POLICY)]
    for value in values:
        sender.send(value)
    data = wire.value()
    for i in range(len(data)):                              # byte by byte: framing, not luck
        receiver.dataReceived(data[i:i + 1])
    assert got == values
    assert pickle.loads(pickle.dumps(POLICY)) == POLICY


class _CountingDns:
    exhaustions = 0


@pytest.mark.parametrize("problem, exhausted_meanwhile, local", [
    (error.DNSLookupError("no results for hostname lookup"), True, True),    # our lookup could not be sent
    (error.DNSLookupError("no results for hostname lookup"), False, False),  # the host has no address
    (error.getConnectError((errno.EMFILE, "Too many open files")), False, True),
    (error.ConnectionRefusedError(), False, False),
])
def test_the_fetch_tells_our_failure_from_the_policy_hosts(problem, exhausted_meanwhile, local):
    dns = _CountingDns()
    fetcher = PolicyFetcher(Clock(), dns, None, 10, 65536)
    connections = CappedConnections(Clock(), None, 10, HeaderLimits(8192, 100, 10), "mta-sts.example.com")
    count = dns.exhaustions
    dns.exhaustions += exhausted_meanwhile
    if local:
        with pytest.raises(LocalFailure):
            fetcher._classify(Failure(problem), "https://mta-sts.example.com/", connections, count)
    else:
        failure = fetcher._classify(Failure(problem), "https://mta-sts.example.com/", connections, count)
        assert isinstance(failure, StsFailure) and failure.type is FailureType.FETCH_ERROR
