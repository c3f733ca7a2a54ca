"""A policy decision as the table result one client dialect understands (postconf(5) smtp_tls_policy_maps).

Pure rendering: :func:`mtasts_resolver.policy.decide.decide` has already
chosen the policy; this module only spells it.  Everything that reaches an
answer from outside (mx patterns, policy lines, DNS error text) is checked
here to be one line without control characters, and the Postfix ≥ 3.10
TLSRPT attributes follow Postfix's own tokenizer (``mystrtokq`` and
``extpar`` in Postfix's src/util, used by src/smtp/smtp_tls_policy.c):
attributes are split at spaces and commas outside balanced ``{ }``, and a
``{ name = value }`` attribute ends at the brace that balances its opening
one.  Postfix has no escape character there, so a policy line whose braces
do not balance could end ``{ policy_string = ... }`` early and inject
attributes (``servername=``, ``match=``): such lines are left out
(:func:`dropped_lines` names them for the log), as are lines with control
characters.  Tabs become spaces, which is what Postfix itself does to the
value (``EXTPAR_FLAG_NORMAL_WS``).
"""

from __future__ import annotations

import enum
import unicodedata

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.decide import Decision, Level, NoPolicy, Temp, Verdict
from mtasts_resolver.policy.model import StsPolicy
from mtasts_resolver.policy.sts import valid_mx_pattern

#: Keep TEMP reasons short: Postfix logs them with the deferral.
MAX_REASON_CHARS = 200
#: Unicode categories that must never reach an answer: controls (C0, DEL, C1),
#: format characters (invisible: bidi overrides, zero-width), line/paragraph
#: separators and lone surrogates (not encodable as UTF-8 at all).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

_DANE_ANSWERS = {Level.DANE: Answer(AnswerKind.FOUND, "dane"), Level.DANE_ONLY: Answer(AnswerKind.FOUND, "dane-only")}
NO_USABLE_MX = Answer(AnswerKind.TEMP, "MTA-STS policy has no mx pattern usable in an answer")


class Dialect(enum.Enum):
    """How a client wants its policy spelled.

    ``POSTFIX`` is the classic table result (``secure match=... servername=hostname``),
    what every Postfix understands; Exim's readsocket router (contrib/exim)
    reads the very same words, so it is Exim's dialect too.
    ``POSTFIX_TLSRPT`` adds the Postfix ≥ 3.10 TLSRPT attributes, which
    Postfix ≤ 3.9 rejects as a malformed policy: only the maps named in
    ``tlsrpt.attribute_maps`` get it.
    """

    POSTFIX = "postfix"
    POSTFIX_TLSRPT = "postfix-tlsrpt"


def postfix_match(pattern: str) -> str:
    """Map one RFC 8461 mx pattern to a Postfix ``match=`` element.

    Postfix has no one-label wildcard: ``*.example.com`` becomes
    ``.example.com``, which Postfix matches at any depth (so
    ``a.b.example.com`` is accepted too).  Postfix ≥ 3.10.5 narrows this back
    to one label with the ``mx_host_pattern`` attributes of the TLSRPT answer.
    """
    return pattern[1:] if pattern.startswith("*.") else pattern


def render(verdict: Verdict, dialect: Dialect) -> Answer:
    """The table result for ``verdict`` in ``dialect``."""
    if isinstance(verdict, NoPolicy):
        return NOT_FOUND
    if isinstance(verdict, Temp):
        return Answer(AnswerKind.TEMP, one_line(verdict.reason, MAX_REASON_CHARS))
    if verdict.level is not Level.SECURE:
        return _DANE_ANSWERS[verdict.level]
    return _secure(verdict, dialect is Dialect.POSTFIX_TLSRPT)


def _secure(decision: Decision, tlsrpt: bool) -> Answer:
    patterns = [p for p in decision.match if valid_mx_pattern(p)]
    if not patterns:
        return NO_USABLE_MX   # "match=" must not be empty; fail closed, never a weaker policy
    match = ":".join(dict.fromkeys(postfix_match(p) for p in patterns))
    parts = [f"secure match={match} servername={decision.servername}"]
    if tlsrpt and valid_mx_pattern(decision.domain) and not decision.domain.startswith("*."):
        parts.append(f"policy_type=sts policy_domain={decision.domain}")
        parts.extend(f"mx_host_pattern={p}" for p in patterns)
        assert decision.sts is not None
        for line in decision.sts.lines:
            value = policy_string(line)
            if value is not None:
                parts.append(f"{{ policy_string = {value} }}")
    return Answer(AnswerKind.FOUND, " ".join(parts))


def policy_string(line: str) -> str | None:
    """``line`` as a Postfix ``{ policy_string = ... }`` value, or None when it cannot be one.

    None for a line with a control or invisible format character, or whose
    braces do not balance the way Postfix's ``balpar`` counts them (each
    ``}`` closing an earlier ``{``, none left open).  Surrounding blanks go:
    Postfix trims them too.
    """
    value = line.replace("\t", " ").strip(" ")
    if not value or _has_unsafe(value):
        return None
    level = 0
    for char in value:
        if char == "{":
            level += 1
        elif char == "}":
            level -= 1
            if level < 0:
                return None
    return value if level == 0 else None


def dropped_lines(policy: StsPolicy) -> tuple[str, ...]:
    """The policy's lines that :func:`render` leaves out of a TLSRPT answer (for the log)."""
    return tuple(line for line in policy.lines if policy_string(line) is None)


def one_line(text: str, limit: int) -> str:
    """``text`` safe for any answer: unsafe characters as ``?``, at most ``limit`` characters."""
    if _has_unsafe(text):
        text = "".join("?" if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _has_unsafe(text: str) -> bool:
    if text.isascii():
        return not text.isprintable()   # fast path: ASCII controls are exactly the non-printables
    return any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in text)
