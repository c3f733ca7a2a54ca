"""What only the PostgreSQL store promises: the DSN shown without its password, a database that went away fails fast."""

from __future__ import annotations

import time

import pytest

from mtasts_resolver.config import CacheConfig
from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store import StoreError, postgresql
from mtasts_resolver.store.postgresql import PostgresStore, redacted

POLICY = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400")


@pytest.mark.parametrize("dsn, shown", [
    ("host=db dbname=m user=u password=secret", "user=u password=*** dbname=m host=db"),
    ("postgresql://u:secret@db/m?sslmode=verify-full", "user=u password=*** dbname=m host=db sslmode=verify-full"),
    ("host=/run/postgresql dbname=m passfile=/etc/mtasts-resolver/pgpass",
     "passfile=/etc/mtasts-resolver/pgpass dbname=m host=/run/postgresql"),
    ("'unterminated password=secret", "(a DSN libpq cannot parse)"),
])
def test_the_dsn_is_shown_without_its_password(dsn, shown):
    assert redacted(dsn) == shown


def test_no_server_is_an_error_naming_the_dsn_without_the_password(tmp_path):
    cache = CacheConfig(backend="postgresql", dsn=f"host={tmp_path} dbname=m user=u password=secret")
    with pytest.raises(StoreError) as raised:
        PostgresStore(cache)
    assert "cannot connect to PostgreSQL" in str(raised.value) and "secret" not in str(raised.value)


def test_a_database_that_went_away_fails_fast_until_the_next_attempt_then_is_used_again(postgres, monkeypatch):
    monkeypatch.setattr(postgresql, "RECONNECT_AFTER_S", 0.5)
    store = PostgresStore(CacheConfig(backend="postgresql", dsn=postgres.database(), connect_timeout_s=5))
    try:
        store.save_policy(CachedPolicy("a.example", "1", POLICY, 1.0))
        postgres.stop()
        try:
            with pytest.raises(StoreError):        # the connection it had is gone
                list(store.load_policies())
            with pytest.raises(StoreError):        # the reconnect fails
                list(store.load_policies())
            started = time.monotonic()
            with pytest.raises(StoreError, match="unreachable .* next attempt in"):
                list(store.load_policies())
            assert time.monotonic() - started < 0.1   # at once, not a connect attempt
        finally:
            postgres.start_again()
        time.sleep(0.6)
        assert [p.domain for p in store.load_policies()] == ["a.example"]
    finally:
        store.close()
