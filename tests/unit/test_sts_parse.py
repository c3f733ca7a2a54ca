"""RFC 8461 parsing and matching: pure functions, table-driven."""

import pytest

from mtasts_resolver.policy.model import FailureType, Mode, NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.sts import media_type_ok, mx_matches, parse_policy, parse_txt_records


@pytest.mark.parametrize("records, expected_id", [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    (["v=STSv1; id=abc"], "abc"),
    (["v=STSv1;id=abc"], "abc"),
    (["v=STSv1; id=abc; ext=value"], "abc"),
    (["v=spf1 -all", "v=STSv1; id=only"], "only"),
])
def test_txt_valid(records, expected_id):
    result = parse_txt_records(records)
    assert isinstance(result, StsTxt)
    assert result.id == expected_id


@pytest.mark.parametrize("records, reason", [
    ([], "no v=STSv1"),
    (["v=spf1 -all"], "no v=STSv1"),
    (["v=STSv1; id=a", "v=STSv1; id=b"], "2 v=STSv1"),
    (["v=STSv1"], "malformed"),
    (["v=STSv1; ext=x"], "no id"),
    (["v=STSv1; id="], "malformed field"),
    (["v=STSv1; id=" + "a" * 33], "malformed field"),
    (["v=STSv1; id=a-b"], "malformed field"),
    (["v=STSv1; id=a; id=b"], "malformed field"),
    (["v=STSv10; id=a"], "malformed"),
])
def test_txt_invalid(records, reason):
    result = parse_txt_records(records)
    assert isinstance(result, NoStsTxt)
    assert reason in result.reason


ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"


@pytest.mark.parametrize("body", [ENFORCE, ENFORCE.replace(b"\r\n", b"\n"), ENFORCE.rstrip(b"\r\n")])
def test_policy_enforce_crlf_and_lf(body):
    policy = parse_policy(body)
    assert policy == StsPolicy(Mode.ENFORCE, ("mail.example.com", "*.example.net"), 86400, (
        "version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net", "max_age: 86400"))


def test_policy_unknown_fields_ignored_and_none_needs_no_mx():
    policy = parse_policy(b"version: STSv1\nmode: none\nmax_age: 0\nfuture_key: some value\n")
    assert isinstance(policy, StsPolicy)
    assert policy.mode is Mode.NONE and policy.mx == () and policy.max_age == 0


@pytest.mark.parametrize("body, reason", [
    (b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "unsupported version"),
    (b"mode: enforce\nmx: a.example\nmax_age: 1\n", "missing version"),
    (b"version: STSv1\nmode: enforced\nmx: a.example\nmax_age: 1\n", "unknown mode"),
    (b"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", "unknown mode"),
    (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
    (b"version: STSv1\nmode: testing\nmx: a.example\nmax_age: 31557601\n", "over the RFC limit"),
    (b"version: STSv1\nmode: testing\nmx: a.example\nmax_age: -1\n", "bad max_age"),
    (b"version: STSv1\nmode: testing\nmx: a.example\nmax_age: 12345678901\n", "bad max_age"),
    (b"version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 1\n", "more than once"),
    (b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n", "bad mx pattern"),
    (b"version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", "bad mx pattern"),
    (b"<html>not a policy</html>\n", "malformed line"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n\xff\n", "not UTF-8"),
])
def test_policy_invalid(body, reason):
    result = parse_policy(body)
    assert isinstance(result, StsFailure)
    assert result.type is FailureType.INVALID
    assert reason in result.detail


@pytest.mark.parametrize("pattern, host, matches", [
    ("mail.example.com", "mail.example.com", True),
    ("mail.example.com", "MAIL.Example.com.", True),
    ("mail.example.com", "mail2.example.com", False),
    ("*.example.com", "mx1.example.com", True),
    ("*.example.com", "a.mx1.example.com", False),   # exactly one label (RFC 8461 §4.1)
    ("*.example.com", "example.com", False),
    ("*.example.com", ".example.com", False),
])
def test_mx_matches(pattern, host, matches):
    assert mx_matches(pattern, host) is matches


@pytest.mark.parametrize("value, ok", [
    ("text/plain", True), ("text/plain; charset=utf-8", True), ("TEXT/PLAIN", True),
    ("text/html", False), ("", False), (None, False), ("text/plainx", False),
])
def test_media_type(value, ok):
    assert media_type_ok(value) is ok
