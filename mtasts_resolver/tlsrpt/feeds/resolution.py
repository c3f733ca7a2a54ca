"""The daemon's own outcomes: policy discovery failures, from ``PolicyService``'s resolution hook.

MTA-STS: only failures of a policy the domain announced count: a
``_mta-sts`` TXT record was found (so a policy exists) and fetching or
parsing it failed.  The policy-string is the cached policy still applied,
if any (RFC 8461 §5.1), else empty; the result type is the failure's own
(``FailureType`` values are RFC 8460 result types).

DANE: DNSSEC data that could not be validated (the domain's verdict is a
temporary failure, or an MX host's lookups failed) is ``dnssec-invalid``;
an MX host whose TLSA RRset has no usable record is ``tlsa-invalid``, with
the records as policy-string and the TLSA base as policy-domain.

Successful resolutions are not sessions and are not counted: the MTA's
feeds count the sessions.  Every resolution (in every worker) records the
policy now in force for its domain in the store (:func:`policy_in_force`):
``tlsa`` with the TLSA records when DANE applies, else the MTA-STS policy
applied, else ``no-policy-found``; and for each MX host DANE applied to,
the host's own ``tlsa`` policy (policy-domain = its TLSA base) under
``mx:HOST``.  The log feeds, which see only sessions, report each under
the domain's policy, and a DANE session once more in the host's report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult, HostStatus
from mtasts_resolver.policy.model import CachedPolicy, NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.model import Mode
from mtasts_resolver.tlsrpt.model import (HOST_POLICY_PREFIX, FailureDetail, Outcome, PolicyType, ReportPolicy,
                                          ResultType, canonical_json, sts_report_policy)


MAX_REASON_CHARS = 256


class Resolution(Protocol):
    """What this feed reads of ``service.Resolution`` (tlsrpt never imports the service: arrows point down)."""

    @property
    def domain(self) -> str: ...
    @property
    def txt(self) -> StsTxt | NoStsTxt | StsFailure: ...
    @property
    def fetched(self) -> StsPolicy | StsFailure | None: ...
    @property
    def policy(self) -> CachedPolicy | None: ...
    @property
    def dane(self) -> DaneResult | None: ...


def resolution_outcomes(resolution: Resolution, now: float) -> list[Outcome]:
    return _sts_outcomes(resolution, now) + _dane_outcomes(resolution, now)


def _sts_outcomes(resolution: Resolution, now: float) -> list[Outcome]:
    if not isinstance(resolution.txt, StsTxt) or not isinstance(resolution.fetched, StsFailure):
        return []
    failure = resolution.fetched
    applied = resolution.policy.policy if resolution.policy is not None else None
    detail = FailureDetail(ResultType(failure.type.value), failure_reason_code=failure.detail[:MAX_REASON_CHARS])
    return [Outcome(now, resolution.domain, sts_report_policy(resolution.domain, applied), (detail,))]


def _dane_outcomes(resolution: Resolution, now: float) -> list[Outcome]:
    dane, domain = resolution.dane, resolution.domain
    if dane is None:
        return []
    if dane.outcome is DaneOutcome.TEMP:
        detail = FailureDetail(ResultType.DNSSEC_INVALID, failure_reason_code=dane.reason[:MAX_REASON_CHARS])
        return [Outcome(now, domain, ReportPolicy(PolicyType.TLSA, domain), (detail,))]
    outcomes = []
    for host in dane.hosts:
        if host.status is HostStatus.UNUSABLE:
            result = ResultType.TLSA_INVALID
        elif host.status is HostStatus.FAILED:
            result = ResultType.DNSSEC_INVALID
        else:
            continue
        policy = ReportPolicy(PolicyType.TLSA, host.tlsa_base or host.name, tuple(str(r) for r in host.tlsa))
        detail = FailureDetail(result, receiving_mx_hostname=host.name, failure_reason_code=host.detail[:MAX_REASON_CHARS])
        outcomes.append(Outcome(now, domain, policy, (detail,)))
    return outcomes


def policy_in_force(resolution: Resolution) -> ReportPolicy:
    """The policy the daemon applies to the domain after ``resolution``, in RFC 8460 form."""
    dane, domain = resolution.dane, resolution.domain
    if dane is not None and dane.applies:
        records = dict.fromkeys(str(r) for host in dane.hosts if host.dane for r in host.tlsa)
        return ReportPolicy(PolicyType.TLSA, domain, tuple(records))
    cached = resolution.policy
    if cached is not None and cached.policy.mode is not Mode.NONE:
        return sts_report_policy(domain, cached.policy)
    return ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)


def resolution_sink(add: Callable[..., None], clock: Callable[[], float]) -> Callable[[Resolution], None]:
    """The ``on_resolution`` hook: outcomes and the policy in force to ``add`` (the spool's), never raising
    into the service."""
    def on_resolution(resolution: Resolution) -> None:
        outcomes = resolution_outcomes(resolution, clock())
        policies = [(resolution.domain, policy_in_force(resolution))]
        if resolution.dane is not None and resolution.dane.applies:
            policies += [(HOST_POLICY_PREFIX + host.name, ReportPolicy(PolicyType.TLSA, host.tlsa_base or host.name,
                                                                        tuple(str(r) for r in host.tlsa)))
                         for host in resolution.dane.hosts if host.dane]
        add(outcomes, policies=[(key, canonical_json(policy.to_json())) for key, policy in policies])
    return on_resolution
