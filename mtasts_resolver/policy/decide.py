"""DANE or MTA-STS: the one table answer for a domain (RFC 8461 §2, RFC 7672).

A pure function of the two results.  DANE wins whenever it applies (RFC
8461 §2: MTA-STS must not override DANE); MTA-STS applies only when DANE is
proven absent, or when DANE answers are disabled because the resolver does
not validate (announced loudly by the validation probe).  When the DNS data
that decides whether DANE applies cannot be obtained, the answer is TEMP:
Postfix defers the mail and asks again, nothing is silently downgraded.

Postfix receives only the level: with ``dane`` and ``dane-only`` it looks up
the TLSA records itself (``smtp_dns_support_level = dnssec`` is required,
see README).  No TLSRPT attributes are added: Postfix ≥ 3.10 builds the
TLSA policy description for its reports from its own lookups.
"""

from __future__ import annotations

from mtasts_resolver.lookup import Answer, AnswerKind
from mtasts_resolver.policy.dane import DaneOutcome, DaneResult

DANE_ONLY = Answer(AnswerKind.FOUND, "dane-only")
DANE = Answer(AnswerKind.FOUND, "dane")
#: Keep TEMP reasons short: Postfix logs them with the deferral.
MAX_REASON_CHARS = 200


def decide(dane: DaneResult | None, sts: Answer) -> Answer:
    """The answer for one domain from its DANE verdict and its MTA-STS answer.

    ``dane`` is None when DANE is not configured at all (``dane.enabled =
    false``): the MTA-STS answer stands.
    """
    if dane is None:
        return sts
    if dane.outcome is DaneOutcome.DANE_ONLY:
        return DANE_ONLY
    if dane.outcome is DaneOutcome.DANE:
        return DANE
    if dane.outcome is DaneOutcome.TEMP:
        reason = dane.reason if len(dane.reason) <= MAX_REASON_CHARS else dane.reason[:MAX_REASON_CHARS - 3] + "..."
        return Answer(AnswerKind.TEMP, f"DANE status unknown, deferring: {reason}")
    return sts  # ABSENT or DISABLED
