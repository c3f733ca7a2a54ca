"""Rendering a decision per client dialect: what reaches the answer is safe for Postfix's policy syntax."""

from __future__ import annotations

import pytest

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.answer import (
    MAX_REASON_CHARS,
    NO_USABLE_MX,
    Dialect,
    dropped_lines,
    one_line,
    policy_string,
    render,
)
from mtasts_resolver.policy.decide import DANE, DANE_ONLY, NO_POLICY, Decision, Level, Temp
from mtasts_resolver.policy.model import Mode, StsPolicy
from mtasts_resolver.policy.sts import parse_policy

BOTH = list(Dialect)


@pytest.mark.parametrize("dialect", BOTH)
@pytest.mark.parametrize("verdict, expected", [
    (NO_POLICY, NOT_FOUND),
    (DANE_ONLY, Answer(AnswerKind.FOUND, "dane-only")),   # Postfix reports TLSA itself: no TLSRPT attributes
    (DANE, Answer(AnswerKind.FOUND, "dane")),
    (Temp("DANE status unknown, deferring: SERVFAIL"), Answer(AnswerKind.TEMP, "DANE status unknown, deferring: SERVFAIL")),
    (Temp("MX lookup failed\r\nOK secure"), Answer(AnswerKind.TEMP, "MX lookup failed??OK secure")),
])
def test_render_table(verdict, dialect, expected):
    assert render(verdict, dialect) == expected


def test_temp_reason_is_bounded():
    answer = render(Temp("x" * 5000), Dialect.POSTFIX)
    assert answer.kind is AnswerKind.TEMP and len(answer.text) == MAX_REASON_CHARS and answer.text.endswith("...")


@pytest.mark.parametrize("line, value", [
    ("mode: enforce", "mode: enforce"),
    ("mx:\tmx.example.com", "mx: mx.example.com"),          # Postfix turns the tab into a space too
    ("note: {balanced} {nested {braces}}", "note: {balanced} {nested {braces}}"),
    ("note: trailing blank ", "note: trailing blank"),
    # a brace that would close "{ policy_string = ... }" early and inject attributes
    ("x: } servername=evil.example match=evil.example {", None),
    ("x: }", None),
    ("x: {", None),
    ("x: }{", None),
    # control and invisible characters: never in an answer
    ("x: a\rb", None),
    ("x: a\x00b", None),
    ("x: a\x1bb", None),
    ("x: a\x7fb", None),
    ("x: a\x85b", None),
    ("x: a\u2028b", None),
    ("x: a\u202eb", None),
    ("x: ünïcödé", "x: ünïcödé"),
])
def test_policy_string(line, value):
    assert policy_string(line) == value


HOSTILE = parse_policy("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"
                       "x: } servername=evil.example {\nx: a\x1bb\nx: {ok}\n".encode())


def test_hostile_policy_lines_stay_out_of_the_tlsrpt_answer():
    assert isinstance(HOSTILE, StsPolicy)   # the parser accepts unknown fields (RFC 8461 §3.2)
    text = render(Decision(Level.SECURE, "example.com", HOSTILE), Dialect.POSTFIX_TLSRPT).text
    assert "evil" not in text and "\x1b" not in text
    assert "{ policy_string = x: {ok} }" in text
    assert text.count("servername=") == 1
    assert dropped_lines(HOSTILE) == ("x: } servername=evil.example {", "x: a\x1bb")


def test_invalid_mx_patterns_never_reach_an_answer():
    # parse_policy never makes these; a policy built otherwise must not smuggle them through
    policy = StsPolicy(Mode.ENFORCE, ("mx.example.com", "evil.example servername=x", "*.example.net"), 86400, ())
    text = render(Decision(Level.SECURE, "example.com", policy), Dialect.POSTFIX_TLSRPT).text
    assert text == ("secure match=mx.example.com:.example.net servername=hostname policy_type=sts "
                    "policy_domain=example.com mx_host_pattern=mx.example.com mx_host_pattern=*.example.net")


def test_no_usable_mx_pattern_fails_closed():
    policy = StsPolicy(Mode.ENFORCE, ("bad pattern",), 86400, ())
    assert render(Decision(Level.SECURE, "example.com", policy), Dialect.POSTFIX) == NO_USABLE_MX


@pytest.mark.parametrize("text, limit, expected", [
    ("short", 200, "short"), ("a\nb", 200, "a?b"), ("abcdefgh", 6, "abc..."), ("\u2029", 10, "?")])
def test_one_line(text, limit, expected):
    assert one_line(text, limit) == expected
