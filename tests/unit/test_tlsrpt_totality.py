"""Every parser of a stranger's input is total and linear: any input gives a result or the parser's own
error type, in time proportional to its length (property tests with Hypothesis, and adversarial lines
that took quadratic time before: 64 KiB in 1.8 to 6 s)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtasts_resolver.tlsrpt.feeds.datagram import DatagramError, parse_datagram
from mtasts_resolver.tlsrpt.feeds.exim_events import EventError, EximLogCorrelator, event_outcomes, parse_event
from mtasts_resolver.tlsrpt.feeds.logfollow import journal_line
from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator
from mtasts_resolver.tlsrpt.model import Outcome, PolicyType, ReportPolicy
from mtasts_resolver.tlsrpt.report.record import Destination, NoTlsrpt, TlsrptRecord, parse_tlsrpt_records

CI = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINEAR_BUDGET_S = 0.5   # for one 64 KiB line; the quadratic patterns took 1.8 to 6 s, the fixed ones ~5 ms


def no_policy(domain: str) -> ReportPolicy:
    return ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)


def storable(outcomes: list[Outcome]) -> bool:
    """What the spool would write: every counter key must be valid UTF-8 (SQLite binds text as UTF-8)."""
    return all(part.encode("utf-8") is not None for o in outcomes for key in o.keys() for part in key)


# -- datagrams -----------------------------------------------------------------------------------------

VALID = {"d": "a.test", "pr": "v=TLSRPTv1; rua=mailto:r@a.test", "dpv": "1",
         "policies": [{"policy-type": 2, "policy-domain": "a.test", "policy-string": ["version: STSv1"],
                       "mx-host": ["mx.a.test"], "t": 1, "f": 1,
                       "failure-details": [{"c": 202, "s": "192.0.2.1", "n": "mx.a.test", "r": "198.51.100.7"}]}]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)

# The places in VALID a stranger may put anything: (path of keys and indexes, ...).
PATHS = [("d",), ("dpv",), ("policies",), ("policies", 0), ("policies", 0, "policy-type"),
         ("policies", 0, "policy-domain"), ("policies", 0, "policy-string"), ("policies", 0, "policy-string", 0),
         ("policies", 0, "mx-host"), ("policies", 0, "f"), ("policies", 0, "failure-details"),
         ("policies", 0, "failure-details", 0), ("policies", 0, "failure-details", 0, "c"),
         ("policies", 0, "failure-details", 0, "s"), ("policies", 0, "failure-details", 0, "n")]


def replaced(path: tuple, value: object) -> dict:
    message = json.loads(json.dumps(VALID))
    target = message
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return message


def check_datagram(data: bytes) -> None:
    try:
        outcomes = parse_datagram(data, 0.0)
    except DatagramError:
        return
    assert outcomes and storable(outcomes)


@CI
@given(st.binary(max_size=512))
def test_datagram_any_bytes(data):
    check_datagram(data)


@CI
@given(st.sampled_from(PATHS), json_values)
def test_datagram_any_value_anywhere(path, value):
    check_datagram(json.dumps(replaced(path, value)).encode())


@pytest.mark.parametrize("data", [
    b"[" * 100000 + b"]" * 100000,                                       # RecursionError before
    b'{"d": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    b'{"d": 1' + b"0" * 5000 + b"}",                                     # past int_max_str_digits
    json.dumps(replaced(("policies", 0, "failure-details", 0, "c"), [202])).encode(),   # unhashable before
    json.dumps(replaced(("policies", 0, "policy-type"), {"a": 1})).encode(),
    json.dumps(replaced(("policies", 0, "failure-details", 0, "n"), "\ud800")).encode(),  # lone surrogate
    json.dumps(replaced(("policies", 0, "policy-string", 0), "a\udfffb")).encode(),
    json.dumps(replaced(("d",), "a\ud800.test")).encode(),
    json.dumps(replaced(("policies", 0, "f"), True)).encode(),          # a bool is not the integer 1
    b"{}" + b" " * 70000,                                                # longer than any datagram
])
def test_datagram_hostile_inputs_are_datagram_errors(data):
    with pytest.raises(DatagramError):
        parse_datagram(data, 0.0)


def test_datagram_valid_one_still_parses():
    [outcome] = parse_datagram(json.dumps(VALID).encode(), 0.0)
    assert outcome.failed and outcome.failures[0].receiving_mx_hostname == "mx.a.test"


# -- _smtp._tls records --------------------------------------------------------------------------------

record_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["v=TLSRPTv1", ";", " ", "\t", "rua=", "mailto:", "https://", "[", "]", "_", "@",
                              "%2C", ",", "a.test", ":", "/", "x", "ext=1", "?", "é", "\ud800", "::1"]),
             max_size=40).map("".join),
)


@CI
@given(st.lists(record_texts, max_size=3))
def test_record_any_text(records):
    result = parse_tlsrpt_records(records)
    assert isinstance(result, (TlsrptRecord, NoTlsrpt))
    if isinstance(result, TlsrptRecord):
        assert result.destinations and all(isinstance(d, Destination) for d in result.destinations)
        assert all(d.scheme in ("mailto", "https") for d in result.destinations)
    else:
        assert result.reason and len(result.reason) < 2000


@pytest.mark.parametrize("record, usable, rejected", [
    ("v=TLSRPTv1; rua=https://[x", [], ["https://[x"]),                         # raised ValueError before
    ("v=TLSRPTv1; rua=https://a_b.test/r,mailto:r@a.test", ["mailto:r@a.test"], ["https://a_b.test/r"]),
    ("v=TLSRPTv1; rua=https://c.test:99999/r,https://c.test/r", ["https://c.test/r"], ["https://c.test:99999/r"]),
    ("v=TLSRPTv1; rua=https://[2001:db8::1]/r", ["https://[2001:db8::1]/r"], []),
    ("v=TLSRPTv1; rua=https://192.0.2.1/r", ["https://192.0.2.1/r"], []),
    ("v=TLSRPTv1; rua=mailto:not-an-address,https://c.test/r", ["https://c.test/r"], ["mailto:not-an-address"]),
])
def test_record_unusable_destinations_are_named(record, usable, rejected):
    result = parse_tlsrpt_records([record])
    if not usable:
        assert isinstance(result, NoTlsrpt) and all(uri in result.reason for uri in rejected)
        return
    assert isinstance(result, TlsrptRecord)
    assert [d.uri for d in result.destinations] == usable
    assert [uri for uri, reason in result.rejected] == rejected and all(r for _, r in result.rejected)


# -- log lines and Exim events ---------------------------------------------------------------------------

POSTFIX_PIECES = ["postfix/smtp[1]: ", "postfix/cleanup[2]: ", "postfix/qmgr[3]: ", "Q1: ", "to=<", ">", "u@a.test",
                  ", ", "orig_to=<x>, ", "relay=", "mx.a.test", "[", "]", ":25", "192.0.2.1", "status=", "sent",
                  "deferred", " (", ")", "Verified TLS connection established to ", "Untrusted ",
                  "certificate verification failed for ", "hostname mismatch", "message-id=<", ".tlsrpt@",
                  "removed", "TLS is required, but was not offered", "Server certificate not verified", "\ud800",
                  "é", "\x00", " "]
EXIM_PIECES = ["1rAbCd-000123-AB ", "<= ", "=> ", "== ", "-> ", "u@a.test ", "<u@a.test> ", " H=", "mx.a.test", " [",
               "192.0.2.1", "]", ": ", "X=TLS1.3:x:256", " CV=yes", " CV=dane", " id=", ".tlsrpt@s.test",
               "defer (-37)", "TLS session: certificate has expired", "did not offer TLS", "\ud800", " "]
EVENT_PIECES = ["tlsrpt-v1", " ", "event=", "msg:delivery", "tls:fail:connect", "dane:fail", "msg:host:defer",
                "domain=", "a.test", "host=", "ip=", "cipher=", "cv=", "dane=", "yes", "report=", "0", "1", "data=",
                "=", "\ud800", "TLS"]


def pieces(parts: list[str]):
    return st.one_of(st.text(max_size=200), st.lists(st.sampled_from(parts), max_size=30).map("".join))


@CI
@given(st.lists(pieces(POSTFIX_PIECES), max_size=6))
def test_postfix_log_any_lines(lines):
    correlator = PostfixLogCorrelator(no_policy, "203.0.113.9")
    for line in lines:
        outcomes = correlator.feed(line, 0.0)
        assert isinstance(outcomes, list) and all(isinstance(o, Outcome) for o in outcomes)


@CI
@given(st.lists(pieces(EXIM_PIECES), max_size=6))
def test_exim_log_any_lines(lines):
    correlator = EximLogCorrelator(no_policy)
    for line in lines:
        outcomes = correlator.feed(line, 0.0)
        assert isinstance(outcomes, list) and all(isinstance(o, Outcome) for o in outcomes)


@CI
@given(pieces(EVENT_PIECES))
def test_exim_event_any_line(line):
    try:
        event = parse_event(line)
    except EventError:
        return
    outcomes = event_outcomes(event, 0.0, no_policy)
    assert all(isinstance(o, Outcome) for o in outcomes)


@CI
@given(st.dictionaries(st.sampled_from(["SYSLOG_IDENTIFIER", "SYSLOG_PID", "_PID", "MESSAGE", "__CURSOR"]),
                       json_values))
def test_journal_entry_any_fields(entry):
    line = journal_line(entry)
    assert line is None or (isinstance(line, str) and line.encode("utf-8"))


def test_journal_entry_with_a_lone_surrogate_is_dropped():
    assert journal_line({"SYSLOG_IDENTIFIER": "postfix/smtp", "SYSLOG_PID": "1", "MESSAGE": "x\ud800"}) is None


# -- linear time -------------------------------------------------------------------------------------------

SIZE = 65536
POSTFIX_ADVERSARIAL = [
    "postfix/smtp[1]: Q: to=<a@b.c>, relay=h[1.2.3.4]:25, " + "status=x (" * (SIZE // 10),   # 3.7 s before
    "postfix/smtp[1]: Q: to=<a@b.c>, relay=h[" + "1" * SIZE,
    "postfix/smtp[1]: " + "certificate verification failed for a[" * (SIZE // 40),
    "postfix/smtp[1]: Verified TLS connection established to a[" + " " * SIZE,
    "/smtp[1" * (SIZE // 7),
    "postfix/smtp[1]: Q: to=<" + "a" * SIZE,
]
EXIM_ADVERSARIAL = [
    "1rAbCd-000123-AB => a@b.c" + " H=a [" * (SIZE // 6),                                        # 6.1 s before
    "1rAbCd-000123-AB == a@b.c H=" + "a" * SIZE,
    "1rAbCd-000123-AB " * (SIZE // 17),
    "1rAbCd-000123-AB <= a@b.c" + " id=" * (SIZE // 4),
]


@pytest.mark.parametrize("line", POSTFIX_ADVERSARIAL)
def test_postfix_log_line_time_is_linear(line):
    correlator = PostfixLogCorrelator(no_policy)
    assert elapsed(lambda: correlator.feed(line, 0.0)) < LINEAR_BUDGET_S


@pytest.mark.parametrize("line", EXIM_ADVERSARIAL)
def test_exim_log_line_time_is_linear(line):
    correlator = EximLogCorrelator(no_policy)
    assert elapsed(lambda: correlator.feed(line, 0.0)) < LINEAR_BUDGET_S


@pytest.mark.parametrize("record", [
    "v=TLSRPTv1;" + " " * SIZE + "x", "v=TLSRPTv1; rua=" + " " * SIZE + "x", "v=TLSRPTv1; rua=" + ", " * SIZE,
    "v=TLSRPTv1; rua=https://" + "a." * (SIZE // 2), "v=TLSRPTv1; rua=mailto:" + "@" * SIZE,
])
def test_record_time_is_linear(record):
    assert elapsed(lambda: parse_tlsrpt_records([record])) < LINEAR_BUDGET_S


def test_exim_event_time_is_linear():
    line = "tlsrpt-v1 " + "event= " * (SIZE // 7) + " data=x"
    assert elapsed(lambda: pytest.raises(EventError, parse_event, line)) < LINEAR_BUDGET_S


def elapsed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
