"""HeaderScanner: the header caps of a policy fetch, fed in chunks of 1 to 9 bytes and whole.

The scanner must count what Twisted's HTTPParser buffers (LF line ends, a
trailing CR dropped, 1xx responses skipped) and stop at the final header end.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mtasts_resolver.config import MtaStsConfig
from mtasts_resolver.net.limits import HeaderLimits, HeaderScanner

LIMITS = HeaderLimits(max_header_bytes=200, max_headers=3, max_informational=2)
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
CHUNKINGS = [None, *range(1, 10)]


def scan(data: bytes, chunk: int | None, limits: HeaderLimits = LIMITS) -> tuple[str | None, bool]:
    scanner = HeaderScanner(limits)
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        if exceeded := scanner.feed(data[i:i + step]):
            return exceeded, scanner.done
    return None, scanner.done


@pytest.mark.parametrize("chunk", CHUNKINGS)
@pytest.mark.parametrize(("data", "exceeded", "done"), [
    (OK_HEAD, None, True),
    (OK_HEAD + b"x" * 1000, None, True),                                   # body bytes are not counted
    (b"HTTP/1.1 200 OK\nA: 1\nB: 2\n\n", None, True),                      # bare LF, as HTTPParser takes it
    (b"HTTP/1.1 200 OK\r\nA: 1\r\n continued\r\n\tmore\r\nB: 2\r\nC: 3\r\n\r\n", None, True),
    (b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", "mta_sts.max_headers", False),
    (b"HTTP/1.1 200 OK\r\nA: " + b"x" * 300, "mta_sts.max_header_bytes", False),   # no line end at all
    (b"HTTP/1.1 200 OK\r\n" + b"A: 1\r\n" * 2, None, False),                # still waiting: no verdict
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 2 + OK_HEAD, None, True),
    (b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\n" * 3 + OK_HEAD, "mta_sts.max_informational_responses", False),
    ((b"HTTP/1.1 103 Early\r\nLink: " + b"y" * 90 + b"\r\n\r\n") * 2 + OK_HEAD,
     "mta_sts.max_header_bytes", False),                                  # bytes of 1xx count too
    (b"HTTP/1.1 abc Nonsense\r\n\r\n", None, True),                         # Twisted rejects it, not us
])
def test_header_caps(data: bytes, exceeded: str | None, done: bool, chunk: int | None) -> None:
    assert scan(data, chunk) == (exceeded, done)


def test_headers_per_response_are_counted_afresh_after_1xx() -> None:
    three = b"A: 1\r\nB: 2\r\nC: 3\r\n"
    data = b"HTTP/1.1 103 Early\r\n" + three + b"\r\nHTTP/1.1 200 OK\r\n" + three + b"\r\n"
    assert scan(data, None, HeaderLimits(10_000, 3, 2)) == (None, True)


def test_defaults_come_from_the_config() -> None:
    settings_ = MtaStsConfig()
    assert HeaderLimits.of(settings_) == HeaderLimits(
        settings_.max_header_bytes, settings_.max_headers, settings_.max_informational_responses)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_any_bytes_any_chunking_same_verdict_and_bounded(data: bytes, chunk: int) -> None:
    """Chunking never changes the verdict, and nothing passes the byte cap undetected."""
    whole, chunked = scan(data, None), scan(data, chunk)
    assert whole == chunked
    if whole == (None, False):
        assert len(data) <= LIMITS.max_header_bytes
