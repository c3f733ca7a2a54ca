"""DANE vs MTA-STS: the decision table (RFC 8461 §2, RFC 7672 §2.1.1)."""

from __future__ import annotations

import pytest

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.dane import DaneOutcome, DaneResult
from mtasts_resolver.policy.decide import decide

SECURE = Answer(AnswerKind.FOUND, "secure match=mx.example.com servername=hostname")
SECURE_TLSRPT = Answer(AnswerKind.FOUND, "secure match=mx.example.com servername=hostname policy_type=sts "
                                         "policy_domain=example.com mx_host_pattern=mx.example.com")
INTERNAL = Answer(AnswerKind.TEMP, "internal error")


def verdict(outcome: DaneOutcome, reason: str = "why") -> DaneResult:
    return DaneResult(outcome, reason)


DANE_ONLY = Answer(AnswerKind.FOUND, "dane-only")
DANE = Answer(AnswerKind.FOUND, "dane")

# (DANE verdict, MTA-STS answer) -> answer
TABLE = [
    # DANE present: it wins over MTA-STS whatever MTA-STS says (RFC 8461 §2)
    (verdict(DaneOutcome.DANE_ONLY), SECURE, DANE_ONLY),
    (verdict(DaneOutcome.DANE_ONLY), SECURE_TLSRPT, DANE_ONLY),
    (verdict(DaneOutcome.DANE_ONLY), NOT_FOUND, DANE_ONLY),
    (verdict(DaneOutcome.DANE), SECURE, DANE),
    (verdict(DaneOutcome.DANE), NOT_FOUND, DANE),
    # DANE proven absent: MTA-STS decides
    (verdict(DaneOutcome.ABSENT), SECURE, SECURE),
    (verdict(DaneOutcome.ABSENT), SECURE_TLSRPT, SECURE_TLSRPT),
    (verdict(DaneOutcome.ABSENT), NOT_FOUND, NOT_FOUND),
    # DANE unknown: defer, even when MTA-STS has a policy (no silent downgrade to it, nor to nothing)
    (verdict(DaneOutcome.TEMP, "MX lookup failed"), SECURE,
     Answer(AnswerKind.TEMP, "DANE status unknown, deferring: MX lookup failed")),
    (verdict(DaneOutcome.TEMP, "MX lookup failed"), NOT_FOUND,
     Answer(AnswerKind.TEMP, "DANE status unknown, deferring: MX lookup failed")),
    # DANE disabled (resolver does not validate, logged loudly): MTA-STS only
    (verdict(DaneOutcome.DISABLED), SECURE, SECURE),
    (verdict(DaneOutcome.DISABLED), NOT_FOUND, NOT_FOUND),
    # DANE not configured at all
    (None, SECURE, SECURE),
    (None, NOT_FOUND, NOT_FOUND),
]


@pytest.mark.parametrize("dane,sts,expected", TABLE,
                         ids=[f"{d.outcome.value if d else 'unconfigured'}-{s.kind.value}" for d, s, _ in TABLE])
def test_decision(dane, sts, expected):
    assert decide(dane, sts) == expected


def test_temp_reason_is_bounded():
    answer = decide(verdict(DaneOutcome.TEMP, "x" * 5000), NOT_FOUND)
    assert answer.kind is AnswerKind.TEMP and len(answer.text) < 300
