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
"""

from __future__ import annotations

import json
from typing import Any

from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.tlsrpt.model import FailureDetail, Outcome, PolicyType, ReportPolicy, ResultType

MAX_DATAGRAM_BYTES = 65536  # libtlsrpt builds datagrams in memory and sends them whole (UNIX dgram limit ~208 KiB)
DATAGRAM_PROTOCOL_VERSION = "1"

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
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatagramError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise DatagramError("not a JSON object")
    version = message.get("dpv", DATAGRAM_PROTOCOL_VERSION)
    if version != DATAGRAM_PROTOCOL_VERSION:
        raise DatagramError(f"datagram protocol version {version!r}, expected {DATAGRAM_PROTOCOL_VERSION!r}")
    domain = _domain(message.get("d"), "d")
    policies = message.get("policies")
    if not isinstance(policies, list) or not policies:
        raise DatagramError("no policies")
    return [_outcome(policy, domain, now) for policy in policies]


def _outcome(policy: Any, domain: str, now: float) -> Outcome:
    if not isinstance(policy, dict):
        raise DatagramError("policy is not an object")
    policy_type = POLICY_TYPES.get(policy.get("policy-type"))
    if policy_type is None:
        raise DatagramError(f"unknown policy-type {policy.get('policy-type')!r}")
    policy_domain = policy.get("policy-domain")
    report_policy = ReportPolicy(policy_type, domain if policy_domain is None else _domain(policy_domain, "policy-domain"),
                                 _strings(policy.get("policy-string", [])), _strings(policy.get("mx-host", [])))
    details = policy.get("failure-details", [])
    if not isinstance(details, list):
        raise DatagramError("failure-details is not a list")
    final = policy.get("f")
    if final not in (0, 1):
        raise DatagramError(f"final result f={final!r} is neither 0 nor 1")
    return Outcome(now, domain, report_policy, tuple(_detail(d) for d in details), failed=final == 1)


def _detail(detail: Any) -> FailureDetail:
    if not isinstance(detail, dict):
        raise DatagramError("failure detail is not an object")
    result_type = FAILURE_CODES.get(detail.get("c"))
    if result_type is None:
        raise DatagramError(f"unknown failure code {detail.get('c')!r}")
    fields = {name: detail[key] for key, name in _DETAIL_KEYS.items() if isinstance(detail.get(key), str)}
    return FailureDetail(result_type, **fields)


def _domain(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise DatagramError(f"{what} is not a string")
    key = parse_key(value)
    if key.kind is not KeyKind.DOMAIN:
        raise DatagramError(f"{what} {value!r} is not a domain")
    return key.domain


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DatagramError("expected a list of strings")
    return tuple(value)
