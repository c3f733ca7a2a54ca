"""DANE cache lifetimes as a table: dane_lifetime(), clamp_ttl() and after_probe_flip() with explicit times."""

from __future__ import annotations

import math

import pytest

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult
from mtasts_resolver.policy.lifetime import DaneTimes, Hold, after_probe_flip, clamp_ttl, dane_lifetime

TIMES = DaneTimes(min_ttl_s=60, max_ttl_s=3600, failure_ttl_s=10)
NOW = 10_000.0


def result(outcome: DaneOutcome, ttl: int | None = 300) -> DaneResult:
    return DaneResult(outcome, outcome.value, ttl=ttl)


ONLY, PARTIAL, ABSENT = result(DaneOutcome.DANE_ONLY), result(DaneOutcome.DANE), result(DaneOutcome.ABSENT)
TEMP, DISABLED = result(DaneOutcome.TEMP, None), result(DaneOutcome.DISABLED, None)


@pytest.mark.parametrize("ttl, expected", [
    (300, 300.0), (5, 60.0), (0, 60.0), (100_000, 3600.0), (None, 60.0), (60, 60.0), (3600, 3600.0)])
def test_clamp_ttl(ttl, expected):
    assert clamp_ttl(ttl, TIMES) == expected


# new result, previous result, previous expiry, validating -> (result kept, hold, check_at, expires_at)
TABLE = [
    # validated data: its clamped TTL, re-checked at 3/4 of it
    (ONLY, None, -math.inf, True, (ONLY, Hold.VALIDATED, NOW + 225, NOW + 300)),
    (PARTIAL, ONLY, NOW + 50, True, (PARTIAL, Hold.VALIDATED, NOW + 225, NOW + 300)),
    (ABSENT, None, -math.inf, True, (ABSENT, Hold.VALIDATED, NOW + 225, NOW + 300)),
    (result(DaneOutcome.DANE_ONLY, 5), None, -math.inf, True,
     (result(DaneOutcome.DANE_ONLY, 5), Hold.VALIDATED, NOW + 45, NOW + 60)),
    (result(DaneOutcome.ABSENT, 100_000), None, -math.inf, True,
     (result(DaneOutcome.ABSENT, 100_000), Hold.VALIDATED, NOW + 2700, NOW + 3600)),
    # a failed re-check keeps validated data within its TTL, re-checking every failure_ttl_s...
    (TEMP, ONLY, NOW + 50, True, (ONLY, Hold.KEPT, NOW + 10, NOW + 50)),
    (TEMP, ABSENT, NOW + 5, True, (ABSENT, Hold.KEPT, NOW + 5, NOW + 5)),
    # ...but not once it expired, and never an earlier TEMP or DISABLED: TEMP, Postfix defers
    (TEMP, ONLY, NOW, True, (TEMP, Hold.TEMP, NOW + 10, NOW + 10)),
    (TEMP, None, -math.inf, True, (TEMP, Hold.TEMP, NOW + 10, NOW + 10)),
    (TEMP, TEMP, NOW + 50, True, (TEMP, Hold.TEMP, NOW + 10, NOW + 10)),
    (TEMP, DISABLED, math.inf, True, (TEMP, Hold.TEMP, NOW + 10, NOW + 10)),
    # DISABLED: held until the probe flips; already flipped back while resolving: stale at once
    (DISABLED, None, -math.inf, False, (DISABLED, Hold.DISABLED, math.inf, math.inf)),
    (DISABLED, ONLY, NOW + 50, False, (DISABLED, Hold.DISABLED, math.inf, math.inf)),
    (DISABLED, None, -math.inf, True, (DISABLED, Hold.DISABLED, NOW, NOW)),
]


@pytest.mark.parametrize("new, previous, previous_expires_at, validating, expected", TABLE)
def test_dane_lifetime(new, previous, previous_expires_at, validating, expected):
    life = dane_lifetime(new, previous, previous_expires_at, NOW, TIMES, validating)
    assert (life.dane, life.hold, life.check_at, life.expires_at) == expected


# entry's DANE result, its MTA-STS policy expiry, (check_at, expires_at), validating -> new (check_at, expires_at)
FLIPS = [
    # validated DANE data keeps its times whichever way the probe flips
    (ONLY, None, (NOW + 200, NOW + 300), True, (NOW + 200, NOW + 300)),
    (ABSENT, NOW + 9000, (NOW + 200, NOW + 300), False, (NOW + 200, NOW + 300)),
    # answers made without DANE are stale once the resolver validates
    (DISABLED, None, (math.inf, math.inf), True, (NOW, NOW)),
    (DISABLED, NOW + 9000, (NOW + 200, math.inf), True, (NOW, NOW)),
    (None, NOW + 9000, (NOW, NOW), True, (NOW, NOW)),
    # not validating: a policy loaded at start-up (no DANE yet) stands until its max_age
    (None, NOW + 9000, (NOW, NOW), False, (NOW, NOW + 9000)),
    (None, None, (NOW + 5, NOW + 5), False, (NOW + 5, NOW + 5)),
    (DISABLED, NOW + 9000, (math.inf, math.inf), False, (math.inf, math.inf)),
]


@pytest.mark.parametrize("dane, policy_expires_at, times, validating, expected", FLIPS)
def test_after_probe_flip(dane, policy_expires_at, times, validating, expected):
    assert after_probe_flip(dane, policy_expires_at, *times, validating, NOW) == expected
