"""Human explanation of one resolution, for ``mtasts-resolver query``."""

from __future__ import annotations

import time

from mtasts_resolver.lookup import Answer, AnswerKind
from mtasts_resolver.policy.model import CachedPolicy, Mode, NoStsTxt, StsFailure, StsTxt
from mtasts_resolver.policy.refresh import Plan
from mtasts_resolver.service import Resolution


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def explain(res: Resolution, before: CachedPolicy | None, answer: Answer, cache_note: str, now: float) -> str:
    out = [f"domain:  {res.domain}", f"cache:   {cache_note}"]
    if before is None:
        out.append("         nothing cached for this domain before this query")
    else:
        out.append(f"         cached policy id {before.txt_id}, fetched {_when(before.fetched_at)}, "
                   f"expires {_when(before.expires_at)}")
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


def _why(res: Resolution, answer: Answer) -> str:
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
