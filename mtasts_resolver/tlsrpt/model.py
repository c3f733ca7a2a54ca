"""RFC 8460 vocabulary: result and policy types, and one session outcome.

Every feed (the daemon's own resolutions, libtlsrpt datagrams, the Postfix
log, Exim events) turns what it saw into :class:`Outcome` values; the spool
counts them per (UTC day, report domain, policy, failure) and the reporter
turns the counts into the report's JSON.  The policy and failure objects are
already in the report's JSON shape, so nothing is mapped twice.
"""

from __future__ import annotations

import datetime
import enum
import json
from dataclasses import dataclass
from typing import Any

from mtasts_resolver.policy.model import StsPolicy


class ResultType(enum.Enum):
    """RFC 8460 §4.3 result types."""

    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


class PolicyType(enum.Enum):
    """RFC 8460 §4.4 policy-type."""

    TLSA = "tlsa"
    STS = "sts"
    NO_POLICY_FOUND = "no-policy-found"


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """The ``policy`` object of a report entry; ``domain`` is an A-label."""

    type: PolicyType
    domain: str
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"policy-type": self.type.value, "policy-domain": self.domain}
        if self.type is not PolicyType.NO_POLICY_FOUND:
            data["policy-string"] = list(self.strings)
        if self.mx_hosts:
            data["mx-host"] = list(self.mx_hosts)
        return data


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One ``failure-details`` entry without its count; empty strings are left out of the JSON."""

    result_type: ResultType
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    additional_information: str = ""
    failure_reason_code: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"result-type": self.result_type.value}
        for key, value in (("sending-mta-ip", self.sending_mta_ip),
                           ("receiving-mx-hostname", self.receiving_mx_hostname),
                           ("receiving-mx-helo", self.receiving_mx_helo),
                           ("receiving-ip", self.receiving_ip),
                           ("additional-information", self.additional_information),
                           ("failure-reason-code", self.failure_reason_code)):
            if value:
                data[key] = value
        return data


class CountKind(enum.Enum):
    """What a spool counter counts: sessions for the summary, or one failure-details entry."""

    SUCCESS = "success"
    FAILURE = "failure"
    DETAIL = "detail"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One session under one policy (or one policy discovery), as a report counts it.

    ``report_domain`` is the domain whose ``_smtp._tls`` record receives the
    report.  A session is a failure when it has failure details, unless
    ``failed`` says otherwise: libtlsrpt reports the final result apart from
    the details (one MX failed, the next one worked).  RFC 8460 §4 counts each
    session once in the summary and each detail under its own result type.
    """

    at: float
    report_domain: str
    policy: ReportPolicy
    failures: tuple[FailureDetail, ...] = ()
    failed: bool | None = None

    def keys(self) -> list[tuple[str, str, str, str, str]]:
        """Spool counter keys: (UTC day, report domain, policy JSON, kind, failure JSON or '')."""
        day, policy = utc_day(self.at), canonical_json(self.policy.to_json())
        failed = bool(self.failures) if self.failed is None else self.failed
        summary = CountKind.FAILURE if failed else CountKind.SUCCESS
        keys = [(day, self.report_domain, policy, summary.value, "")]
        keys += [(day, self.report_domain, policy, CountKind.DETAIL.value, canonical_json(f.to_json()))
                 for f in self.failures]
        return keys


#: Store key of an MX host's own DANE policy (a ':' cannot occur in a domain, so no recipient domain collides).
HOST_POLICY_PREFIX = "mx:"


def with_host_report(outcome: Outcome, host_policy: ReportPolicy | None) -> list[Outcome]:
    """``outcome``, and when DANE applied to the MX host under its own TLSA base domain, the same session
    for that host's own report (RFC 8460 §1.3; sent only if the host publishes ``_smtp._tls``)."""
    if (outcome.policy.type is not PolicyType.TLSA or host_policy is None or host_policy.type is not PolicyType.TLSA
            or host_policy.domain == outcome.report_domain):
        return [outcome]
    return [outcome, Outcome(outcome.at, host_policy.domain, host_policy, outcome.failures, outcome.failed)]


def report_policy_from_json(text: str) -> ReportPolicy | None:
    """A :meth:`ReportPolicy.to_json` object read back (from the store), None if it is not one."""
    try:
        data = json.loads(text)
        return ReportPolicy(PolicyType(data["policy-type"]), str(data["policy-domain"]),
                            tuple(str(s) for s in data.get("policy-string", ())),
                            tuple(str(m) for m in data.get("mx-host", ())))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def sts_report_policy(domain: str, policy: StsPolicy | None) -> ReportPolicy:
    """An MTA-STS policy in RFC 8460 form: its own lines as policy-string, its mx patterns as mx-host."""
    if policy is None:
        return ReportPolicy(PolicyType.STS, domain)
    return ReportPolicy(PolicyType.STS, domain, policy.lines, policy.mx)


def utc_day(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%d")


def day_bounds(day: str) -> tuple[int, int]:
    """Seconds since the epoch of 00:00 UTC of ``day`` and of the next day."""
    start = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
    begin = int(start.timestamp())
    return begin, begin + 86400


def canonical_json(data: Any) -> str:
    """Sorted keys, no spaces: equal objects give equal strings (the spool's counter key)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
