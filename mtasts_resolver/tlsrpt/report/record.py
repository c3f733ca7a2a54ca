"""The ``_smtp._tls`` TXT record (RFC 8460 §3): pure parsing, no DNS.

Exactly one record starting with ``v=TLSRPTv1`` must remain after
discarding the others; its ``rua`` is a comma-separated list of ``mailto:``
and ``https:`` URIs in which commas, exclamation marks and semicolons are
percent-encoded.  Unknown fields are ignored; a syntax error anywhere makes
the record unusable.

A record is a stranger's input: parsing is total (any text gives a
:class:`TlsrptRecord` or a :class:`NoTlsrpt` with the reason, never an
exception) and linear in its length (fields are split with ``str.split``,
not a pattern that rescans runs of blanks).  A URI that is well-formed but
cannot be used (another scheme, an https host that is not a DNS host name
such as ``https://[x`` or one with an underscore, a mailto without a valid
address) is left out with its reason in :attr:`TlsrptRecord.rejected`; the
others still get the report.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_VERSION = "v=TLSRPTv1"
_WSP = " \t"
MAX_SHOWN_CHARS = 100  # of a malformed part quoted in a reason
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")  # no ',' or ';' left raw
_ADDRESS = re.compile(r"[^@\s<>]+@[A-Za-z0-9.-]+")
_HOST_NAME = re.compile(r"(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?")


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
    rejected: tuple[tuple[str, str], ...] = ()   # (uri, why it is not used)


@dataclass(frozen=True, slots=True)
class NoTlsrpt:
    """No usable record; ``absent``: none published (the domain wants no reports), else one that is unusable."""

    reason: str
    absent: bool = False


def parse_tlsrpt_records(records: list[str]) -> TlsrptRecord | NoTlsrpt:
    """Pick and parse the TLSRPT record among the TXT records (strings already concatenated)."""
    candidates = [r for r in records if r.startswith(_VERSION + ";") or r.startswith(_VERSION + " ")
                  or r.startswith(_VERSION + "\t") or r == _VERSION]
    if len(candidates) != 1:
        return NoTlsrpt(f"{len(candidates)} v=TLSRPTv1 records (exactly one needed)", absent=not candidates)
    record = candidates[0]
    fields = _split(record, ";")
    if fields[0] != _VERSION:
        return NoTlsrpt(f"malformed record {_shown(record)}")
    if fields[-1] == "":
        fields.pop()
    rua: list[str] | None = None
    for field in fields[1:]:
        name, eq, value = field.partition("=")
        if name == "rua" and eq and rua is None:
            rua = _split(value, ",")
            if not all(_URI.fullmatch(uri) for uri in rua):
                return NoTlsrpt(f"malformed rua {_shown(value)}")
        elif name == "rua" or not (eq and _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            return NoTlsrpt(f"malformed field {_shown(field)}")
    if rua is None:
        return NoTlsrpt("no rua")
    found = [(uri, _destination(uri)) for uri in rua]
    destinations = tuple(d for _, d in found if isinstance(d, Destination))
    rejected = tuple((uri, d) for uri, d in found if isinstance(d, str))
    if not destinations:
        why = "; ".join(f"{uri}: {reason}" for uri, reason in rejected)
        return NoTlsrpt(f"no usable mailto: or https: rua ({why})")
    return TlsrptRecord(record, destinations, rejected)


def _shown(text: str) -> str:
    """``text`` quoted for a reason, cut short: a record may be as long as a DNS message."""
    return repr(text) if len(text) <= MAX_SHOWN_CHARS else repr(text[:MAX_SHOWN_CHARS]) + "..."


def _split(text: str, delimiter: str) -> list[str]:
    """``text`` split at ``delimiter`` with the blanks around each delimiter dropped (RFC 8460 §3
    ``field-delim = *WSP ";" *WSP``); blanks at either end are kept, so they stay a syntax error."""
    parts = text.split(delimiter)
    return [part.lstrip(_WSP) if i else part for i, part in enumerate(
        part.rstrip(_WSP) if i < len(parts) - 1 else part for i, part in enumerate(parts))]


def _destination(uri: str) -> Destination | str:
    """The destination, or why it cannot be used."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "mailto":
        address = unquote(rest.split("?", 1)[0])
        return Destination("mailto", address) if _ADDRESS.fullmatch(address) else "not a mail address"
    if scheme != "https":
        return f"scheme {scheme!r} is neither mailto nor https"
    try:
        parts = urlsplit(uri)
        host, _ = parts.hostname, parts.port   # .port raises on a port that is not a number up to 65535
    except ValueError as exc:
        return f"not a URL: {exc}"
    if not host:
        return "no host"
    if not (_HOST_NAME.fullmatch(host) or _ip_literal(parts.netloc, host)):
        return f"host {host!r} is not a DNS host name or an IP address"
    return Destination("https", uri)


def _ip_literal(netloc: str, host: str) -> bool:
    if f"[{host}]" not in netloc:
        return False
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True
