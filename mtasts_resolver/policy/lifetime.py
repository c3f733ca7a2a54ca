"""How long a DANE result may be served, and when to re-check it: RFC 7672 caching as pure functions.

DNSSEC-validated data is good for its TTL (RFC 4035 §5: validated data is
cached no longer than its TTL); we clamp that TTL to ``[min_ttl_s,
max_ttl_s]`` so that a TTL of 0 does not mean a DNS walk per mail and a
TTL of a week does not pin a result forever.  Like :mod:`refresh`, every
function takes ``now`` explicitly and is tested with a table, no clock.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult

#: A DANE result is re-checked in the background once this share of its TTL has passed
#: (the result is still served meanwhile, so a domain's answer never waits for its re-check).
DANE_REFRESH_FRACTION = 0.75


@dataclass(frozen=True, slots=True)
class DaneTimes:
    """The ``[dane]`` settings these rules use (seconds)."""

    min_ttl_s: float
    max_ttl_s: float
    failure_ttl_s: float


class Hold(enum.Enum):
    """Why a DANE result is held as long as it is (what the service logs)."""

    VALIDATED = "validated data, for its clamped TTL"
    KEPT = "re-check failed, the earlier validated result stays valid within its TTL"
    TEMP = "status unknown, TEMP for failure_ttl_s"
    DISABLED = "DANE answers disabled until the resolver validates again"


@dataclass(frozen=True, slots=True)
class DaneLifetime:
    """The DANE result to apply and its times: re-check after ``check_at``, never serve after ``expires_at``."""

    dane: DaneResult
    hold: Hold
    check_at: float
    expires_at: float


def clamp_ttl(ttl: int | None, times: DaneTimes) -> float:
    """The TTL a result is cached for; ``None`` (no DNS data decided it) counts as ``min_ttl_s``."""
    if ttl is None:
        return times.min_ttl_s
    return min(max(float(ttl), times.min_ttl_s), times.max_ttl_s)


def dane_lifetime(new: DaneResult, previous: DaneResult | None, previous_expires_at: float, now: float,
                  times: DaneTimes, validating: bool) -> DaneLifetime:
    """How long to hold ``new``, given the result it replaces.

    - a validated result (DANE, DANE-only, absent) lives for its clamped TTL
      and is re-checked at :data:`DANE_REFRESH_FRACTION` of it;
    - a failed re-check (TEMP) keeps an earlier validated result until that
      result's own expiry: validated data stays valid for its TTL (RFC 4035),
      re-checking every ``failure_ttl_s`` meanwhile;
    - a TEMP with nothing validated to fall back on is served for
      ``failure_ttl_s`` (Postfix defers: RFC 7672 §2.1.1, no downgrade);
    - DISABLED (the resolver does not validate) holds until the probe flips
      (:func:`after_probe_flip`); if the probe already says the resolver
      validates again (it flipped while this resolution ran), the result is
      stale at once.
    """
    outcome = new.outcome
    if outcome is DaneOutcome.DISABLED:
        at = now if validating else math.inf
        return DaneLifetime(new, Hold.DISABLED, at, at)
    if outcome is DaneOutcome.TEMP:
        if (previous is not None and previous.outcome not in (DaneOutcome.TEMP, DaneOutcome.DISABLED)
                and now < previous_expires_at):
            return DaneLifetime(previous, Hold.KEPT, min(now + times.failure_ttl_s, previous_expires_at),
                                previous_expires_at)
        at = now + times.failure_ttl_s
        return DaneLifetime(new, Hold.TEMP, at, at)
    ttl = clamp_ttl(new.ttl, times)
    return DaneLifetime(new, Hold.VALIDATED, now + ttl * DANE_REFRESH_FRACTION, now + ttl)


def after_probe_flip(dane: DaneResult | None, policy_expires_at: float | None, check_at: float,
                     expires_at: float, validating: bool, now: float) -> tuple[float, float]:
    """An entry's ``(check_at, expires_at)`` once the validation probe says ``validating``.

    Validated DANE data keeps its times (it stays good until its TTL).
    Answers made without DANE (DISABLED, or loaded at start-up before any
    DANE lookup) must be resolved again before they are served once the
    resolver validates.  While it does not, a loaded MTA-STS policy stands
    on its own until its max_age (``policy_expires_at``), as it would with
    DANE switched off.
    """
    if dane is not None and dane.outcome is not DaneOutcome.DISABLED:
        return check_at, expires_at
    if validating:
        return min(check_at, now), min(expires_at, now)
    if dane is None and policy_expires_at is not None:
        return check_at, max(expires_at, policy_expires_at)
    return check_at, expires_at
