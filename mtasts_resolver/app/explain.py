"""Explanation of one resolution, for ``mtasts-resolver query``: as text, or as data for ``--json``."""

from __future__ import annotations

import time

from mtasts_resolver.lookup import Answer, AnswerKind
from mtasts_resolver.policy.dane import DaneOutcome, DaneResult, HostResult, tlsa_problem
from mtasts_resolver.policy.model import CachedPolicy, Mode, NoStsTxt, StsFailure, StsTxt
from mtasts_resolver.policy.refresh import Plan
from mtasts_resolver.service import Resolution

_USAGE = {2: "DANE-TA", 3: "DANE-EE"}
_SELECTOR = {0: "full certificate", 1: "SubjectPublicKeyInfo"}
_MTYPE = {0: "exact data", 1: "SHA2-256", 2: "SHA2-512"}


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def explain(res: Resolution, before: CachedPolicy | None, answer: Answer, cache_note: str, now: float) -> str:
    out = [f"domain:  {res.domain}", f"cache:   {cache_note}"]
    if before is None:
        out.append("         nothing cached for this domain before this query")
    else:
        out.append(f"         cached policy id {before.txt_id}, fetched {_when(before.fetched_at)}, "
                   f"expires {_when(before.expires_at)}")
    if res.dane is not None:
        out.extend(explain_dane(res.dane))
    out.append("MTA-STS:")
    if isinstance(res.txt, StsTxt):
        out.append(f"TXT:     _mta-sts.{res.domain} \"{res.txt.record}\" (id {res.txt.id})")
    elif isinstance(res.txt, NoStsTxt):
        out.append(f"TXT:     no policy announced: {res.txt.reason}")
    else:
        out.append(f"TXT:     lookup failed: {res.txt.detail}")
    out.append(f"step:    {res.plan.value}")
    if isinstance(res.fetched, StsFailure):
        out.append(f"fetch:   failed: {res.fetched}")
    elif res.fetched is not None:
        out.append(f"fetch:   https://mta-sts.{res.domain}/.well-known/mta-sts.txt OK")
    if res.policy is not None:
        out.append("policy:  " + "\n         ".join(res.policy.policy.lines))
    out.append(f"answer:  {answer.kind.value} {answer.text}".rstrip())
    out.append(f"why:     {_why(res, answer)}")
    return "\n".join(out)


def explain_dane(dane: DaneResult) -> list[str]:
    """The DANE part: every lookup with its AD flag, each TLSA record's usability, the verdict."""
    out = ["DANE:", f"verdict: {dane.outcome.value}: {dane.reason}"]
    if dane.mx is not None:
        out.append(f"MX:      {dane.mx}")
    for host in dane.hosts:
        out.extend(_host_lines(host))
    if dane.ttl is not None:
        out.append(f"TTL:     {dane.ttl} s (smallest TTL of the records that decided; cached within "
                   "dane.min_ttl_s..dane.max_ttl_s)")
    return out


def _host_lines(host: HostResult) -> list[str]:
    out = [f"host:    {host.name}: {host.status.value} ({host.detail})"]
    out.extend(f"           {lookup}" for lookup in host.lookups)
    if host.tlsa:
        out.append(f"           TLSA base domain: {host.tlsa_base}")
    for record in host.tlsa:
        problem = tlsa_problem(record)
        if problem is None:
            what = (f"usable ({_USAGE[record.usage]}, {_SELECTOR[record.selector]}, "
                    f"{_MTYPE[record.mtype]})")
        else:
            what = f"unusable: {problem}"
        out.append(f"             {record}: {what}")
    return out


def explain_json(res: Resolution, before: CachedPolicy | None, answer: Answer, cache_note: str) -> dict:
    """The same as :func:`explain`, as data (``query --json``): steps as they went, the answer and why."""
    def step(value: object) -> dict | None:
        if value is None:
            return None
        if isinstance(value, StsFailure):
            return {"ok": False, "result_type": value.type.value, "detail": value.detail}
        if isinstance(value, NoStsTxt):
            return {"ok": False, "none": value.reason}
        if isinstance(value, StsTxt):
            return {"ok": True, "record": value.record, "id": value.id}
        return {"ok": True}

    out: dict = {"domain": res.domain, "cache": cache_note,
                 "cached_before": None if before is None else {"id": before.txt_id, "fetched_at": before.fetched_at,
                                                              "expires_at": before.expires_at},
                 "mta_sts": {"txt": step(res.txt), "step": res.plan.name.lower(), "fetch": step(res.fetched),
                             "policy": None if res.policy is None else list(res.policy.policy.lines)},
                 "dane": None, "answer": {"kind": answer.kind.value, "text": answer.text}, "why": _why(res, answer)}
    if res.dane is not None:
        out["dane"] = {"outcome": res.dane.outcome.value, "reason": res.dane.reason, "ttl": res.dane.ttl,
                       "hosts": [{"name": host.name, "status": host.status.value, "detail": host.detail,
                                  "tlsa_base": host.tlsa_base,
                                  "tlsa": [{"record": str(record), "problem": tlsa_problem(record)}
                                           for record in host.tlsa]} for host in res.dane.hosts]}
    return out


def _why(res: Resolution, answer: Answer) -> str:
    dane = res.dane
    if dane is not None:
        if dane.outcome is DaneOutcome.DANE_ONLY:
            return ("DANE applies and wins over MTA-STS (RFC 8461 §2): every MX host has usable TLSA records, "
                    "so Postfix requires DANE authentication for all of them (dane-only)")
        if dane.outcome is DaneOutcome.DANE:
            return ("DANE applies and wins over MTA-STS (RFC 8461 §2), but not to every MX host: Postfix "
                    "authenticates hosts with usable TLSA records and treats the others per RFC 7672 (dane)")
        if dane.outcome is DaneOutcome.TEMP:
            return ("the DNSSEC data that decides whether DANE applies could not be obtained: TEMP, Postfix "
                    "defers and retries (never a silent downgrade)")
        prefix = ("DANE is proven absent, so MTA-STS decides: " if dane.outcome is DaneOutcome.ABSENT
                  else "DANE answers are DISABLED (the resolver is not known to validate), MTA-STS alone decides: ")
        return prefix + _why_sts(res, answer)
    return _why_sts(res, answer)


def _why_sts(res: Resolution, answer: Answer) -> str:
    if res.policy is None:
        if res.failure is not None:
            return "discovery failed and no valid policy is cached: deliver as if no policy (RFC 8461 §5.1)"
        return "the domain publishes no MTA-STS policy"
    mode = res.policy.policy.mode
    if mode is not Mode.ENFORCE:
        return f"policy mode is {mode.value}: delivery is not restricted"
    source = "cached policy kept" if res.plan is Plan.KEEP or res.failure else "policy just fetched"
    if answer.kind is AnswerKind.FOUND:
        return f"enforce policy ({source}): TLS with a certificate matching an mx pattern is required"
    return source
