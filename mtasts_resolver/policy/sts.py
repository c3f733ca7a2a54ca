"""RFC 8461 parsing and matching: TXT records, policy files, MX patterns.

Pure functions of their input; the network side lives in
``mtasts_resolver.net.sts_resolver``.
"""

from __future__ import annotations

import re
import sys

from mtasts_resolver.policy.model import (
    FailureType,
    Mode,
    NoStsTxt,
    StsFailure,
    StsPolicy,
    StsTxt,
)

MAX_AGE_LIMIT_S = 31557600  # RFC 8461 §3.2: max_age is at most 31557600 (about 1 year)
POLICY_MEDIA_TYPE = "text/plain"  # RFC 8461 §3.3

_TXT_VERSION = "v=STSv1"
_WSP = " \t"
_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})+")


def valid_mx_pattern(pattern: str) -> bool:
    """An RFC 8461 §3.2 mx pattern in lower case: an LDH name, optionally ``*.`` first.

    Also the check that lets a pattern into an answer: it holds no space,
    comma, colon, brace or control character (Postfix's attribute syntax).
    """
    return _MX_PATTERN.fullmatch(pattern) is not None


def sts_txt_candidates(records: list[str]) -> list[str]:
    """The records that count as policy announcements: those starting with ``v=STSv1`` (RFC 8461 §3.1)."""
    return [r for r in records if r.startswith(_TXT_VERSION)]


def parse_txt_records(records: list[str]) -> StsTxt | NoStsTxt:
    """Pick the policy announcement from the TXT RRset of ``_mta-sts.DOMAIN``.

    ``records`` are the RRset's records, each with its character-strings
    already concatenated.  RFC 8461 §3.1: discard records not starting with
    ``v=STSv1``; anything but exactly one valid record means no policy.
    """
    candidates = sts_txt_candidates(records)
    if not candidates:
        return NoStsTxt("no v=STSv1 TXT record")
    if len(candidates) > 1:
        return NoStsTxt(f"{len(candidates)} v=STSv1 TXT records (exactly one allowed)")
    record = candidates[0]
    fields = _split_fields(record)
    if fields[0] != _TXT_VERSION or len(fields) < 2:
        return NoStsTxt(f"malformed TXT record {record!r}")
    if fields[-1] == "":
        fields.pop()  # trailing separator is allowed
    txt_id = None
    for field in fields[1:]:
        name, eq, value = field.partition("=")
        if name == "id" and eq and _TXT_ID.fullmatch(value) and txt_id is None:
            txt_id = value
        elif name == "id" or not (eq and _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            return NoStsTxt(f"malformed field {field!r} in TXT record")
    if txt_id is None:
        return NoStsTxt("TXT record has no id")
    return StsTxt(txt_id, record)


def _split_fields(record: str) -> list[str]:
    """``record`` split at each ``;``, blanks around the ``;`` removed (RFC 8461 §3.1 ``*WSP ";" *WSP``).

    String methods, not a regular expression: a regex that tries blanks
    before a ``;`` at every position of a long run of blanks costs time
    quadratic in the record's length (2.8 s for 32,000 tabs).
    """
    parts = record.split(";")
    last = len(parts) - 1
    fields = []
    for i, part in enumerate(parts):
        if i > 0:
            part = part.lstrip(_WSP)
        if i < last:
            part = part.rstrip(_WSP)
        fields.append(part)
    return fields


def parse_policy(body: bytes) -> StsPolicy | StsFailure:
    """Parse a policy file body per the RFC 8461 §3.2 grammar.

    Lines end in CRLF (LF accepted too), unknown fields are ignored,
    ``version``/``mode``/``max_age`` must appear exactly once and ``mx`` at
    least once unless the mode is ``none``.
    """
    def invalid(detail: str) -> StsFailure:
        return StsFailure(FailureType.INVALID, detail)

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return invalid("policy is not UTF-8")
    # Blank lines are outside the grammar but common (a trailing empty line);
    # skipping them rejects nothing that could change the policy's meaning.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    lines = [line for line in lines if line and not line.isspace()]
    single: dict[str, str] = {}
    mx: list[str] = []
    # Lines other than mx repeat across domains ("mode: enforce"): one shared
    # copy each keeps a cache of 100,000 policies some 20 MB smaller.
    kept: list[str] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return invalid(f"malformed line {line[:100]!r}")
        value = value.strip(_WSP)
        kept.append(line if name == "mx" else sys.intern(line))
        if name == "mx":
            pattern = value.lower()
            if not valid_mx_pattern(pattern):
                return invalid(f"bad mx pattern {value!r}")
            mx.append(pattern)
        elif name in ("version", "mode", "max_age"):
            if name in single:
                return invalid(f"{name} given more than once")
            single[name] = value
    for required in ("version", "mode", "max_age"):
        if required not in single:
            return invalid(f"missing {required}")
    if single["version"] != "STSv1":
        return invalid(f"unsupported version {single['version']!r}")
    try:
        mode = Mode(single["mode"])
    except ValueError:
        return invalid(f"unknown mode {single['mode']!r}")
    max_age_text = single["max_age"]
    if not (max_age_text.isascii() and max_age_text.isdigit() and len(max_age_text) <= 10):
        return invalid(f"bad max_age {max_age_text!r}")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT_S:
        return invalid(f"max_age {max_age} over the RFC limit {MAX_AGE_LIMIT_S}")
    if mode is not Mode.NONE and not mx:
        return invalid("no mx in a policy whose mode is not none")
    return StsPolicy(mode, tuple(mx), max_age, tuple(kept))


def media_type_ok(content_type: str | None) -> bool:
    """True for ``text/plain`` with or without parameters (``; charset=utf-8``)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == POLICY_MEDIA_TYPE


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: ``*.example.com`` matches exactly one extra leftmost label."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first and dot) and rest == pattern[2:]
    return host == pattern
