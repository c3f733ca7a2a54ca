"""Sessions are dated by the log line's own timestamp: the formats, the year of a syslog line, and
a backlog read after midnight landing on the day it happened."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtasts_resolver.tlsrpt.feeds.exim_events import EximLogCorrelator
from mtasts_resolver.tlsrpt.feeds.logfollow import journal_line
from mtasts_resolver.tlsrpt.feeds.logtime import line_time
from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator
from mtasts_resolver.tlsrpt.model import PolicyType, ReportPolicy, utc_day

UTC = datetime.timezone.utc
PARIS_WINTER = datetime.timezone(datetime.timedelta(hours=1))


def ts(*args, tz=UTC) -> float:
    return datetime.datetime(*args, tzinfo=tz).timestamp()


READ = ts(2026, 3, 2, 0, 5)   # read five minutes after midnight UTC


@pytest.mark.parametrize("line, local, expected", [
    ("2026-03-01T23:59:58.250000+00:00 mx postfix/smtp[1]: x", UTC, ts(2026, 3, 1, 23, 59, 58) + 0.25),
    ("2026-03-01T23:59:58Z mx postfix/smtp[1]: x", UTC, ts(2026, 3, 1, 23, 59, 58)),
    ("2026-03-02T00:59:58+01:00 mx postfix/smtp[1]: x", UTC, ts(2026, 3, 1, 23, 59, 58)),
    ("2026-03-01T23:59:58 mx postfix/smtp[1]: x", PARIS_WINTER, ts(2026, 3, 1, 22, 59, 58)),   # local time
    ("Mar  1 23:59:58 mx postfix/smtp[1]: x", UTC, ts(2026, 3, 1, 23, 59, 58)),
    ("Mar  2 00:59:58 mx postfix/smtp[1]: x", PARIS_WINTER, ts(2026, 3, 1, 23, 59, 58)),
    ("2026-03-01 23:59:58 1rAbCd-000123-AB => u@a.test", UTC, ts(2026, 3, 1, 23, 59, 58)),
    ("2026-03-01 23:59:58.500 1rAbCd-000123-AB => u@a.test", UTC, ts(2026, 3, 1, 23, 59, 58) + 0.5),
    ("2026-03-02 00:59:58 +0100 1rAbCd-000123-AB => u@a.test", UTC, ts(2026, 3, 1, 23, 59, 58)),
    # not dated, or dated impossibly: the time it was read
    ("postfix/smtp[1]: x", UTC, READ),
    ("2026-02-31 10:00:00 1rAbCd-000123-AB => u@a.test", UTC, READ),
    ("2026-03-01T10:00:00+25:00 mx postfix/smtp[1]: x", UTC, READ),
    ("2027-03-01T10:00:00Z mx postfix/smtp[1]: x", UTC, READ),                       # a year ahead
    ("Feb 30 10:00:00 mx postfix/smtp[1]: x", UTC, READ),
])
def test_line_time(line, local, expected):
    assert line_time(line, READ, local) == pytest.approx(expected)


@pytest.mark.parametrize("line, read, expected", [
    ("Dec 31 23:59:00 mx postfix/smtp[1]: x", ts(2027, 1, 1, 0, 10), ts(2026, 12, 31, 23, 59)),   # last year's
    ("Jan  1 00:01:00 mx postfix/smtp[1]: x", ts(2026, 12, 31, 23, 59), ts(2027, 1, 1, 0, 1)),   # clock skew
    ("Jun  1 00:00:00 mx postfix/smtp[1]: x", ts(2026, 3, 1), ts(2025, 6, 1)),
    ("Feb 29 12:00:00 mx postfix/smtp[1]: x", ts(2028, 3, 1), ts(2028, 2, 29, 12)),              # a leap year
    ("Feb 29 12:00:00 mx postfix/smtp[1]: x", ts(2026, 3, 1), ts(2026, 3, 1)),   # none near: the read time
])
def test_syslog_year(line, read, expected):
    assert line_time(line, read, UTC) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.floats(min_value=0, max_value=4e9))
def test_line_time_is_total(line, read):
    at = line_time(line, read)
    assert isinstance(at, float) and at <= read + 86400


def sts(domain: str) -> ReportPolicy:
    return ReportPolicy(PolicyType.STS, domain, ("version: STSv1",), ("mx.a.test",))


def test_a_postfix_backlog_read_after_midnight_counts_on_its_own_day():
    correlator = PostfixLogCorrelator(sts)
    lines = ["2026-03-01T23:59:58+00:00 mx postfix/smtp[7]: Verified TLS connection established to "
             "mx.a.test[192.0.2.1]:25: TLSv1.3",
             "2026-03-01T23:59:59+00:00 mx postfix/smtp[7]: Q1: to=<u@a.test>, relay=mx.a.test[192.0.2.1]:25, "
             "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)"]
    [outcome] = [o for line in lines for o in correlator.feed(line, READ)]
    assert utc_day(outcome.at) == "2026-03-01" and utc_day(READ) == "2026-03-02"


def test_an_exim_backlog_counts_on_its_own_day():
    correlator = EximLogCorrelator(sts)
    line = ("2026-03-01 23:59:59 +0000 1rXyZw-000456-CD => u@a.test R=dnslookup T=remote_smtp H=mx.a.test "
            "[192.0.2.1] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes")
    [outcome] = correlator.feed(line, READ)
    assert utc_day(outcome.at) == "2026-03-01"


def test_journal_entries_carry_their_own_time():
    entry = {"SYSLOG_IDENTIFIER": "postfix/smtp", "SYSLOG_PID": "7", "_HOSTNAME": "mx",
             "MESSAGE": "Q1: removed", "__REALTIME_TIMESTAMP": str(int(ts(2026, 3, 1, 23, 59, 59) * 1e6))}
    line = journal_line(entry)
    assert line == "2026-03-01T23:59:59+00:00 mx postfix/smtp[7]: Q1: removed"
    assert line_time(line, READ) == ts(2026, 3, 1, 23, 59, 59)
    assert journal_line({**entry, "__REALTIME_TIMESTAMP": "x"}) == "postfix/smtp[7]: Q1: removed"
