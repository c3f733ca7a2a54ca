"""Postfix 3.7-3.9 log lines to session outcomes (Postfix >= 3.10 has libtlsrpt datagrams).

smtp(8) logs a session's TLS result before the delivery status of each
recipient, on the same ``smtp[pid]``::

    postfix/smtp[28481]: Verified TLS connection established to mx.a.test[192.0.2.10]:25: TLSv1.3 ...
    postfix/smtp[28481]: D145721658C: to=<u@a.test>, relay=mx.a.test[192.0.2.10]:25, ..., status=sent (250 ok)

    postfix/smtp[28485]: server certificate verification failed for mx.b.test[192.0.2.11]:25: num=62:hostname mismatch
    postfix/smtp[28485]: Untrusted TLS connection established to mx.b.test[192.0.2.11]:25: TLSv1.3 ...
    postfix/smtp[28485]: D2A6421658B: to=<u@b.test>, relay=mx.b.test[...]:25, ..., status=deferred (Server certificate not verified)

    postfix/smtp[28491]: D55C721658F: to=<u@c.test>, relay=..., status=deferred (TLS is required, but was not offered by host ...)

(Postfix 3.7.11, ``smtp_tls_loglevel = 1``.)  :class:`PostfixLogCorrelator`
keeps the TLS result per smtp pid and counts one session at the first
status line of a (pid, queue id, relay).  The policy domain is the
recipient's domain and the policy the one the daemon applies to it; the
session is dated by the line's own timestamp (:mod:`logtime`).  Mail
whose Message-ID carries the report marker (``cleanup[pid]: QID:
message-id=<...>``) is the reporter's own and is never counted.  Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.tlsrpt.feeds.logtime import line_time
from mtasts_resolver.tlsrpt.feeds.sourceip import SourceFor, source_for
from mtasts_resolver.tlsrpt.model import (FailureDetail, Outcome, PolicyType, ReportPolicy, ResultType,
                                          with_host_report)

REPORT_MESSAGE_ID_MARKER = ".tlsrpt@"  # every report's Message-ID has it (see report.py)

_LINE = re.compile(r"/(?P<daemon>smtp|lmtp|cleanup|qmgr)\[(?P<pid>\d+)\]: (?P<message>.*)$")
_TLS = re.compile(r"(?P<trust>Verified|Trusted|Untrusted|Anonymous) TLS connection established to "
                  r"(?P<host>[^\[\s]+)\[(?P<ip>[^\]\s]+)\]")
_VERIFY_FAILED = re.compile(r"(?:server )?certificate verification failed for (?P<host>[^\[\s]+)\[(?P<ip>[^\]\s]+)\]"
                            r"(?::\d+)?: (?P<reason>.*)$")
# Every pattern is anchored or starts with a literal and has no unbounded group
# followed by more pattern that can fail at the end of a long line: each line
# is parsed in time linear in its length (the status text is found with str.find).
_STATUS_HEAD = re.compile(r"(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?"
                          r"relay=(?P<host>[^\[\s,]+)(?:\[(?P<ip>[^\]\s]+)\](?::\d+)?)?, ")
_STATUS_WORD = re.compile(r"status=\w+ \(")
_MESSAGE_ID = re.compile(r"(?P<qid>[0-9A-Za-z]+): message-id=(?P<id>.*)$")
_REMOVED = re.compile(r"(?P<qid>[0-9A-Za-z]+): removed$")

STARTTLS_MISSING = "TLS is required, but was not offered"
NOT_VERIFIED = "Server certificate not verified"

#: Verification failure texts (OpenSSL's, as Postfix logs them) to RFC 8460 result types, first match wins.
REASONS: tuple[tuple[str, ResultType], ...] = (
    ("hostname mismatch", ResultType.CERTIFICATE_HOST_MISMATCH),
    ("name mismatch", ResultType.CERTIFICATE_HOST_MISMATCH),
    ("expired", ResultType.CERTIFICATE_EXPIRED),
    ("self-signed", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("self signed", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("issuer", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("untrusted", ResultType.CERTIFICATE_NOT_TRUSTED),
    ("unable to verify", ResultType.CERTIFICATE_NOT_TRUSTED),
)


def _status_text(message: str, start: int) -> str | None:
    """The text in ``status=WORD (TEXT)``: the first ``status=`` after the relay (the text is the
    remote's reply and may contain anything, so it is the one field not found by pattern)."""
    at = message.find("status=", start)
    word = _STATUS_WORD.match(message, at) if at >= 0 else None
    if word is None or not message.endswith(")"):
        return None
    return message[word.end():-1]


def verify_result_type(reason: str) -> ResultType:
    lowered = reason.lower()
    for text, result_type in REASONS:
        if text in lowered:
            return result_type
    return ResultType.VALIDATION_FAILURE


@dataclass
class _Session:
    host: str
    ip: str
    trust: str = ""           # Verified | Trusted | Untrusted | Anonymous, "" before TLS
    verify_error: str = ""


class PostfixLogCorrelator:
    """Feed it log lines in order; it returns the outcomes they complete."""

    def __init__(self, policy_for: Callable[[str], ReportPolicy], sending_mta_ip: str | SourceFor = "",
                 host_policy_for: Callable[[str], ReportPolicy | None] = lambda host: None) -> None:
        self._policy_for = policy_for
        self._host_policy_for = host_policy_for
        self._source_for = source_for(sending_mta_ip)
        self._sessions: dict[str, _Session] = {}
        self._counted: dict[str, tuple[str, str]] = {}   # pid -> (qid, relay) already counted
        self._report_mail: set[str] = set()

    def feed(self, line: str, now: float) -> list[Outcome]:
        match = _LINE.search(line)
        if match is None:
            return []
        daemon, pid, message = match["daemon"], match["pid"], match["message"]
        if daemon == "cleanup":
            found = _MESSAGE_ID.match(message)
            if found and REPORT_MESSAGE_ID_MARKER in found["id"]:
                self._report_mail.add(found["qid"])
            return []
        if daemon == "qmgr":
            found = _REMOVED.match(message)
            if found:
                self._report_mail.discard(found["qid"])
            return []
        return self._smtp(pid, message, line_time(line, now))

    def _smtp(self, pid: str, message: str, now: float) -> list[Outcome]:
        if (found := _VERIFY_FAILED.search(message)) is not None:
            session = self._session(pid, found["host"], found["ip"])
            session.verify_error = session.verify_error or found["reason"]
            return []
        if (found := _TLS.match(message)) is not None:
            self._session(pid, found["host"], found["ip"]).trust = found["trust"]
            return []
        found = _STATUS_HEAD.match(message)
        if found is None or found["ip"] is None:
            return []  # relay=none: no session (DNS, connection refused: transient, RFC 8460 §4.3.2.3)
        text = _status_text(message, found.end())
        if text is None:
            return []
        relay = f"{found['host']}[{found['ip']}]"
        if self._counted.get(pid) == (found["qid"], relay):
            return []  # another recipient of the same session
        self._counted[pid] = (found["qid"], relay)
        session = self._sessions.pop(pid, None)
        if session is not None and (session.host, session.ip) != (found["host"], found["ip"]):
            session = None
        if found["qid"] in self._report_mail:
            return []
        key = parse_key(found["rcpt"].rpartition("@")[2])
        if key.kind is not KeyKind.DOMAIN:
            return []
        policy = self._policy_for(key.domain)
        failure = self._failure(text, session, policy)
        if failure is None and (session is None or not session.trust):
            return []  # plaintext without a policy: not a TLS session to report
        failures = () if failure is None else (FailureDetail(
            failure[0], sending_mta_ip=self._source_for(found["ip"]), receiving_mx_hostname=found["host"],
            receiving_ip=found["ip"], failure_reason_code=failure[1]),)
        return with_host_report(Outcome(now, key.domain, policy, failures), self._host_policy_for(found["host"]))

    def _failure(self, text: str, session: _Session | None,
                 policy: ReportPolicy) -> tuple[ResultType, str] | None:
        if STARTTLS_MISSING in text:
            return ResultType.STARTTLS_NOT_SUPPORTED, text
        if policy.type is PolicyType.NO_POLICY_FOUND:
            return None  # opportunistic TLS: nothing to violate
        if session is not None and session.verify_error:
            return verify_result_type(session.verify_error), session.verify_error
        if NOT_VERIFIED in text:
            return ResultType.CERTIFICATE_NOT_TRUSTED, text
        return None  # verified, or not a TLS failure (the MX said no or went away)

    def _session(self, pid: str, host: str, ip: str) -> _Session:
        session = self._sessions.get(pid)
        if session is None or (session.host, session.ip) != (host, ip):
            session = self._sessions[pid] = _Session(host, ip)
        return session
