"""When to fetch a policy, and what to keep after a fetch: RFC 8461 §5.1 as pure functions.

Every function takes ``now`` explicitly (seconds since the epoch from the
reactor's clock), so the rules are tested with a table of cases and no clock.
"""

from __future__ import annotations

import enum

from mtasts_resolver.policy.model import CachedPolicy, NoStsTxt, StsFailure, StsPolicy, StsTxt


class Plan(enum.Enum):
    KEEP = "keep the cached policy"
    FETCH = "fetch the policy over HTTPS"
    NO_POLICY = "no policy applies"


def refresh_at(cached: CachedPolicy, refresh_before_s: float) -> float:
    """When a cached policy should be re-fetched even though its TXT id is unchanged.

    ``refresh_before_s`` before expiry, but never before half its lifetime has
    passed: a policy with a short max_age is not re-fetched on every check.
    """
    return max(cached.fetched_at + cached.policy.max_age / 2, cached.expires_at - refresh_before_s)


def plan(
    cached: CachedPolicy | None,
    txt: StsTxt | NoStsTxt | StsFailure,
    now: float,
    refresh_before_s: float,
) -> Plan:
    """Decide what a TXT lookup result means for a domain.

    - a TXT id different from the cached one means a new policy: fetch it;
    - the same id: keep the cached policy, fetching again only once it is due
      for refresh (RFC 8461 §5.1 "proactively refresh");
    - no TXT record, or a DNS failure, while a cached policy is still within
      max_age: keep applying it (RFC 8461 §5.1: "if no 'live' policy can be
      discovered ... but a valid (non-expired) policy exists in the sender's
      cache, the sender MUST apply that cached policy");
    - otherwise there is no policy.
    """
    live = cached is not None and cached.usable(now)
    if isinstance(txt, StsTxt):
        if live and cached.txt_id == txt.id and now < refresh_at(cached, refresh_before_s):
            return Plan.KEEP
        return Plan.FETCH
    return Plan.KEEP if live else Plan.NO_POLICY


def settle(
    domain: str,
    cached: CachedPolicy | None,
    txt: StsTxt,
    fetched: StsPolicy | StsFailure,
    now: float,
) -> CachedPolicy | None:
    """The policy to apply after a fetch attempt.

    A fetched policy replaces the cache.  A failed fetch keeps a still-valid
    cached policy (an attacker who blocks the policy host cannot strip it);
    with nothing valid cached, RFC 8461 §5.1 says deliver as if there were no
    policy, so the result is None and the caller records the failure.
    """
    if isinstance(fetched, StsPolicy):
        return CachedPolicy(domain, txt.id, fetched, now)
    if cached is not None and cached.usable(now):
        return cached
    return None
