"""The audit's rules: findings from what a sender sees of a domain (pure, table-tested).

Each rule reads :class:`~.facts.DomainFacts` and the daemon's own RFC 8461
and RFC 7672 rules (:mod:`mtasts_resolver.policy`): a pattern covers an MX
exactly when the daemon would let Postfix use it, a TLSA record matches
exactly when it is usable and its data is the certificate's.  Nothing here
does I/O, and ``now`` is passed in.

Severities: an *error* breaks or defers mail from senders that honour the
policy (or will, when it is enforced); a *warning* will bite later or
weakens the protection; a *note* is worth knowing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from mtasts_resolver.audit.facts import (
    DomainFacts,
    MxHost,
    SmtpSession,
    Spool,
    TlsSession,
)
from mtasts_resolver.policy.dane import (
    DaneOutcome,
    HostResult,
    HostStatus,
    tlsa_matches,
    tlsa_problem,
)
from mtasts_resolver.policy.model import (
    FailureType,
    Mode,
    NoStsTxt,
    StsFailure,
    StsPolicy,
)
from mtasts_resolver.policy.sts import mx_matches, sts_txt_candidates
from mtasts_resolver.tlsrpt.report.record import TlsrptRecord

DAY_S = 86400
#: Below a week, an enforce policy lapses during an outage of the policy host or a long weekend (RFC 8461 §3.2
#: suggests weeks: "max_age ... e.g. 604800 or greater").
MIN_ENFORCE_MAX_AGE_S = 7 * DAY_S
#: TLS-RPT data worth having before enforce: two weeks of daily reports (the rollout guides' advice).
TESTING_DAYS_ADVISED = 14


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


#: Exit status of ``audit`` by the worst severity found: 0 clean, 1 warnings, 2 errors.
EXIT_STATUS = {Severity.ERROR: 2, Severity.WARNING: 1, Severity.NOTE: 0}


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str          # stable, for monitoring: "mx-not-covered"
    subject: str       # what it is about: the domain, an MX host, a pattern, a record name
    explanation: str   # one line: what a sender sees
    fix: str           # one line: what to change


def exit_status(found: tuple[Finding, ...]) -> int:
    return max((EXIT_STATUS[f.severity] for f in found), default=0)


def findings(facts: DomainFacts, now: float, warn_days: int) -> tuple[Finding, ...]:
    """Every finding for ``facts``, errors first (the order of the rules otherwise)."""
    found = [*_mx(facts), *_sts(facts, now, warn_days), *_tlsrpt(facts), *_dane(facts),
             *(f for host in facts.mx for session in host.smtp for f in _smtp(facts, host, session, now, warn_days))]
    order = list(Severity)
    return tuple(sorted(found, key=lambda f: order.index(f.severity)))


def _mode(facts: DomainFacts) -> Mode | None:
    return facts.policy.mode if isinstance(facts.policy, StsPolicy) else None


# -- MX -----------------------------------------------------------------------

def _mx(facts: DomainFacts) -> Iterator[Finding]:
    dane_temp = facts.dane is not None and facts.dane.outcome is DaneOutcome.TEMP
    if facts.mx_error and not dane_temp:   # a bogus zone is said once, by the DNSSEC rule
        yield Finding(Severity.ERROR, "mx-lookup-failed", facts.domain, f"the MX lookup failed: {facts.mx_error}",
                      "make the domain's name servers answer MX queries")
    elif not facts.mx_error and not facts.mx:
        yield Finding(Severity.NOTE, "no-mail", facts.domain, "null MX (RFC 7505): the domain accepts no mail",
                      "publish MX records if the domain should receive mail")
    for host in facts.mx:
        if host.address_error:
            yield Finding(Severity.ERROR, "mx-address-failed", host.host,
                          f"the address lookup failed: {host.address_error}", "fix the MX host's A/AAAA records")
        elif not host.addresses:
            yield Finding(Severity.ERROR, "mx-no-address", host.host, "the MX host has no A or AAAA record",
                          "publish the MX host's addresses or remove the MX record")


# -- MTA-STS ------------------------------------------------------------------

def _sts(facts: DomainFacts, now: float, warn_days: int) -> Iterator[Finding]:
    txt = facts.sts_txt
    name = f"_mta-sts.{facts.domain}"
    if isinstance(txt, StsFailure):
        yield Finding(Severity.ERROR, "sts-txt-lookup-failed", name, txt.detail,
                      "make the name servers answer TXT queries for _mta-sts")
        return
    if isinstance(txt, NoStsTxt):
        yield from _no_txt(facts, txt, name)
        return
    if txt is None:
        return
    policy = facts.policy
    if isinstance(policy, StsFailure):
        yield from _fetch_failed(facts, policy)
    if facts.policy_tls is not None:
        yield from _policy_host_cert(facts, facts.policy_tls, now, warn_days)
    if not isinstance(policy, StsPolicy):
        return
    yield from _mode_findings(facts, policy)
    if policy.mode is not Mode.NONE:
        yield from _coverage(facts, policy)
    if facts.cached is not None and facts.cached.txt_id == txt.id and facts.cached.policy.lines != policy.lines:
        yield Finding(Severity.WARNING, "id-not-bumped", name,
                      f"the policy changed but the TXT id is still {txt.id}: senders with the old policy cached "
                      "keep it until max_age runs out (RFC 8461 §3.1)",
                      f"publish a new id in {name} whenever the policy file changes")


def _no_txt(facts: DomainFacts, txt: NoStsTxt, name: str) -> Iterator[Finding]:
    announced = len(sts_txt_candidates(list(facts.sts_records)))
    if announced == 0:
        yield Finding(Severity.NOTE, "no-mta-sts", name, "no MTA-STS policy: senders without DANE fall back to "
                      "opportunistic TLS", "publish a _mta-sts TXT record and a policy (RFC 8461 §3)")
    elif announced > 1:
        yield Finding(Severity.ERROR, "sts-txt-multiple", name,
                      f"{announced} v=STSv1 TXT records: senders treat the domain as having no policy "
                      "(RFC 8461 §3.1)", "keep exactly one v=STSv1 record")
    else:
        yield Finding(Severity.ERROR, "sts-txt-malformed", name,
                      f"{txt.reason}: senders treat the domain as having no policy",
                      "publish \"v=STSv1; id=<1-32 letters or digits>\"")


def _fetch_failed(facts: DomainFacts, failure: StsFailure) -> Iterator[Finding]:
    if failure.type is FailureType.WEBPKI_INVALID and facts.policy_tls is not None and facts.policy_tls.chain:
        return   # the policy host's certificate rule says which problem it is
    if failure.type is FailureType.INVALID:
        yield Finding(Severity.ERROR, "policy-invalid", facts.policy_host,
                      f"the policy file is not valid: {failure.detail}: senders treat the domain as having no policy",
                      "correct the policy file (RFC 8461 §3.2), then bump the TXT id")
        return
    yield Finding(Severity.ERROR, "policy-fetch-failed", facts.policy_host,
                  f"the policy could not be fetched: {failure}",
                  f"serve the policy at https://{facts.policy_host}/.well-known/mta-sts.txt (200, text/plain)")


def _policy_host_cert(facts: DomainFacts, tls: TlsSession, now: float, warn_days: int) -> Iterator[Finding]:
    if tls.error:
        return   # the fetch failure says it
    problems = [*tls.verify_errors, *(() if tls.name_ok else (f"not valid for {facts.policy_host}",))]
    if problems:
        yield Finding(Severity.ERROR, "policy-cert-invalid", facts.policy_host,
                      f"the policy host's certificate is not valid ({'; '.join(problems)}): senders cannot fetch "
                      "the policy", f"install a publicly trusted certificate for {facts.policy_host}")
    yield from _expiry(tls, now, warn_days, "policy-cert", facts.policy_host,
                       "senders will stop fetching the policy (an enforce policy then lapses after max_age)")


def _expiry(tls: TlsSession, now: float, warn_days: int, code: str, subject: str, effect: str) -> Iterator[Finding]:
    if not tls.chain:
        return
    left_s = tls.chain[0].not_after - now
    if left_s <= 0:
        yield Finding(Severity.ERROR, f"{code}-expired", subject, f"the certificate expired {-left_s / DAY_S:.0f} "
                      f"days ago: {effect}", "renew the certificate")
    elif left_s < warn_days * DAY_S:
        yield Finding(Severity.WARNING, f"{code}-expiring", subject,
                      f"the certificate expires in {left_s / DAY_S:.1f} days: {effect}",
                      "renew the certificate (check the renewal job)")


def _mode_findings(facts: DomainFacts, policy: StsPolicy) -> Iterator[Finding]:
    if policy.mode is Mode.TESTING:
        yield Finding(Severity.NOTE, "mode-testing", facts.policy_host,
                      f"mode testing: senders report failures but deliver anyway; {_spool_text(facts.spool)}",
                      f"switch to mode enforce after {TESTING_DAYS_ADVISED} days or more of clean TLS-RPT reports")
    elif policy.mode is Mode.NONE:
        yield Finding(Severity.NOTE, "mode-none", facts.policy_host, "mode none: the policy protects nothing",
                      "publish mode testing, then enforce (or remove the policy after max_age)")
    else:
        if not isinstance(facts.tlsrpt, TlsrptRecord):
            yield Finding(Severity.WARNING, "enforce-without-tlsrpt", f"_smtp._tls.{facts.domain}",
                          "mode enforce without a valid TLS-RPT record: failed deliveries are never reported",
                          "publish \"v=TLSRPTv1; rua=mailto:...\" at _smtp._tls (RFC 8460 §3)")
        if policy.max_age < MIN_ENFORCE_MAX_AGE_S:
            yield Finding(Severity.WARNING, "max-age-short", facts.policy_host,
                          f"max_age {policy.max_age} s is under a week in enforce: the policy lapses soon after "
                          "the policy host becomes unreachable", f"raise max_age to {MIN_ENFORCE_MAX_AGE_S} or more")


def _spool_text(spool: Spool | None) -> str:
    if spool is None:
        return "this daemon keeps no TLS-RPT spool"
    if not spool.days:
        return "no TLS-RPT data about it in this daemon's spool"
    return (f"{spool.days} days of TLS-RPT data in this daemon's spool, {spool.failed_sessions} of "
            f"{spool.sessions} sessions failed")


def _coverage(facts: DomainFacts, policy: StsPolicy) -> Iterator[Finding]:
    severity = Severity.ERROR if policy.mode is Mode.ENFORCE else Severity.WARNING
    for host in facts.mx:
        if not any(mx_matches(pattern, host.host) for pattern in policy.mx):
            yield Finding(severity, "mx-not-covered", host.host,
                          f"no mx pattern of the policy ({', '.join(policy.mx)}) matches this MX: senders "
                          f"{'refuse to deliver to it' if severity is Severity.ERROR else 'report it as a failure'}",
                          f"add \"mx: {host.host}\" to the policy and bump the TXT id")
    for pattern in policy.mx:
        if facts.mx and not any(mx_matches(pattern, host.host) for host in facts.mx):
            yield Finding(Severity.WARNING, "pattern-without-mx", pattern,
                          "the policy's mx pattern matches no MX host (left over from a move?)",
                          "remove the pattern from the policy or publish the MX, and bump the TXT id")


# -- TLS-RPT ------------------------------------------------------------------

def _tlsrpt(facts: DomainFacts) -> Iterator[Finding]:
    name = f"_smtp._tls.{facts.domain}"
    if facts.tlsrpt_error:
        yield Finding(Severity.WARNING, "tlsrpt-lookup-failed", name, f"the TXT lookup failed: {facts.tlsrpt_error}",
                      "make the name servers answer TXT queries for _smtp._tls")
    elif isinstance(facts.tlsrpt, TlsrptRecord):
        for uri, why in facts.tlsrpt.rejected:
            yield Finding(Severity.WARNING, "tlsrpt-rua-unusable", name, f"rua {uri} is not used: {why}",
                          "use mailto: or https: addresses")
    elif facts.tlsrpt is not None and _mode(facts) is not Mode.ENFORCE:   # enforce: enforce-without-tlsrpt
        yield Finding(Severity.NOTE, "no-tlsrpt", name, f"no usable TLS-RPT record ({facts.tlsrpt.reason}): "
                      "senders cannot report TLS failures", "publish \"v=TLSRPTv1; rua=mailto:...\" (RFC 8460 §3)")


# -- DANE ---------------------------------------------------------------------

def _dane(facts: DomainFacts) -> Iterator[Finding]:
    dane = facts.dane
    if dane is None:
        return
    if dane.outcome is DaneOutcome.TEMP:
        yield Finding(Severity.ERROR, "dnssec-bogus", facts.domain,
                      f"the DNSSEC data that decides DANE does not validate ({dane.reason}): DANE senders defer "
                      "all mail", "fix the zone's signatures or its DS records at the parent")
    elif dane.mx is not None and not dane.mx.secure and not dane.mx.failed:
        yield Finding(Severity.NOTE, "mx-insecure", facts.domain, "the MX records are not DNSSEC-validated: DANE "
                      "cannot apply (RFC 7672 §2.2.1)", "sign the zone and publish its DS at the parent")
    for host in dane.hosts:
        if dane.outcome is not DaneOutcome.TEMP and host.status is HostStatus.FAILED:
            yield Finding(Severity.ERROR, "dnssec-bogus", host.name, f"{host.detail}: DANE senders skip this MX host",
                          "fix the signatures of the MX host's zone")
        elif host.dane:
            yield from _tlsa(facts, host)
    for mx in facts.mx:
        if mx.tlsa is not None and mx.tlsa.records and not mx.tlsa.secure:
            yield Finding(Severity.WARNING, "tlsa-insecure", mx.tlsa.name,
                          "TLSA records in a zone that is not DNSSEC-validated: senders ignore them",
                          "sign the MX host's zone (and publish its DS), or remove the TLSA records")


def _tlsa(facts: DomainFacts, host: HostResult) -> Iterator[Finding]:
    usable = [r for r in host.tlsa if tlsa_problem(r) is None]
    if not usable:
        yield Finding(Severity.ERROR, "tlsa-unusable", host.name,
                      f"none of the {len(host.tlsa)} TLSA records is usable for SMTP "
                      f"({tlsa_problem(host.tlsa[0])}): senders cannot authenticate the MX",
                      "publish \"3 1 1\" (DANE-EE, SPKI, SHA-256) records (RFC 7672 §3.1)")
        return
    for mx in facts.mx:
        for session in (mx.smtp if mx.host == host.name else ()):
            if session.tls is None or not session.tls.chain:
                continue
            matching = [r for r in usable if tlsa_matches(r, session.tls.pairs)]
            subject = f"{host.name} ({session.address})"
            if not matching:
                yield Finding(Severity.ERROR, "tlsa-mismatch", subject,
                              "no TLSA record matches the certificate the MX presents: DANE senders defer mail",
                              f"publish the TLSA record of the current key at {_tlsa_base(host)}")
            elif all(r.usage == 2 for r in matching) and not session.tls.name_ok:
                yield Finding(Severity.ERROR, "tlsa-ta-name", subject,
                              "the chain matches only DANE-TA records, and then the certificate must name the MX "
                              "host (RFC 7672 §3.2.2): it does not, so DANE senders defer mail",
                              f"use a certificate that names {host.name}, or publish a \"3 1 1\" record of its key")
    if len(usable) < 2:
        yield Finding(Severity.WARNING, "tlsa-no-rollover", host.name,
                      "a single usable TLSA record: a new key or certificate breaks DANE delivery until the "
                      "record is replaced and caches expire", "publish the next key's TLSA record beside the "
                      "current one before each key change (or add a \"2 1 1\" record of the issuing CA)")


def _tlsa_base(host: HostResult) -> str:
    return f"_25._tcp.{host.tlsa_base or host.name}"


# -- STARTTLS on each MX -----------------------------------------------------

def _smtp(facts: DomainFacts, host: MxHost, session: SmtpSession, now: float, warn_days: int) -> Iterator[Finding]:
    subject = f"{host.host} ({session.address})"
    if session.error:
        yield Finding(Severity.WARNING, "mx-unreachable", subject, f"no SMTP session on port 25: {session.error}",
                      "check that the MX accepts connections on port 25")
        return
    if not session.starttls:
        yield Finding(Severity.ERROR, "starttls-missing", subject, "the MX does not offer STARTTLS: mail to it "
                      "goes in clear text, and MTA-STS or DANE senders refuse it", "enable STARTTLS on the MX")
        return
    tls = session.tls
    if tls is None or tls.error:
        yield Finding(Severity.ERROR, "tls-failed", subject,
                      f"the TLS handshake after STARTTLS failed: {tls.error if tls else 'no handshake'}",
                      "fix the MX's TLS configuration (certificate, key, protocols)")
        return
    mode = _mode(facts)
    if mode in (Mode.ENFORCE, Mode.TESTING):   # WebPKI matters to MTA-STS; DANE-EE ignores it
        severity = Severity.ERROR if mode is Mode.ENFORCE else Severity.WARNING
        if tls.verify_errors:
            yield Finding(severity, "mx-cert-untrusted", subject,
                          f"the certificate chain is not valid ({'; '.join(tls.verify_errors)}): MTA-STS senders "
                          "reject it", "install the full chain of a publicly trusted certificate")
        if not tls.name_ok:
            names = ", ".join(tls.chain[0].names) if tls.chain else "none"
            yield Finding(severity, "mx-cert-name", subject,
                          f"the certificate (names: {names}) is not valid for {host.host}: MTA-STS senders reject it",
                          f"use a certificate that names {host.host}")
    yield from _expiry(tls, now, warn_days, "mx-cert", subject, "TLS to this MX fails once it has expired")
