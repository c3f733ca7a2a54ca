"""libtlsrpt's datagram format (Postfix >= 3.10 ``smtp_tlsrpt_socket_name``), parsed to outcomes.

One JSON object per delivery attempt, as libtlsrpt's ``tlsrpt_finish_delivery_request``
writes it (sys4/libtlsrpt, libtlsrpt.c; ``dpv`` since 0.5.0)::

    {"d": "example.com", "pr": "v=TLSRPTv1; rua=...", "dpv": "1",
     "policies": [{"policy-type": 2, "policy-domain": "example.com",
                   "policy-string": ["version: STSv1", ...], "mx-host": ["*.example.com"],
                   "failure-details": [{"c": 202, "s": "192.0.2.1", "n": "mx.example.com",
                                        "h": "helo", "r": "198.51.100.7", "a": "info",
                                        "f": "reason code"}],
                   "t": 1, "f": 1}]}

``d`` is the recipient domain (its ``_smtp._tls`` record is ``pr``), ``t``
the number of failure details, ``f`` the policy's final result (0 success,
1 failure).  Policy types and failure codes are libtlsrpt's ``tlsrpt.h``
enums.  Pure functions: no I/O.

Total: any bytes give outcomes or :class:`DatagramError`, in time linear in
their length.  Numbers must be JSON integers (a list or an object where a
code belongs is an error, not a crash), nesting deeper than the JSON parser's
recursion limit is an error, and every string kept must be valid Unicode (a
lone surrogate such as ``"\\ud800"`` cannot be stored as UTF-8: it would make
the spool's commit fail for every other outcome of its batch).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, TypeVar

from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.tlsrpt.model import FailureDetail, Outcome, PolicyType, ReportPolicy, ResultType

MAX_DATAGRAM_BYTES = 65536  # libtlsrpt builds datagrams in memory and sends them whole (UNIX dgram limit ~208 KiB)
DATAGRAM_PROTOCOL_VERSION = "1"
MAX_SHOWN_CHARS = 40  # of a bad value in an error message

_T = TypeVar("_T")

POLICY_TYPES = {1: PolicyType.TLSA, 2: PolicyType.STS, 9: PolicyType.NO_POLICY_FOUND}

FAILURE_CODES = {
    201: ResultType.STARTTLS_NOT_SUPPORTED,
    202: ResultType.CERTIFICATE_HOST_MISMATCH,
    203: ResultType.CERTIFICATE_NOT_TRUSTED,
    204: ResultType.CERTIFICATE_EXPIRED,
    205: ResultType.VALIDATION_FAILURE,
    301: ResultType.STS_POLICY_FETCH_ERROR,
    302: ResultType.STS_POLICY_INVALID,
    303: ResultType.STS_WEBPKI_INVALID,
    304: ResultType.TLSA_INVALID,
    305: ResultType.DNSSEC_INVALID,
    306: ResultType.DANE_REQUIRED,
}

_DETAIL_KEYS = {"s": "sending_mta_ip", "n": "receiving_mx_hostname", "h": "receiving_mx_helo",
                "r": "receiving_ip", "a": "additional_information", "f": "failure_reason_code"}


class DatagramError(ValueError):
    """Not a libtlsrpt datagram we can count."""


def parse_datagram(data: bytes, now: float) -> list[Outcome]:
    """The outcomes of one datagram (one per policy in it)."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise DatagramError(f"longer than {MAX_DATAGRAM_BYTES} bytes")
    try:
        message = json.loads(data)
    except ValueError as exc:  # bad UTF-8, bad JSON, an integer past sys.get_int_max_str_digits()
        raise DatagramError(f"not JSON: {exc}") from None
    except RecursionError:
        raise DatagramError("not JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise DatagramError("not a JSON object")
    version = message.get("dpv", DATAGRAM_PROTOCOL_VERSION)
    if version != DATAGRAM_PROTOCOL_VERSION:
        raise DatagramError(f"datagram protocol version {_shown(version)}, expected {DATAGRAM_PROTOCOL_VERSION!r}")
    domain = _domain(message.get("d"), "d")
    policies = message.get("policies")
    if not isinstance(policies, list) or not policies:
        raise DatagramError("no policies")
    return [outcome for policy in policies for outcome in _outcomes(policy, domain, now)]


def _outcomes(policy: Any, domain: str, now: float) -> list[Outcome]:
    """One outcome for the recipient domain's report; a DANE policy whose policy-domain is the MX host
    (the TLSA base domain, as Postfix >= 3.10 names it) also gives one for the MX host's own report.

    Both ways (RFC 8460 §1.3, mox's "host TLSRPT"): the recipient domain's
    report carries the session under ``tlsa`` with policy-domain = the
    recipient domain, and the MX host's report (sent only if it publishes
    ``_smtp._tls``) carries it with policy-domain = the MX host.  So such a
    session is counted once in each of the two reports, never twice in one.
    """
    outcome = _outcome(policy, domain, now)
    base = outcome.policy.domain
    if outcome.policy.type is not PolicyType.TLSA or base == domain:
        return [outcome]
    recipient = replace(outcome, policy=replace(outcome.policy, domain=domain))
    return [recipient, replace(outcome, report_domain=base)]


def _outcome(policy: Any, domain: str, now: float) -> Outcome:
    if not isinstance(policy, dict):
        raise DatagramError("policy is not an object")
    policy_type = _code(policy.get("policy-type"), POLICY_TYPES, "policy-type")
    policy_domain = policy.get("policy-domain")
    report_policy = ReportPolicy(policy_type, domain if policy_domain is None else _domain(policy_domain, "policy-domain"),
                                 _strings(policy.get("policy-string", [])), _strings(policy.get("mx-host", [])))
    details = policy.get("failure-details", [])
    if not isinstance(details, list):
        raise DatagramError("failure-details is not a list")
    final = _code(policy.get("f"), {0: False, 1: True}, "final result f")
    return Outcome(now, domain, report_policy, tuple(_detail(d) for d in details), failed=final)


def _detail(detail: Any) -> FailureDetail:
    if not isinstance(detail, dict):
        raise DatagramError("failure detail is not an object")
    result_type = _code(detail.get("c"), FAILURE_CODES, "failure code")
    fields = {name: _text(detail[key], name) for key, name in _DETAIL_KEYS.items() if isinstance(detail.get(key), str)}
    return FailureDetail(result_type, **fields)


def _code(value: Any, table: dict[int, _T], what: str) -> _T:
    """A libtlsrpt enum value: a JSON integer (not a bool, float, list...) that ``table`` knows."""
    found = table.get(value) if type(value) is int else None
    if found is None:
        raise DatagramError(f"unknown {what} {_shown(value)}")
    return found


def _text(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DatagramError(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def _shown(value: Any) -> str:
    """A value for an error message, cut short (a datagram may be 64 KiB of one array)."""
    text = repr(value) if isinstance(value, (int, float, str, bool)) or value is None else type(value).__name__
    return text[:MAX_SHOWN_CHARS]


def _domain(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise DatagramError(f"{what} is not a string")
    key = parse_key(value)
    if key.kind is not KeyKind.DOMAIN:
        raise DatagramError(f"{what} {_shown(value)} is not a domain")
    return key.domain


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DatagramError("expected a list of strings")
    return tuple(_text(item, "policy-string or mx-host") for item in value)
