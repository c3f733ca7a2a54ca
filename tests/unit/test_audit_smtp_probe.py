"""The audit's SMTP dialogue (banner, EHLO, STARTTLS) fed byte by byte, and its one deadline."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mtasts_resolver.audit.facts import SmtpSession, TlsSession
from mtasts_resolver.audit.handshakes import MAX_REPLY_LINES, _Deadline, _SmtpProbe
from mtasts_resolver.audit.tls import ChainCapture

ADDRESS = "192.0.2.25"


class TlsTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.tls = None

    def startTLS(self, creator) -> None:
        self.tls = creator


def dialogue(server: bytes, chunk: int = 1, timeout_s: float = 5.0):
    """Feed ``server``'s bytes in ``chunk``-sized pieces; the results, what the probe wrote, and its transport."""
    clock = Clock()
    probe: _SmtpProbe | None = None
    deadline = _Deadline(clock, timeout_s, lambda: probe.failed("timed out"))
    probe = _SmtpProbe(ADDRESS, "audit.example", ChainCapture("mx.example", ""), deadline)
    transport = TlsTransport()
    probe.makeConnection(transport)
    for i in range(0, len(server), chunk):
        probe.dataReceived(server[i:i + chunk])
    results: list[SmtpSession] = []
    deadline.done.addCallback(results.append)
    return results, transport, clock


BANNER = b"220-mx.example ESMTP\r\n220 second line\r\n"
EHLO_TLS = b"250-mx.example\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"
EHLO_PLAIN = b"250-mx.example\r\n250 8BITMIME\n"   # a bare LF ends a line too


@pytest.mark.parametrize("chunk", [1, 2, 5, 9, 1000])
def test_starttls_offered_and_accepted_starts_tls(chunk):
    results, transport, _ = dialogue(BANNER + EHLO_TLS + b"220 go ahead\r\n", chunk)
    assert transport.value() == b"EHLO audit.example\r\nSTARTTLS\r\n"
    assert transport.tls is not None and results == []   # the handshake decides now


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_no_starttls_is_a_result_not_an_error(chunk):
    results, transport, _ = dialogue(BANNER + EHLO_PLAIN, chunk)
    assert results == [SmtpSession(ADDRESS, starttls=False)]
    assert transport.value().endswith(b"QUIT\r\n")


def test_starttls_in_the_greeting_line_is_not_a_feature():
    results, _, _ = dialogue(BANNER + b"250-STARTTLS.example greets you\r\n250 SIZE 10\r\n")
    assert results == [SmtpSession(ADDRESS, starttls=False)]


@pytest.mark.parametrize("server, expected", [
    (b"554 go away\r\n", SmtpSession(ADDRESS, error="the banner is '554 go away'")),
    (BANNER + b"421 busy\r\n", SmtpSession(ADDRESS, error="EHLO answered '421 busy'")),
    (BANNER + EHLO_TLS + b"454 TLS not available\r\n",
     SmtpSession(ADDRESS, starttls=True, tls=TlsSession(error="STARTTLS answered '454 TLS not available'"))),
    (b"220-x\r\n" * (MAX_REPLY_LINES + 1), SmtpSession(ADDRESS, error=f"a reply of more than {MAX_REPLY_LINES} lines")),
    (b"220 " + b"x" * 5000, SmtpSession(ADDRESS, error="a reply line longer than 4096 bytes")),
])
def test_broken_dialogues(server, expected):
    results, transport, _ = dialogue(server)
    assert results == [expected]
    assert transport.disconnecting


def test_the_deadline_covers_a_silent_server():
    results, transport, clock = dialogue(b"220-hello\r\n", timeout_s=3)
    clock.advance(2.9)
    assert results == []
    clock.advance(0.2)
    assert results == [SmtpSession(ADDRESS, error="timed out")] and transport.disconnecting
