"""DNS messages for :mod:`mtasts_resolver.net.dns`: the query to send, and what a response says.

Pure functions over bytes, read and written by Twisted's own DNS codec
(``twisted.names.dns``).  Not dnspython's: its messages are rich objects
(immutable rdata, enum-typed fields, sets of rdatasets), and building and
reading them was 55 % of a resolver process's CPU in a cold storm.  The
Twisted codec reads a response in 12-19 µs against 108-145 µs and writes
a query in 9 µs against 82 µs (bench figures in the README, "Performance").

:func:`read_response` is total: for any bytes it returns an
:class:`RRAnswer` or raises one of this module's exceptions.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import dns.rdatatype
from twisted.names import dns as wire

from mtasts_resolver.policy.dane import TlsaRecord

EDNS_PAYLOAD_BYTES = 1232  # DNS flag day 2020: avoids IP fragmentation
MAX_CNAME_LINKS = 16        # longer chains fail the lookup (dnspython's limit too)
_IN = wire.IN
_CNAME = wire.CNAME
_SOA = wire.SOA
_NXDOMAIN = wire.ENAME
_TLSA = 52


class NotTheAnswer(Exception):
    """Not a response to this query (another id or question, not a response, or unreadable): ignore it."""


class Truncated(Exception):
    """The response did not fit in UDP: ask again over TCP."""


class ServerFailed(Exception):
    """The server could not answer (SERVFAIL, REFUSED, FORMERR, ...): ask another one."""


class BadAnswer(Exception):
    """A response to this query whose records cannot be used (a malformed record, a chain too long)."""


@dataclass(frozen=True, slots=True)
class Address:
    """An A or AAAA record: ``address`` in its usual text form."""

    address: str


@dataclass(frozen=True, slots=True)
class Txt:
    """A TXT record: its character-strings."""

    strings: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Mx:
    """An MX record; ``exchange`` lower case without its final dot, "." for a null MX."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class Other:
    """A record of a type nothing here reads (the validation probe only counts them)."""

    rdtype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RRAnswer:
    """Records of one type at one name; empty when the name or type does not exist.

    ``records`` are this module's records (Address, Txt, Mx, Other) or
    :class:`~mtasts_resolver.policy.dane.TlsaRecord`.
    ``secure`` is the AD flag of the response: only meaningful when the
    configured resolver validates DNSSEC and is reached over a trusted path.
    A validating resolver sets it only when every RRset of the answer
    (CNAMEs included) and, for an empty answer, the proof of non-existence
    validated.

    ``ttl`` is the smallest TTL of the answer and its CNAME chain; for an
    empty answer it is the negative-caching TTL (RFC 2308 §5: SOA TTL and
    MINIMUM), 0 when unknown.  ``cnames`` lists the ``(alias, target)`` links
    followed from the query name, and ``canonical_name`` is where they end
    (both absolute, lower case, without the trailing dot); ``nxdomain``
    tells "no such name" apart from "no record of this type".
    """

    records: tuple[Any, ...]
    secure: bool
    ttl: int
    nxdomain: bool = False
    canonical_name: str = ""
    cnames: tuple[tuple[str, str], ...] = ()


def rdtype_number(rdtype: str) -> int:
    """The type number of a type name ("MX", "TLSA", "DNSKEY"); ValueError for an unknown name."""
    try:
        return int(dns.rdatatype.from_text(rdtype))
    except dns.rdatatype.UnknownRdatatype as exc:
        raise ValueError(f"unknown DNS type {rdtype!r}") from exc


def query_name(name: str) -> bytes:
    """The query name as Twisted's codec takes it: ASCII labels, no final dot ("" for the root)."""
    return name.rstrip(".").encode("ascii")


def query_message(qid: int, name: bytes, rdtype: int) -> bytes:
    """A recursive query with EDNS (payload :data:`EDNS_PAYLOAD_BYTES`) and the AD bit.

    The AD bit asks a validating resolver to report validation in the
    answer's AD flag (RFC 6840 §5.7).  Not the DO bit: it would add every
    RRSIG and NSEC record, which nothing here checks (trust is the
    resolver's AD flag) and which made parsing answers the largest cost of a
    cold lookup.
    """
    message = wire._EDNSMessage(id=qid, recDes=True, authenticData=True, maxSize=EDNS_PAYLOAD_BYTES,
                                queries=[wire.Query(name, rdtype, _IN)])
    return message.toStr()


def read_response(data: bytes, qid: int, name: bytes, rdtype: int) -> RRAnswer:
    """What ``data`` answers to query ``qid`` for ``name``/``rdtype``; raises this module's exceptions."""
    message = wire.Message()
    try:
        message.fromStr(data)
    except Exception as exc:   # noqa: BLE001 - any malformed bytes: not an answer we can read
        raise NotTheAnswer(f"unreadable response: {exc.__class__.__name__}") from None
    if not message.answer or message.id != qid or len(message.queries) != 1:
        raise NotTheAnswer("not a response to this query")
    question = message.queries[0]
    if question.type != rdtype or question.cls != _IN or question.name.name.lower() != name.lower():
        raise NotTheAnswer("a response to another question")
    if message.trunc:
        raise Truncated()
    if message.rCode not in (wire.OK, _NXDOMAIN):
        raise ServerFailed(f"rcode {message.rCode}")
    try:
        return _answer(message, name, rdtype)
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise BadAnswer(str(exc) or exc.__class__.__name__) from None


def _answer(message: wire.Message, name: bytes, rdtype: int) -> RRAnswer:
    """Follow the CNAME chain from ``name`` through the answer section (as a stub resolver does)."""
    current = name.lower()
    links: list[tuple[str, str]] = []
    ttls: list[int] = []
    records: list[Any] = []
    seen = {current}
    while True:
        here = [rr for rr in message.answers if rr.cls == _IN and rr.name.name.lower() == current]
        found = [rr for rr in here if rr.type == rdtype]
        if found:
            records = [_record(rr) for rr in found]
            ttls.append(min(rr.ttl for rr in found))
            break
        alias = next((rr for rr in here if rr.type == _CNAME), None)
        if alias is None or rdtype == _CNAME:
            break
        target = alias.payload.name.name.lower()
        if len(links) >= MAX_CNAME_LINKS or target in seen:
            raise ValueError(f"CNAME chain longer than {MAX_CNAME_LINKS} links or looping")
        links.append((_text(current), _text(target)))
        ttls.append(alias.ttl)
        seen.add(target)
        current = target
    nxdomain = message.rCode == _NXDOMAIN
    if not records:
        soa = next((rr for rr in message.authority if rr.type == _SOA), None)
        # RFC 2308 §5: the negative answer is held for the SOA's TTL or its MINIMUM, whichever is less.
        ttls.append(min(soa.ttl, soa.payload.minimum) if soa is not None else 0)
    return RRAnswer(tuple(records), bool(message.authenticData), max(0, min(ttls)), nxdomain, _text(current),
                    tuple(links))


def _record(rr: wire.RRHeader) -> Any:
    payload = rr.payload
    if rr.type == wire.A:
        return Address(socket.inet_ntop(socket.AF_INET, payload.address))
    if rr.type == wire.AAAA:
        return Address(socket.inet_ntop(socket.AF_INET6, payload.address))
    if rr.type == wire.TXT:
        return Txt(tuple(payload.data))
    if rr.type == wire.MX:
        return Mx(payload.preference, _text(payload.name.name))
    if rr.type == _TLSA:
        data = payload.data
        if len(data) < 3:
            raise ValueError("a TLSA record shorter than its 3 fixed octets")
        # Any data length is read: RFC 7672 §3.1 makes a misfit record unusable, not the RRset
        # (mtasts_resolver.policy.dane.tlsa_problem judges it).
        return TlsaRecord(data[0], data[1], data[2], bytes(data[3:]))
    return Other(rr.type, getattr(payload, "data", b"") or b"")


def _text(name: bytes) -> str:
    """A name from the wire as text: lower case, no final dot, "." for the root.

    Labels holding a dot, a backslash, a space or a byte outside printable
    ASCII could not be written back unambiguously, so the name is refused
    (:class:`BadAnswer`: the lookup fails, TEMP, never a guess).
    """
    if any(byte <= 0x20 or byte >= 0x7F or byte == 0x5C for byte in name):
        raise ValueError("a name with bytes outside printable ASCII")
    return name.decode("ascii").lower() or "."
