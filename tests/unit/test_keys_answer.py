"""Key normalisation and Postfix answer text: pure functions."""

import pytest

from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.lookup import AnswerKind
from mtasts_resolver.policy.answer import sts_answer
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
])
def test_parse_key(key, kind, domain):
    parsed = parse_key(key)
    assert parsed.kind is kind
    assert parsed.domain == domain


POLICY = StsPolicy(Mode.ENFORCE, ("mail.example.com", "*.example.net", "*.example.org", "mail.example.com"),
                   86400, ("version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net",
                           "mx: *.example.org", "mx: mail.example.com", "max_age: 86400"))


def test_enforce_answer_maps_wildcards_and_dedups():
    answer = sts_answer("example.com", POLICY, tlsrpt=False)
    assert answer.kind is AnswerKind.FOUND
    assert answer.text == "secure match=mail.example.com:.example.net:.example.org servername=hostname"


def test_tlsrpt_attributes_only_on_request():
    answer = sts_answer("example.com", POLICY, tlsrpt=True)
    assert answer.text.startswith("secure match=mail.example.com:.example.net:.example.org servername=hostname "
                                  "policy_type=sts policy_domain=example.com ")
    assert "mx_host_pattern=*.example.net" in answer.text
    assert "{ policy_string = mode: enforce }" in answer.text
    assert "policy_type" not in sts_answer("example.com", POLICY, tlsrpt=False).text


@pytest.mark.parametrize("mode", [Mode.TESTING, Mode.NONE])
def test_non_enforce_is_notfound(mode):
    policy = StsPolicy(mode, ("mail.example.com",), 86400, ())
    assert sts_answer("example.com", policy, tlsrpt=True).kind is AnswerKind.NOTFOUND
