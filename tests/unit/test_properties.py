"""Property tests (hypothesis) of the pure code strangers' bytes go through.

Keys come from Postfix (ultimately from a recipient address), TXT records from
any domain's DNS, policy bodies from any domain's policy host: each function
must be total (its own result or its own typed failure for ANY input, never an
exception) and cheap, and nothing may reach an answer that Postfix would read
as more than what we meant.  ``check_postfix_policy`` re-implements the way
Postfix splits a policy table result (src/util/mystrtok.c ``mystrtokq``,
extpar.c, balpar.c, split_nameval.c as used by src/smtp/smtp_tls_policy.c) to
check the answers as Postfix would read them.

The budget is small so the suite stays fast in CI: ``max_examples=200``.
"""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtasts_resolver.lookup import AnswerKind
from mtasts_resolver.policy.answer import Dialect, policy_string, render
from mtasts_resolver.policy.decide import Decision, Level, Temp
from mtasts_resolver.policy.keys import MAX_DOMAIN_OCTETS, KeyKind, parse_key
from mtasts_resolver.policy.model import NoStsTxt, StsFailure, StsPolicy, StsTxt
from mtasts_resolver.policy.sts import parse_policy, parse_txt_records, valid_mx_pattern

BUDGET = settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
POSTFIX_SEPARATORS = ", \t\r\n"   # CHARS_COMMA_SP
HEAD = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 86400\n"

names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domains = st.lists(names, min_size=2, max_size=4).map(".".join)
unicode_keys = st.text(max_size=300)
key_like = st.one_of(
    unicode_keys, domains,
    st.tuples(domains, st.sampled_from(["", ".", ":25", ":smtp", "..", ":"])).map("".join),
    st.tuples(st.sampled_from(["[", ".", " ", "ü", "xn--"]), domains).map("".join))


def no_control_characters(text: str) -> bool:
    """No C0/C1 control, DEL, line or paragraph separator, invisible format character or lone surrogate."""
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") for c in text)


def check_postfix_policy(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The level and ``(name, value)`` attributes Postfix reads from a policy result; AssertionError if it cannot."""
    tokens, i = [], 0
    while True:
        while i < len(text) and text[i] in POSTFIX_SEPARATORS:
            i += 1
        if i == len(text):
            break
        start, level = i, 0
        while i < len(text):
            char = text[i]
            if char == "{":
                level += 1
            elif level > 0 and char == "}":
                level -= 1
            elif level == 0 and char in POSTFIX_SEPARATORS:
                break
            i += 1
        tokens.append(text[start:i])
    attributes = []
    for token in tokens[1:]:
        if token.startswith("{"):
            depth, end = 0, -1
            for j, char in enumerate(token):       # balpar()
                depth += {"{": 1, "}": -1}.get(char, 0)
                if depth == 0:
                    end = j
                    break
            assert end == len(token) - 1, f"Postfix: missing '}}' or text after it in {token!r}"
            token = " ".join(token[1:-1].split())  # EXTPAR_FLAG_STRIP | EXTPAR_FLAG_NORMAL_WS
        name, eq, value = token.partition("=")
        assert eq and name.strip() and not any(c.isspace() for c in name.strip()), f"Postfix: bad {token!r}"
        attributes.append((name.strip(), value.strip()))
    return tokens[0], attributes


@BUDGET
@given(key_like)
def test_parse_key_is_total_and_normalises_to_an_ldh_name(key):
    parsed = parse_key(key)
    assert parsed.kind in KeyKind
    if parsed.kind is KeyKind.DOMAIN:
        domain = parsed.domain
        assert domain.isascii() and domain == domain.lower() and len(domain) <= MAX_DOMAIN_OCTETS
        assert valid_mx_pattern(domain) and not domain.startswith("*.")   # safe in an answer
        assert parse_key(domain) == parsed                                 # idempotent
    else:
        assert parsed.domain == ""


txt_records = st.lists(st.one_of(
    st.text(max_size=200),
    st.tuples(st.just("v=STSv1"), st.text(alphabet=" \t;=id1abcx", max_size=60)).map("".join)), max_size=3)


@BUDGET
@given(txt_records)
def test_parse_txt_records_is_total(records):
    result = parse_txt_records(records)
    assert isinstance(result, (StsTxt, NoStsTxt))
    if isinstance(result, StsTxt):
        assert result.id.isalnum() and result.record in records


policy_bodies = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.text(max_size=60), max_size=12).map(lambda lines: (HEAD + "\n".join(lines)).encode()))


@BUDGET
@given(policy_bodies)
def test_parse_policy_is_total(body):
    result = parse_policy(body)
    assert isinstance(result, (StsPolicy, StsFailure))
    if isinstance(result, StsPolicy):
        assert all(valid_mx_pattern(p) for p in result.mx)
        assert all("\n" not in line for line in result.lines)


@BUDGET
@given(st.lists(st.text(max_size=40), max_size=8), domains)
def test_tlsrpt_answer_is_what_postfix_reads_and_no_more(extra_lines, domain):
    policy = parse_policy((HEAD + "".join(f"ext: {line}\n" for line in extra_lines)).encode())
    if not isinstance(policy, StsPolicy):
        return   # e.g. a line break in the generated text made a malformed line: nothing is answered
    answer = render(Decision(Level.SECURE, domain, policy), Dialect.POSTFIX_TLSRPT)
    assert answer.kind is AnswerKind.FOUND and no_control_characters(answer.text)
    level, attributes = check_postfix_policy(answer.text)
    assert level == "secure"
    names = [name for name, _ in attributes]
    assert names.count("match") == names.count("servername") == names.count("policy_domain") == 1
    assert set(names) == {"match", "servername", "policy_type", "policy_domain", "mx_host_pattern", "policy_string"}
    assert dict(attributes)["servername"] == "hostname" and dict(attributes)["policy_domain"] == domain
    assert [v for n, v in attributes if n == "mx_host_pattern"] == ["mx.example.com", "*.example.net"]
    expected = [v for v in map(policy_string, policy.lines) if v is not None]
    assert [" ".join(v.split()) for n, v in attributes if n == "policy_string"] == [" ".join(v.split()) for v in expected]


@BUDGET
@given(st.text(max_size=500), st.sampled_from(list(Dialect)))
def test_temp_answers_are_one_printable_line(reason, dialect):
    answer = render(Temp(reason), dialect)
    assert answer.kind is AnswerKind.TEMP and no_control_characters(answer.text) and len(answer.text) <= 200


@BUDGET
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.sampled_from(list(Dialect)))
def test_answers_from_any_patterns_stay_parseable(patterns, dialect):
    policy = StsPolicy(parse_policy(HEAD.encode()).mode, tuple(patterns), 86400, tuple(patterns))
    answer = render(Decision(Level.SECURE, "example.com", policy), dialect)
    assert no_control_characters(answer.text)
    if answer.kind is AnswerKind.FOUND:
        level, attributes = check_postfix_policy(answer.text)
        assert level == "secure" and [n for n, _ in attributes].count("servername") == 1


LONG = 60_000   # just under the 64 KiB policy size cap


@pytest.mark.parametrize("parse, data", [
    (parse_policy, (HEAD + "x: x" + " " * LONG + "y\n").encode()),          # was 20 s: regex backtracking
    (parse_policy, (HEAD + "x: " + "{" * LONG + "\n").encode()),
    (parse_policy, ("version: STSv1\nmode: enforce\nmx: " + "a." * (LONG // 2) + "-\nmax_age: 1\n").encode()),
    (parse_policy, ("mx: a.example\n" * (LONG // 14)).encode()),
    (parse_policy, b"\xff" * LONG),
    (lambda text: parse_txt_records([text]), "v=STSv1; id=1; a=" + "\t" * LONG + "b"),   # was 11 s
    (lambda text: parse_txt_records([text]), "v=STSv1;" + " ;" * LONG),
    (lambda text: parse_txt_records([text] * 50), "v=STSv1; id=1"),
])
def test_parsers_take_linear_time_on_hostile_input(parse, data):
    started = time.process_time()
    parse(data)
    assert time.process_time() - started < 0.25


def test_rendering_a_huge_policy_takes_linear_time():
    lines = tuple(f"x{i}: " + "{}" * 200 for i in range(150))
    policy = StsPolicy(parse_policy(HEAD.encode()).mode, ("mx.example.com",) * 1000, 86400, lines)
    started = time.process_time()
    render(Decision(Level.SECURE, "example.com", policy), Dialect.POSTFIX_TLSRPT)
    assert time.process_time() - started < 0.25
