"""sending-mta-ip without configuration: the kernel's source address for the route to the receiving IP."""

from __future__ import annotations

import pytest

from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator
from mtasts_resolver.tlsrpt.feeds.sourceip import RouteSource, route_source
from mtasts_resolver.tlsrpt.model import PolicyType, ReportPolicy


@pytest.mark.parametrize("receiving_ip, expected", [
    ("127.0.0.1", "127.0.0.1"),          # loopback routes from loopback
    ("mx.a.test", ""), ("", ""), ("999.1.1.1", ""), ("127.0.0.1\x00", ""),   # log text, not an address
])
def test_route_source(receiving_ip, expected):
    assert route_source(receiving_ip) == expected


def test_configured_address_wins_and_answers_are_remembered():
    assert RouteSource("203.0.113.9")("127.0.0.1") == "203.0.113.9"
    source = RouteSource()
    assert source("127.0.0.1") == "127.0.0.1" and source._known == {"127.0.0.1": "127.0.0.1"}


def test_the_postfix_feed_fills_it_in():
    correlator = PostfixLogCorrelator(lambda d: ReportPolicy(PolicyType.STS, d, ("version: STSv1",)), RouteSource())
    [outcome] = correlator.feed("postfix/smtp[1]: Q1: to=<u@a.test>, relay=mx.a.test[127.0.0.1]:25, delay=1, "
                                "dsn=4.7.5, status=deferred (TLS is required, but was not offered by host)", 0.0)
    assert outcome.failures[0].sending_mta_ip == "127.0.0.1"
