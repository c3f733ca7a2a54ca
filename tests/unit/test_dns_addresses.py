"""DnsClient.addresses: A and AAAA asked at once; what a failure of one, or both, means."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from mtasts_resolver.net.dns import DnsClient, DnsFailure, RRAnswer
from mtasts_resolver.net.local import LocalFailure


class Answers(DnsClient):
    def __init__(self, answers: dict) -> None:
        super().__init__(("127.0.0.1",), 53, 1.0)
        self._answers = answers
        self.asked: list[str] = []

    def query(self, name, rdtype):
        self.asked.append(rdtype)
        answer = self._answers[rdtype]
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(RRAnswer(tuple(SimpleNamespace(address=a) for a in answer), False, 60))


def addresses(answers: dict):
    client = Answers(answers)
    out: list = []
    Deferred.fromCoroutine(client.addresses("mta-sts.example.com")).addBoth(out.append)
    return client.asked, out[0]


@pytest.mark.parametrize("answers, expected", [
    ({"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]}, ["192.0.2.1", "2001:db8::1"]),
    ({"A": ["192.0.2.1"], "AAAA": DnsFailure("timed out")}, ["192.0.2.1"]),     # one family is enough
    ({"A": DnsFailure("SERVFAIL"), "AAAA": ["2001:db8::1"]}, ["2001:db8::1"]),
    ({"A": [], "AAAA": []}, []),                                                 # no address: not a failure
    ({"A": DnsFailure("SERVFAIL"), "AAAA": DnsFailure("timed out")}, DnsFailure),
    ({"A": DnsFailure("SERVFAIL"), "AAAA": LocalFailure("no socket")}, LocalFailure),   # ours wins: TEMP
])
def test_addresses(answers, expected):
    asked, result = addresses(answers)
    assert asked == ["A", "AAAA"]
    if isinstance(expected, list):
        assert result == expected
    else:
        assert result.check(expected)
        result.trap(expected)
