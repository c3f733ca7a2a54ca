"""``mtasts-resolver audit DOMAIN…``: the inbound setup of each domain, checked as a sender sees it.

The wiring (DNS through the configured resolver, the daemon's resolvers,
the spool and cache when the configuration has them), the output (a table
for people, ``--json`` for monitoring) and the exit status: 0 clean (notes
only), 1 warnings, 2 errors; 64 for a DOMAIN that is not one.  The
findings are :func:`mtasts_resolver.audit.findings.findings`'.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable

from mtasts_resolver.app.exits import EX_USAGE
from mtasts_resolver.audit.facts import DomainFacts, MxHost, TlsSession
from mtasts_resolver.audit.findings import Finding, Severity, exit_status, findings
from mtasts_resolver.audit.gather import Auditor, spool_facts
from mtasts_resolver.config import Config
from mtasts_resolver.net.dnssec_probe import ValidationProbe
from mtasts_resolver.net.network import Network, dns_on_reactor
from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.policy.model import StsPolicy, StsTxt
from mtasts_resolver.store import StoreError, open_store
from mtasts_resolver.tlsrpt.report.record import TlsrptRecord


async def audit_command(reactor, config: Config, domains: tuple[str, ...], as_json: bool, warn_days: int) -> int:
    keys = [parse_key(domain) for domain in domains]
    wrong = [f"{domain}: {key.reason or 'not a domain'}" for domain, key in zip(domains, keys)
             if key.kind is not KeyKind.DOMAIN]
    if wrong:
        print("audit: not a domain:", *wrong, sep="\n  ", file=sys.stderr)
        return EX_USAGE
    if warn_days < 0:
        print(f"audit: --warn-days must be 0 or more, not {warn_days}", file=sys.stderr)
        return EX_USAGE
    dns = dns_on_reactor(config, reactor)
    probe = ValidationProbe(dns, config.dane)
    await probe.check()
    dane = config.dane.enabled and probe.validating
    if not dane:
        print(f"audit: DANE not checked: {probe.status if config.dane.enabled else 'dane.enabled = false'}",
              file=sys.stderr)
    store = _open_store(config)
    cached, spool = _store_readers(store)
    settings = config.mta_sts
    auditor = Auditor(reactor, Network(reactor, config, dns), dane, settings.ca_file, settings.http_timeout_s,
                      socket.getfqdn(), config.dane.host_concurrency, cached, spool)
    results = []
    try:
        for key in keys:
            facts = await auditor.facts(key.domain)
            results.append((facts, findings(facts, reactor.seconds(), warn_days)))
    finally:
        if store is not None:
            store.close()
    status = max((exit_status(found) for _, found in results), default=0)
    if as_json:
        print(json.dumps({"status": status, "domains": [
            {"domain": facts.domain, "status": exit_status(found), "seen": seen(facts),
             "findings": [_finding_json(f) for f in found]} for facts, found in results]}, indent=2))
    else:
        print("\n\n".join(human(facts, found) for facts, found in results))
    return status


def _open_store(config: Config):
    """The daemon's cache and spool, if there is one (never created here: the audit only reads)."""
    if config.cache.backend == "sqlite" and not config.cache_path.exists():
        return None
    try:
        return open_store(config.cache, config.cache_path)
    except StoreError as exc:
        print(f"audit: the cache and spool are not read: {exc}", file=sys.stderr)
        return None


def _store_readers(store) -> tuple[Callable, Callable]:
    if store is None:
        return (lambda domain: None), (lambda domain: None)
    policies = {policy.domain: policy for policy in store.load_policies()}
    return policies.get, (lambda domain: spool_facts(store, domain))


# -- what a sender sees -------------------------------------------------------

def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _tls_seen(tls: TlsSession | None) -> dict[str, object] | None:
    if tls is None:
        return None
    if tls.error:
        return {"error": tls.error}
    leaf = tls.chain[0]
    return {"names": list(leaf.names), "not_after": _when(leaf.not_after), "chain_length": len(tls.chain),
            "webpki_valid": not tls.verify_errors and tls.name_ok, "verify_errors": list(tls.verify_errors)}


def _mx_seen(host: MxHost) -> dict[str, object]:
    out: dict[str, object] = {"host": host.host, "preference": host.preference, "addresses": list(host.addresses)}
    if host.address_error:
        out["address_error"] = host.address_error
    out["smtp"] = [{"address": smtp.address, "error": smtp.error} if smtp.error else
                   {"address": smtp.address, "starttls": smtp.starttls, "tls": _tls_seen(smtp.tls)}
                   for smtp in host.smtp]
    if host.tlsa is not None and (host.tlsa.records or host.tlsa.error):
        out["tlsa"] = {"name": host.tlsa.name, "records": [str(r) for r in host.tlsa.records],
                       "dnssec_validated": host.tlsa.secure, **({"error": host.tlsa.error} if host.tlsa.error else {})}
    return out


def seen(facts: DomainFacts) -> dict[str, object]:
    """What a sender sees, as plain data: the ``seen`` object of ``--json``, and the table's top."""
    txt, policy = facts.sts_txt, facts.policy
    sts: dict[str, object] = {}
    if isinstance(txt, StsTxt):
        sts = {"txt": txt.record, "id": txt.id}
    elif txt is not None:
        sts = {"txt": None, "reason": getattr(txt, "reason", None) or str(txt)}
    if isinstance(policy, StsPolicy):
        sts.update(mode=policy.mode.value, mx=list(policy.mx), max_age=policy.max_age)
    elif policy is not None:
        sts["fetch_error"] = str(policy)
    if facts.policy_tls is not None:
        sts["policy_host_tls"] = _tls_seen(facts.policy_tls)
    tlsrpt: dict[str, object] = ({"error": facts.tlsrpt_error} if facts.tlsrpt_error else
                                 {"record": facts.tlsrpt.record} if isinstance(facts.tlsrpt, TlsrptRecord) else
                                 {"record": None, "reason": facts.tlsrpt.reason if facts.tlsrpt else None})
    out: dict[str, object] = {"mx": [_mx_seen(host) for host in facts.mx], "mta_sts": sts, "tlsrpt": tlsrpt}
    if facts.mx_error:
        out["mx_error"] = facts.mx_error
    if facts.dane is not None:
        out["dane"] = {"outcome": facts.dane.outcome.value, "reason": facts.dane.reason,
                       "mx_dnssec_validated": facts.dane.mx.secure if facts.dane.mx else None}
    if facts.spool is not None:
        out["tlsrpt_spool"] = {"days": facts.spool.days, "sessions": facts.spool.sessions,
                               "failed_sessions": facts.spool.failed_sessions}
    return out


def _finding_json(finding: Finding) -> dict[str, str]:
    return {"severity": finding.severity.value, "code": finding.code, "subject": finding.subject,
            "explanation": finding.explanation, "fix": finding.fix}


# -- the table ----------------------------------------------------------------

def human(facts: DomainFacts, found: tuple[Finding, ...]) -> str:
    """One domain: what a sender sees, one line per thing, then the findings with explanation and fix."""
    tally = [(sum(f.severity is s for f in found), s.value) for s in Severity]
    counts = ", ".join(f"{n} {name}{'s' if n > 1 else ''}" for n, name in tally if n)
    out = [f"{facts.domain}: {counts or 'no findings'}"]
    out += [f"  {label:<8} {text}" for label, text in _summary(facts)]
    if found:
        width = max(len(f.code) for f in found)
        out.append(f"  {'severity':<8} {'finding':<{width}}  subject / explanation / fix")
        for f in found:
            pad = " " * (13 + width)
            out += [f"  {f.severity.value:<8} {f.code:<{width}}  {f.subject}", f"{pad}{f.explanation}",
                    f"{pad}fix: {f.fix}"]
    return "\n".join(out)


def _summary(facts: DomainFacts) -> list[tuple[str, str]]:
    lines = [("MX", f"lookup failed: {facts.mx_error}")] if facts.mx_error else []
    lines += [("MX", _mx_line(host)) for host in facts.mx]
    txt, policy = facts.sts_txt, facts.policy
    sts = (f'"{txt.record}"' if isinstance(txt, StsTxt) else
           "no policy announced" if txt is None else f"no policy: {getattr(txt, 'reason', None) or txt}")
    if isinstance(policy, StsPolicy):
        sts += f"; policy {policy.mode.value}, max_age {policy.max_age}, mx: {', '.join(policy.mx) or '-'}"
    elif policy is not None:
        sts += f"; policy not fetched: {policy}"
    lines.append(("MTA-STS", sts))
    if facts.policy_tls is not None:
        lines.append(("", f"{facts.policy_host}: {_tls_line(facts.policy_tls)}"))
    lines.append(("TLS-RPT", f"lookup failed: {facts.tlsrpt_error}" if facts.tlsrpt_error else
                  f'"{facts.tlsrpt.record}"' if isinstance(facts.tlsrpt, TlsrptRecord) else
                  f"none: {facts.tlsrpt.reason}" if facts.tlsrpt is not None else "none"))
    if facts.dane is not None:
        lines.append(("DANE", f"{facts.dane.outcome.value}: {facts.dane.reason}"))
    if facts.spool is not None:
        spool = facts.spool
        text = f"{spool.days} days of TLS-RPT data, {spool.failed_sessions} of {spool.sessions} sessions failed"
        lines.append(("spool", text))
    return lines


def _mx_line(host: MxHost) -> str:
    text = f"{host.preference} {host.host}"
    if not host.smtp:
        text += f" {host.address_error or 'no address'}"
    for smtp in host.smtp:
        text += f" {smtp.address}: " + (smtp.error if smtp.error else "STARTTLS, " + _tls_line(smtp.tls)
                                          if smtp.starttls else "no STARTTLS")
    if host.tlsa is not None and host.tlsa.records:
        state = "validated" if host.tlsa.secure else "NOT validated"
        text += f"; TLSA ({state}) " + ", ".join(f"{r.usage} {r.selector} {r.mtype} {r.data.hex()[:8]}…"
                                                  for r in host.tlsa.records)
    return text


def _tls_line(tls: TlsSession | None) -> str:
    if tls is None or tls.error:
        return f"TLS failed: {tls.error if tls else 'no handshake'}"
    leaf = tls.chain[0]
    valid = "WebPKI valid" if not tls.verify_errors and tls.name_ok else "not WebPKI valid"
    return f"certificate {', '.join(leaf.names) or '(no names)'} until {_when(leaf.not_after)[:10]}, {valid}"
