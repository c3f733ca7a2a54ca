"""The ``_smtp._tls`` TXT record (RFC 8460 §3): pure parsing, no DNS.

Exactly one record starting with ``v=TLSRPTv1`` must remain after
discarding the others; its ``rua`` is a comma-separated list of ``mailto:``
and ``https:`` URIs in which commas, exclamation marks and semicolons are
percent-encoded.  Unknown fields are ignored; a syntax error anywhere makes
the record unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_VERSION = "v=TLSRPTv1"
_FIELD_DELIM = re.compile(r"[ \t]*;[ \t]*")
_URI_DELIM = re.compile(r"[ \t]*,[ \t]*")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")  # no ',' or ';' left raw
_ADDRESS = re.compile(r"[^@\s<>]+@[A-Za-z0-9.-]+")


@dataclass(frozen=True, slots=True)
class Destination:
    """One usable rua: ``mailto`` with a decoded address, or an ``https`` URL."""

    scheme: str   # "mailto" | "https"
    target: str   # the address, or the URL as published

    @property
    def uri(self) -> str:
        return f"mailto:{self.target}" if self.scheme == "mailto" else self.target


@dataclass(frozen=True, slots=True)
class TlsrptRecord:
    record: str
    destinations: tuple[Destination, ...]


@dataclass(frozen=True, slots=True)
class NoTlsrpt:
    reason: str


def parse_tlsrpt_records(records: list[str]) -> TlsrptRecord | NoTlsrpt:
    """Pick and parse the TLSRPT record among the TXT records (strings already concatenated)."""
    candidates = [r for r in records if r.startswith(_VERSION + ";") or r.startswith(_VERSION + " ")
                  or r.startswith(_VERSION + "\t") or r == _VERSION]
    if len(candidates) != 1:
        return NoTlsrpt(f"{len(candidates)} v=TLSRPTv1 records (exactly one needed)")
    record = candidates[0]
    fields = _FIELD_DELIM.split(record)
    if fields[0] != _VERSION:
        return NoTlsrpt(f"malformed record {record!r}")
    if fields[-1] == "":
        fields.pop()
    rua: list[str] | None = None
    for field in fields[1:]:
        name, eq, value = field.partition("=")
        if name == "rua" and eq and rua is None:
            rua = _URI_DELIM.split(value)
            if not all(_URI.fullmatch(uri) for uri in rua):
                return NoTlsrpt(f"malformed rua {value!r}")
        elif name == "rua" or not (eq and _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            return NoTlsrpt(f"malformed field {field!r}")
    if rua is None:
        return NoTlsrpt("no rua")
    destinations = tuple(d for d in (_destination(uri) for uri in rua) if d is not None)
    if not destinations:
        return NoTlsrpt(f"no usable mailto: or https: rua in {record!r}")
    return TlsrptRecord(record, destinations)


def _destination(uri: str) -> Destination | None:
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "mailto":
        address = unquote(rest.split("?", 1)[0])
        return Destination("mailto", address) if _ADDRESS.fullmatch(address) else None
    if scheme == "https" and urlsplit(uri).hostname:
        return Destination("https", uri)
    return None
