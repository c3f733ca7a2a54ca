"""The two connections the audit makes: STARTTLS on an MX's port 25, and TLS to the policy host.

Both stop at the handshake: the SMTP dialogue is the banner, ``EHLO``,
``STARTTLS`` and ``QUIT`` (no mail is ever sent), the policy host is left
once its chain is seen (the policy itself comes from the daemon's own
fetcher).  Each connection has one deadline for all of it and never fails:
what went wrong is the result (:class:`~.facts.SmtpSession`,
:class:`~.facts.TlsSession`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import IHandshakeListener, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from mtasts_resolver.audit.facts import SmtpSession, TlsSession
from mtasts_resolver.audit.tls import ChainCapture
from mtasts_resolver.policy.dane import SMTP_PORT

HTTPS_PORT = 443            # RFC 8461 §3.3: the policy host
MAX_REPLY_LINES = 100       # of one multi-line SMTP reply; a server sending more is not worth reading
MAX_LINE_BYTES = 4096       # RFC 5321 §4.5.3.1.5 allows 512; some servers are generous


class _Deadline:
    """Ends a probe with ``result`` once: when it is known, or when ``timeout_s`` runs out first."""

    def __init__(self, reactor: IReactorTime, timeout_s: float, on_timeout: Callable[[], object]) -> None:
        self.done: Deferred = Deferred()
        self._timer = reactor.callLater(timeout_s, self._expired, on_timeout)
        self.transport = None

    def finish(self, result: object) -> None:
        if self.done.called:
            return
        if self._timer.active():
            self._timer.cancel()
        if self.transport is not None:
            self.transport.loseConnection()
        self.done.callback(result)

    def _expired(self, on_timeout: Callable[[], object]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()   # a server that stalls gets no polite goodbye
        self.finish(on_timeout())


@implementer(IHandshakeListener)
class _SmtpProbe(LineReceiver):
    delimiter = b"\n"   # CRLF, and a bare LF from a sloppy server too
    MAX_LENGTH = MAX_LINE_BYTES

    def __init__(self, address: str, helo: str, capture: ChainCapture, deadline: _Deadline) -> None:
        self._address, self._helo, self._capture, self._deadline = address, helo, capture, deadline
        self._state = "banner"
        self._lines: list[bytes] = []

    def connectionMade(self) -> None:
        self._deadline.transport = self.transport

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        self._lines.append(line)
        if len(self._lines) > MAX_REPLY_LINES:
            self.fail(f"a reply of more than {MAX_REPLY_LINES} lines")
        elif line[3:4] != b"-":
            lines, self._lines = self._lines, []
            self._reply(line[:3], [part[4:].decode("ascii", "replace") for part in lines])

    def lineLengthExceeded(self, line: bytes) -> None:
        self.fail(f"a reply line longer than {MAX_LINE_BYTES} bytes")

    def _reply(self, code: bytes, text: list[str]) -> None:
        said = f"{code.decode('ascii', 'replace')} {' / '.join(text)}"[:200]
        if self._state == "banner":
            if code != b"220":
                self.fail(f"the banner is {said!r}")
                return
            self._send(f"EHLO {self._helo}", "ehlo")
        elif self._state == "ehlo":
            if code != b"250":
                self.fail(f"EHLO answered {said!r}")
            elif not any(feature.split(" ", 1)[0].upper() == "STARTTLS" for feature in text[1:]):
                self._send("QUIT", "quit")
                self._deadline.finish(SmtpSession(self._address, starttls=False))
            else:
                self._send("STARTTLS", "starttls")
        elif self._state == "starttls":
            if code != b"220":
                self.fail(f"STARTTLS answered {said!r}")
                return
            self._state = "tls"
            self.transport.startTLS(self._capture)

    def _send(self, command: str, state: str) -> None:
        self._state = state
        self.transport.write(command.encode("ascii") + b"\r\n")

    def handshakeCompleted(self) -> None:
        session = self._capture.session()
        self._send("QUIT", "quit")
        self._deadline.finish(SmtpSession(self._address, starttls=True, tls=session))

    def connectionLost(self, reason: Failure = None) -> None:
        self.fail(f"the connection was closed ({reason.getErrorMessage() if reason else 'no reason'})")

    def fail(self, problem: str) -> None:
        self._deadline.finish(self.failed(problem))

    def failed(self, problem: str) -> SmtpSession:
        """The session as far as it got: STARTTLS offered, then ``problem`` in its TLS, or before it."""
        if self._state in ("starttls", "tls"):
            return SmtpSession(self._address, starttls=True, tls=TlsSession(error=problem))
        return SmtpSession(self._address, error=problem)


def smtp_session(reactor: IReactorTCP & IReactorTime, address: str, host: str, helo: str, ca_file: str,
                 timeout_s: float) -> Deferred[SmtpSession]:
    """Port 25 of ``address`` (an MX address of ``host``): banner, EHLO, STARTTLS and its handshake."""
    probe: _SmtpProbe | None = None
    deadline = _Deadline(reactor, timeout_s,
                         lambda: probe.failed(f"no complete SMTP dialogue within {timeout_s:g} s"))
    probe = _SmtpProbe(address, helo, ChainCapture(host, ca_file), deadline)
    kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
    connecting = connectProtocol(kind(reactor, address, SMTP_PORT, timeout=timeout_s), probe)
    connecting.addErrback(lambda failure: deadline.finish(
        SmtpSession(address, error=f"cannot connect: {failure.getErrorMessage()}")))
    deadline.done.addBoth(_cancel(connecting))
    return deadline.done


@implementer(IHandshakeListener)
class _TlsProbe(Protocol):
    def __init__(self, capture: ChainCapture, deadline: _Deadline) -> None:
        self._capture, self._deadline = capture, deadline

    def connectionMade(self) -> None:
        self._deadline.transport = self.transport

    def handshakeCompleted(self) -> None:
        self._deadline.finish(self._capture.session())

    def connectionLost(self, reason: Failure = None) -> None:
        self._deadline.finish(TlsSession(error=f"the TLS handshake failed ({reason.getErrorMessage()})"))


def tls_session(reactor: IReactorTCP & IReactorTime, host: str, ca_file: str, timeout_s: float) -> Deferred[TlsSession]:
    """The chain ``host`` presents on port 443 (resolved by the reactor's name resolver: the configured DNS)."""
    deadline = _Deadline(reactor, timeout_s, lambda: TlsSession(error=f"no TLS handshake within {timeout_s:g} s"))
    capture = ChainCapture(host, ca_file)
    endpoint = wrapClientTLS(capture, HostnameEndpoint(reactor, host, HTTPS_PORT, timeout=timeout_s))
    connecting = connectProtocol(endpoint, _TlsProbe(capture, deadline))
    connecting.addErrback(lambda failure: deadline.finish(
        TlsSession(error=f"cannot connect: {failure.getErrorMessage()}")))
    deadline.done.addBoth(_cancel(connecting))
    return deadline.done


def _cancel(connecting: Deferred) -> Callable[[object], object]:
    """Stop a connection attempt still under way when the probe ends (its deadline ran out)."""
    def cancel(result: object) -> object:
        if not connecting.called:
            connecting.addErrback(lambda _: None)
            connecting.cancel()
        return result
    return cancel
