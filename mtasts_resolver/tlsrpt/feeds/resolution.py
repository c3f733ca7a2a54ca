"""The daemon's own outcomes: policy discovery failures, from ``PolicyService``'s resolution hook.

MTA-STS: only failures of a policy the domain announced count: a
``_mta-sts`` TXT record was found (so a policy exists) and fetching or
parsing it failed.  The result type is the failure's own (``FailureType``
values are RFC 8460 result types).

DANE: DNSSEC data that could not be validated (the domain's verdict is a
temporary failure, or an MX host's lookups failed) is ``dnssec-invalid``;
an MX host whose TLSA RRset has no usable record is ``tlsa-invalid``, with
the records as policy-string and the TLSA base as policy-domain.

policy-string (RFC 8460 §4.4: "an encoding of the applied policy", the
TLSA records or the MTA-STS policy's lines).  After a failed fetch the
policy applied is the cached one, if any (RFC 8461 §5.1), and that is what
is reported.  With nothing cached no policy applied, and the fetched body
is not kept (a failure carries its reason only), so the policy-string is
what the sender knew of the policy: the ``_mta-sts`` TXT record, whose
``id`` tells the domain which of its deployments failed.  An empty array
(what some senders send) tells the domain nothing, and a strict
receiver's schema wants the field for ``sts``.  A DANE failure lists the
TLSA records the lookups returned; it is empty only when DNS gave none at
all (the domain's MX lookup failed): inventing one would mislead.

sending-mta-ip (RFC 8460 §4.3, the address the sending MTA uses): no
session was made, so it is the configured ``sending_mta_ip``, else the
kernel's route source towards the MX host's address when the DANE walk
found one, else towards the Internet (:mod:`sourceip`): the daemon runs
on the MTA's host, and these are the addresses its connections would use.

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

from collections.abc import Callable, Iterable
from typing import Protocol

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult, HostResult, HostStatus
from mtasts_resolver.policy.model import CachedPolicy, NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.model import Mode
from mtasts_resolver.tlsrpt.model import (HOST_POLICY_PREFIX, FailureDetail, Outcome, PolicyType, ReportPolicy,
                                          ResultType, canonical_json, sts_report_policy)
from mtasts_resolver.tlsrpt.feeds.sourceip import RouteSource


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


def resolution_outcomes(resolution: Resolution, now: float, source: RouteSource) -> list[Outcome]:
    return _sts_outcomes(resolution, now, source) + _dane_outcomes(resolution, now, source)


def _sts_outcomes(resolution: Resolution, now: float, source: RouteSource) -> list[Outcome]:
    txt, failure, domain = resolution.txt, resolution.fetched, resolution.domain
    if not isinstance(txt, StsTxt) or not isinstance(failure, StsFailure):
        return []
    policy = (sts_report_policy(domain, resolution.policy.policy) if resolution.policy is not None
              else ReportPolicy(PolicyType.STS, domain, (txt.record,)))
    detail = FailureDetail(ResultType(failure.type.value), sending_mta_ip=source.towards_internet(),
                           failure_reason_code=failure.detail[:MAX_REASON_CHARS])
    return [Outcome(now, domain, policy, (detail,))]


#: The MX host results that are failures, as RFC 8460 result types (the reports and the metrics count them so).
HOST_RESULT_TYPES = {HostStatus.UNUSABLE: ResultType.TLSA_INVALID, HostStatus.FAILED: ResultType.DNSSEC_INVALID}


def _dane_outcomes(resolution: Resolution, now: float, source: RouteSource) -> list[Outcome]:
    dane, domain = resolution.dane, resolution.domain
    if dane is None:
        return []
    if dane.outcome is DaneOutcome.TEMP:
        detail = FailureDetail(ResultType.DNSSEC_INVALID, sending_mta_ip=source.towards_internet(),
                               failure_reason_code=dane.reason[:MAX_REASON_CHARS])
        return [Outcome(now, domain, ReportPolicy(PolicyType.TLSA, domain, _records(dane.hosts)), (detail,))]
    outcomes = []
    for host in dane.hosts:
        result = HOST_RESULT_TYPES.get(host.status)
        if result is None:
            continue
        detail = FailureDetail(result, sending_mta_ip=source(_address(host)) or source.towards_internet(),
                               receiving_mx_hostname=host.name, failure_reason_code=host.detail[:MAX_REASON_CHARS])
        outcomes.append(Outcome(now, domain, _host_policy(host), (detail,)))
    return outcomes


def _records(hosts: Iterable[HostResult]) -> tuple[str, ...]:
    """The TLSA records of ``hosts``, each once, in the order found."""
    return tuple(dict.fromkeys(str(r) for host in hosts for r in host.tlsa))


def _host_policy(host: HostResult) -> ReportPolicy:
    """An MX host's own DANE policy: its records under its TLSA base domain."""
    return ReportPolicy(PolicyType.TLSA, host.tlsa_base or host.name, _records((host,)))


def _address(host: HostResult) -> str:
    """The first address the DANE walk found for ``host``, "" if none."""
    return next((address for lookup in host.lookups if lookup.rdtype in ("A", "AAAA") and not lookup.failed
                 for address in lookup.records), "")


def policy_in_force(resolution: Resolution) -> ReportPolicy:
    """The policy the daemon applies to the domain after ``resolution``, in RFC 8460 form."""
    dane, domain = resolution.dane, resolution.domain
    if dane is not None and dane.applies:
        return ReportPolicy(PolicyType.TLSA, domain, _records(host for host in dane.hosts if host.dane))
    cached = resolution.policy
    if cached is not None and cached.policy.mode is not Mode.NONE:
        return sts_report_policy(domain, cached.policy)
    return ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)


def resolution_sink(add: Callable[..., None], clock: Callable[[], float],
                    source: RouteSource) -> Callable[[Resolution], None]:
    """The ``on_resolution`` hook: outcomes and the policy in force to ``add`` (the spool's); ``source``
    gives sending-mta-ip."""
    def on_resolution(resolution: Resolution) -> None:
        outcomes = resolution_outcomes(resolution, clock(), source)
        policies = [(resolution.domain, policy_in_force(resolution))]
        if resolution.dane is not None and resolution.dane.applies:
            policies += [(HOST_POLICY_PREFIX + host.name, _host_policy(host))
                         for host in resolution.dane.hosts if host.dane]
        add(outcomes, policies=[(key, canonical_json(policy.to_json())) for key, policy in policies])
    return on_resolution
