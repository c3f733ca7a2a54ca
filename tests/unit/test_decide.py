"""DANE vs MTA-STS: the decision table (RFC 8461 §2, RFC 7672 §2.1.1), as values, no answer text."""

from __future__ import annotations

import pytest

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult
from mtasts_resolver.policy.decide import DANE, DANE_ONLY, NO_POLICY, Decision, Level, Temp, decide
from mtasts_resolver.policy.model import Mode, StsPolicy

ENFORCE = StsPolicy(Mode.ENFORCE, ("mx.example.com", "*.example.net"), 86400,
                    ("version: STSv1", "mode: enforce", "mx: mx.example.com", "mx: *.example.net", "max_age: 86400"))
TESTING = StsPolicy(Mode.TESTING, ("mx.example.com",), 86400, ())
NONE = StsPolicy(Mode.NONE, (), 86400, ())
SECURE = Decision(Level.SECURE, "example.com", ENFORCE)


def verdict(outcome: DaneOutcome, reason: str = "why") -> DaneResult:
    return DaneResult(outcome, reason)


# (DANE verdict, MTA-STS policy in force) -> decision
TABLE = [
    # DANE present: it wins over MTA-STS whatever MTA-STS says (RFC 8461 §2)
    (verdict(DaneOutcome.DANE_ONLY), ENFORCE, DANE_ONLY),
    (verdict(DaneOutcome.DANE_ONLY), None, DANE_ONLY),
    (verdict(DaneOutcome.DANE), ENFORCE, DANE),
    (verdict(DaneOutcome.DANE), None, DANE),
    # DANE proven absent: MTA-STS decides, and only enforce restricts delivery (RFC 8461 §5)
    (verdict(DaneOutcome.ABSENT), ENFORCE, SECURE),
    (verdict(DaneOutcome.ABSENT), TESTING, NO_POLICY),
    (verdict(DaneOutcome.ABSENT), NONE, NO_POLICY),
    (verdict(DaneOutcome.ABSENT), None, NO_POLICY),
    # DANE unknown: defer, even when MTA-STS has a policy (no silent downgrade to it, nor to nothing)
    (verdict(DaneOutcome.TEMP, "MX lookup failed"), ENFORCE, Temp("DANE status unknown, deferring: MX lookup failed")),
    (verdict(DaneOutcome.TEMP, "MX lookup failed"), None, Temp("DANE status unknown, deferring: MX lookup failed")),
    # DANE disabled (resolver does not validate, logged loudly): MTA-STS only
    (verdict(DaneOutcome.DISABLED), ENFORCE, SECURE),
    (verdict(DaneOutcome.DISABLED), None, NO_POLICY),
    # DANE not configured at all
    (None, ENFORCE, SECURE),
    (None, TESTING, NO_POLICY),
    (None, None, NO_POLICY),
]


@pytest.mark.parametrize("dane,sts,expected", TABLE,
                         ids=[f"{d.outcome.value if d else 'unconfigured'}-{s.mode.value if s else 'no-sts'}"
                              for d, s, _ in TABLE])
def test_decision(dane, sts, expected):
    assert decide(dane, "example.com", sts) == expected


def test_secure_decision_carries_what_the_answers_need():
    decision = decide(None, "example.com", ENFORCE)
    assert decision.level is Level.SECURE
    assert decision.match == ("mx.example.com", "*.example.net")   # as published: rendering maps them
    assert decision.servername == "hostname"
    assert decision.sts is ENFORCE                                   # its lines become TLSRPT attributes
    assert DANE_ONLY.match == () and DANE_ONLY.servername == ""
