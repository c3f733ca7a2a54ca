"""Policies as Postfix TLS policy table results (postconf(5) smtp_tls_policy_maps)."""

from __future__ import annotations

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.model import Mode, StsPolicy


def postfix_match(pattern: str) -> str:
    """Map one RFC 8461 mx pattern to a Postfix ``match=`` element.

    Postfix has no one-label wildcard: ``*.example.com`` becomes
    ``.example.com``, which Postfix matches at any depth (so
    ``a.b.example.com`` is accepted too).  Postfix ≥ 3.10.5 narrows this back
    to one label with the ``mx_host_pattern`` attributes of the TLSRPT answer.
    """
    return pattern[1:] if pattern.startswith("*.") else pattern


def sts_answer(domain: str, policy: StsPolicy, *, tlsrpt: bool) -> Answer:
    """The table result for a domain's MTA-STS policy.

    Only ``enforce`` policies change how Postfix delivers: ``testing`` and
    ``none`` answer NOTFOUND (RFC 8461 §5: testing must not stop delivery).
    ``tlsrpt`` adds Postfix ≥ 3.10 TLSRPT attributes, which Postfix ≤ 3.9
    rejects as a malformed policy, so only clients that ask get them.
    """
    if policy.mode is not Mode.ENFORCE:
        return NOT_FOUND
    match = ":".join(dict.fromkeys(postfix_match(p) for p in policy.mx))
    parts = [f"secure match={match} servername=hostname"]
    if tlsrpt:
        parts.append(f"policy_type=sts policy_domain={domain}")
        parts.extend(f"mx_host_pattern={p}" for p in policy.mx)
        parts.extend(f"{{ policy_string = {line} }}" for line in policy.lines)
    return Answer(AnswerKind.FOUND, " ".join(parts))
