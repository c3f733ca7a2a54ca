"""RFC 8461 §5.1 cache rules as a table: plan() and settle() with explicit times."""

import pytest

from mtasts_resolver.policy.model import CachedPolicy, FailureType, Mode, NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.refresh import Plan, plan, refresh_at, settle

POLICY = StsPolicy(Mode.ENFORCE, ("mx.example.com",), 1000, ())
CACHED = CachedPolicy("example.com", "id1", POLICY, fetched_at=10_000.0)   # expires at 11_000
SAME, NEW = StsTxt("id1", "v=STSv1; id=id1"), StsTxt("id2", "v=STSv1; id=id2")
ABSENT = NoStsTxt("no _mta-sts TXT record")
DNS_DOWN = StsFailure(FailureType.FETCH_ERROR, "TXT lookup failed: timed out")
REFRESH_BEFORE = 100.0


@pytest.mark.parametrize("cached, txt, now, expected", [
    (None, SAME, 10_000.0, Plan.FETCH),            # new domain
    (None, ABSENT, 10_000.0, Plan.NO_POLICY),
    (None, DNS_DOWN, 10_000.0, Plan.NO_POLICY),    # RFC: as if no policy
    (CACHED, SAME, 10_100.0, Plan.KEEP),           # id unchanged
    (CACHED, NEW, 10_100.0, Plan.FETCH),           # id changed → fetch again
    (CACHED, SAME, 10_950.0, Plan.FETCH),          # due for proactive refresh
    (CACHED, ABSENT, 10_100.0, Plan.KEEP),         # TXT stripped: cached policy still applies
    (CACHED, DNS_DOWN, 10_100.0, Plan.KEEP),       # DNS down: cached policy still applies
    (CACHED, ABSENT, 11_000.0, Plan.NO_POLICY),    # expired: gone
    (CACHED, SAME, 11_000.0, Plan.FETCH),          # expired but announced: fetch
])
def test_plan(cached, txt, now, expected):
    assert plan(cached, txt, now, REFRESH_BEFORE) is expected


def test_refresh_at_is_never_before_half_life():
    assert refresh_at(CACHED, 100.0) == 10_900.0
    assert refresh_at(CACHED, 10_000.0) == 10_500.0


FAILED = StsFailure(FailureType.WEBPKI_INVALID, "certificate not valid")


@pytest.mark.parametrize("cached, fetched, now, expected", [
    (None, POLICY, 10_500.0, CachedPolicy("example.com", "id2", POLICY, 10_500.0)),
    (CACHED, POLICY, 10_500.0, CachedPolicy("example.com", "id2", POLICY, 10_500.0)),
    (CACHED, FAILED, 10_500.0, CACHED),     # blocked policy host cannot strip a cached policy
    (CACHED, FAILED, 11_000.0, None),       # ...until it expires
    (None, FAILED, 10_500.0, None),
])
def test_settle(cached, fetched, now, expected):
    assert settle("example.com", cached, NEW, fetched, now) == expected
