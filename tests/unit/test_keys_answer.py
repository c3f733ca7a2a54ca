"""Key normalisation and the Postfix answer text of an MTA-STS decision: pure functions."""

import time

import pytest

from mtasts_resolver.lookup import AnswerKind
from mtasts_resolver.policy.answer import Dialect, render
from mtasts_resolver.policy.decide import decide
from mtasts_resolver.policy.keys import MAX_KEY_CHARS, KeyKind, parse_key
from mtasts_resolver.policy.model import Mode, StsPolicy


@pytest.mark.parametrize("key, kind, domain", [
    ("example.com", KeyKind.DOMAIN, "example.com"),
    ("Example.COM.", KeyKind.DOMAIN, "example.com"),
    ("example.com:25", KeyKind.DOMAIN, "example.com"),
    ("bücher.example", KeyKind.DOMAIN, "xn--bcher-kva.example"),
    ("BÜCHER.example", KeyKind.DOMAIN, "xn--bcher-kva.example"),
    ("[mail.example.com]", KeyKind.EXPLICIT_HOST, ""),
    ("[mail.example.com]:587", KeyKind.EXPLICIT_HOST, ""),
    (".example.com", KeyKind.PARENT_PROBE, ""),
    (".com", KeyKind.PARENT_PROBE, ""),
    ("", KeyKind.INVALID, ""),
    ("localhost", KeyKind.INVALID, ""),
    ("a..example", KeyKind.INVALID, ""),
    ("-bad.example", KeyKind.INVALID, ""),
    ("example.com:smtp", KeyKind.INVALID, ""),
    ("a" * 64 + ".example", KeyKind.INVALID, ""),
    # the longest names there are still pass the length check before IDNA...
    (".".join(["a" * 63] * 3 + ["a" * 61]) + ".:65535", KeyKind.DOMAIN, ".".join(["a" * 63] * 3 + ["a" * 61])),
    ("ü" * 30 + ".example", KeyKind.DOMAIN, "xn--tdaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example"),
    # ...and anything longer is not a domain, whatever it holds
    ("a" * (MAX_KEY_CHARS + 1), KeyKind.INVALID, ""),
    ("ü" * 10_000, KeyKind.INVALID, ""),
    ("[" + "x" * 10_000 + "]", KeyKind.INVALID, ""),
])
def test_parse_key(key, kind, domain):
    parsed = parse_key(key)
    assert parsed.kind is kind
    assert parsed.domain == domain


@pytest.mark.parametrize("key", ["ü" * 10_000, "ü" * 10_000 + ".example", ("ü" * 60 + ".") * 4 + "de",
                                 "\u00ad" * 10_000 + "a.example"])
def test_hostile_keys_cost_little_cpu(key):
    """A 10 kB non-ASCII key once took 3.5 s in the event loop (Debian's python3-idna)."""
    started = time.process_time()
    for _ in range(10):
        assert parse_key(key).kind is KeyKind.INVALID
    assert (time.process_time() - started) / 10 < 0.05


POLICY = StsPolicy(Mode.ENFORCE, ("mail.example.com", "*.example.net", "*.example.org", "mail.example.com"),
                   86400, ("version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net",
                           "mx: *.example.org", "mx: mail.example.com", "max_age: 86400"))


def answer(policy: StsPolicy, dialect: Dialect):
    return render(decide(None, "example.com", policy), dialect)


def test_enforce_answer_maps_wildcards_and_dedups():
    plain = answer(POLICY, Dialect.POSTFIX)
    assert plain.kind is AnswerKind.FOUND
    assert plain.text == "secure match=mail.example.com:.example.net:.example.org servername=hostname"


def test_tlsrpt_attributes_only_on_request():
    text = answer(POLICY, Dialect.POSTFIX_TLSRPT).text
    assert text.startswith("secure match=mail.example.com:.example.net:.example.org servername=hostname "
                           "policy_type=sts policy_domain=example.com ")
    assert "mx_host_pattern=*.example.net" in text
    assert "{ policy_string = mode: enforce }" in text
    assert "policy_type" not in answer(POLICY, Dialect.POSTFIX).text


@pytest.mark.parametrize("mode", [Mode.TESTING, Mode.NONE])
def test_non_enforce_is_notfound(mode):
    policy = StsPolicy(mode, ("mail.example.com",), 86400, ())
    assert answer(policy, Dialect.POSTFIX_TLSRPT).kind is AnswerKind.NOTFOUND
