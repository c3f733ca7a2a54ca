"""Exim's TLS outcomes: ``event_action`` messages sent over readsocket, or the main log.

Event message (one line, fields in this order; every value but ``data``
is free of spaces, ``data`` runs to the end of the line)::

    tlsrpt-v1 event=$event_name domain=$domain host=$host ip=$host_address
      cipher=$tls_out_cipher cv=$tls_out_certificate_verified dane=$tls_out_dane
      report=<1 for the reporter's own mail, else 0> data=$event_data

Events used: ``msg:delivery`` with a cipher (a TLS session: success),
``tls:fail:connect`` (a failed handshake or certificate check),
``dane:fail`` (``data`` is the RFC 8460 result type Exim names) and
``msg:host:defer`` when the defer says the server offered no TLS.  The
daemon answers one line per event, in order: ``OK`` once the event's
outcome is committed to the spool (on disk: ``synchronous=FULL``), so an
``OK`` survives ``kill -9``; ``ERR reason`` for a line not in this format,
or if the daemon stops before the commit.  An ``OK`` takes up to
``spool_flush_interval_s`` plus one commit (0.2 s by default, well inside
readsocket's 5 s default timeout); while the spool cannot commit (disk
full) no ``OK`` comes and Exim's readsocket times out (for these events
Exim only logs it).

Main log lines (``log_selector = +tls_certificate_verified``)::

    1rAbCd-000123-AB <= a@b.test H=... id=<msgid>
    1rAbCd-000123-AB => u@a.test R=dnslookup T=remote_smtp H=mx.a.test [192.0.2.1] X=TLS1.3:...:256 CV=yes ...
    1rAbCd-000123-AB == u@a.test R=dnslookup T=remote_smtp defer (-37) H=mx.a.test [192.0.2.1]: TLS session: ...

Mail whose Message-ID carries the report marker is never counted.  Pure
parsing here; the socket is :class:`EximEventProtocol`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.tlsrpt.feeds.logtime import line_time
from mtasts_resolver.tlsrpt.feeds.sourceip import SourceFor, source_for
from mtasts_resolver.tlsrpt.model import (FailureDetail, Outcome, PolicyType, ReportPolicy, ResultType,
                                          with_host_report)
from mtasts_resolver.tlsrpt.feeds.postfix_log import REPORT_MESSAGE_ID_MARKER, verify_result_type
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

EVENT_VERSION = "tlsrpt-v1"
EVENT_FIELDS = ("event", "domain", "host", "ip", "cipher", "cv", "dane", "report")
MAX_EVENT_LINE_BYTES = 4096
NO_TLS_OFFERED = ("did not offer TLS", "TLS session is required")

PolicyFor = Callable[[str], ReportPolicy]

_LOG = re.compile(r"(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) (?P<flag><=|=>|->|==) "
                  r"(?P<addr>\S+) (?P<rest>.*)$")
_HOST = re.compile(r" H=(?P<host>\S+) \[(?P<ip>[^\]\s]+)\]")  # bounded by the next space: linear
_CIPHER = re.compile(r" X=(?P<cipher>\S+)")
_CV = re.compile(r" CV=(?P<cv>\w+)")
_MSGID = re.compile(r" id=(?P<id>\S+)")


class EventError(ValueError):
    """Not an event line in the documented format."""


def parse_event(line: str) -> dict[str, str]:
    head, sep, data = line.partition(" data=")
    words = head.split(" ")
    if words[0] != EVENT_VERSION or not sep:
        raise EventError(f"expected '{EVENT_VERSION} ... data=...'")
    fields = dict(word.partition("=")[::2] for word in words[1:])
    if tuple(fields) != EVENT_FIELDS:
        raise EventError(f"expected the fields {', '.join(EVENT_FIELDS)}, data in this order")
    return {**fields, "data": data}


def event_outcomes(event: dict[str, str], now: float, policy_for: PolicyFor,
                   sending_mta_ip: str | SourceFor = "") -> list[Outcome]:
    key = parse_key(event["domain"])
    if event["report"] == "1" or key.kind is not KeyKind.DOMAIN:
        return []
    name, data, domain = event["event"], event["data"], key.domain
    policy = policy_for(domain)
    if (event["dane"] == "yes" or name == "dane:fail") and policy.type is not PolicyType.TLSA:
        policy = ReportPolicy(PolicyType.TLSA, domain)   # Exim used DANE; the records are unknown here
    if name == "msg:delivery":
        return [Outcome(now, domain, policy)] if event["cipher"] else []
    if name == "tls:fail:connect":
        result = verify_result_type(data)
    elif name == "dane:fail":
        result = _result_type(data)
    elif name == "msg:host:defer" and (tls_result := _defer_result(data)) is not None:
        result = tls_result
    else:
        return []
    detail = FailureDetail(result, sending_mta_ip=source_for(sending_mta_ip)(event["ip"]),
                           receiving_mx_hostname=event["host"],
                           receiving_ip=event["ip"], failure_reason_code=data[:256])
    return [Outcome(now, domain, policy, (detail,))]


def _defer_result(text: str) -> ResultType | None:
    """The RFC 8460 result type of a deferral, None when it is not about TLS.

    Exim reports an outgoing certificate failure as a host defer, not as
    ``tls:fail:connect`` (which is for incoming connections), so both the
    event feed and the log feed classify defers here.
    """
    if any(t in text for t in NO_TLS_OFFERED):
        return ResultType.STARTTLS_NOT_SUPPORTED
    if "TLS" in text or "certificate" in text:
        return verify_result_type(text)
    return None


def _result_type(name: str) -> ResultType:
    try:
        return ResultType(name.strip())
    except ValueError:
        return ResultType.VALIDATION_FAILURE


class EximLogCorrelator:
    """Exim main log lines to outcomes (one per delivery or TLS-related defer)."""

    def __init__(self, policy_for: PolicyFor, sending_mta_ip: str | SourceFor = "",
                 host_policy_for: Callable[[str], ReportPolicy | None] = lambda host: None) -> None:
        self._policy_for = policy_for
        self._host_policy_for = host_policy_for
        self._source_for = source_for(sending_mta_ip)
        self._report_mail: set[str] = set()

    def feed(self, line: str, now: float) -> list[Outcome]:
        found = _LOG.search(line)
        if found is None:
            return []
        message_id, flag, rest = found["id"], found["flag"], " " + found["rest"]
        if flag == "<=":
            msgid = _MSGID.search(rest)
            if msgid and REPORT_MESSAGE_ID_MARKER in msgid["id"]:
                self._report_mail.add(message_id)
            return []
        host = _HOST.search(rest)
        key = parse_key(found["addr"].strip("<>").rpartition("@")[2])
        if message_id in self._report_mail or host is None or key.kind is not KeyKind.DOMAIN:
            return []
        now = line_time(line, now)   # dated by the line's own timestamp
        cv = _CV.search(rest)
        policy = self._policy_for(key.domain)
        if cv and cv["cv"] == "dane" and policy.type is not PolicyType.TLSA:
            policy = ReportPolicy(PolicyType.TLSA, key.domain)
        host_policy = self._host_policy_for(host["host"])
        if flag in ("=>", "->"):
            return with_host_report(Outcome(now, key.domain, policy), host_policy) if _CIPHER.search(rest) else []
        text = rest[host.end():].removeprefix(":").strip()
        result = _defer_result(text)
        if result is None:
            return []  # a defer that is not about TLS
        detail = FailureDetail(result, sending_mta_ip=self._source_for(host["ip"]), receiving_mx_hostname=host["host"],
                               receiving_ip=host["ip"], failure_reason_code=text[:256])
        return with_host_report(Outcome(now, key.domain, policy, (detail,)), host_policy)


@implementer(IHalfCloseableProtocol)
class EximEventProtocol(LineOnlyReceiver):
    """One event per line, ``OK`` or ``ERR reason`` back; Exim's readsocket half-closes after sending."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_EVENT_LINE_BYTES
    log = Logger()

    def __init__(self, spool: OutcomeSpool, policy_for: PolicyFor, sending_mta_ip: str | SourceFor, clock) -> None:
        self._spool, self._policy_for, self._sending_mta_ip, self._clock = spool, policy_for, sending_mta_ip, clock
        self._replied: Deferred[None] = succeed(None)   # the previous line's reply: replies go out in order

    def lineReceived(self, line: bytes) -> None:
        try:
            event = parse_event(line.decode("utf-8", "replace").rstrip("\r"))
        except EventError as exc:
            self.log.warn("ignoring an Exim event line: {error}", error=exc)
            self._reply(succeed(None), f"ERR {exc}".encode())
            return
        self._spool.add(event_outcomes(event, self._clock.seconds(), self._policy_for, self._sending_mta_ip))
        self._reply(self._spool.when_committed(), b"OK")

    def _reply(self, ready: Deferred[None], reply: bytes) -> None:
        """Send ``reply`` once ``ready`` fired and every earlier line was answered; ERR if ``ready`` fails."""
        def send(result: object) -> None:
            if isinstance(result, Failure):
                self.sendLine(f"ERR not spooled: {result.getErrorMessage()}".encode())
            else:
                self.sendLine(reply)

        self._replied = self._replied.addCallback(lambda _: ready).addBoth(send)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self._replied.addBoth(lambda _: self.transport.loseConnection())   # after the last answer

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()


class EximEventFactory(Factory):
    def __init__(self, spool: OutcomeSpool, policy_for: PolicyFor, sending_mta_ip: str | SourceFor, clock) -> None:
        self._args = (spool, policy_for, sending_mta_ip, clock)

    def buildProtocol(self, addr) -> EximEventProtocol:
        protocol = EximEventProtocol(*self._args)
        protocol.factory = self
        return protocol
