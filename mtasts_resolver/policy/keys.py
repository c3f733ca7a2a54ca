"""Turning a Postfix table key into the domain whose policy it asks for.

Postfix looks up ``smtp_tls_policy_maps`` with the next-hop destination,
case-folded, then with parent-domain probes (``.example.com``, ``.com``)
when ``parent_domain_matches_subdomains`` includes the map.  Only a bare
domain names a policy domain; everything else is answered NOTFOUND at once,
without touching DNS.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import idna

# Nearly every key Postfix sends is already a lower-case LDH name: skip the
# (comparatively slow) IDNA codec for those, it would return them unchanged.
_LDH_NAME = re.compile(r"(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)+(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_DOMAIN_OCTETS = 253  # RFC 1035 §2.3.4, presentation form without the root dot
#: Longest key looked at, checked before any IDNA work (the IDNA codec is
#: slow: Debian's python3-idna spent 3.5 s on one 10 kB key).  A domain's
#: A-label form is at most 253 octets, and a U-label is never longer in
#: characters than its A-label (Punycode writes at least one character per
#: code point, plus "xn--"), so the Unicode form of any domain fits in 253
#: characters too; add a root dot and ":65535" for the forms Postfix sends.
#: Only keys padded with characters UTS 46 deletes (soft hyphens, variation
#: selectors) could be longer, and no real next hop is.
MAX_KEY_CHARS = MAX_DOMAIN_OCTETS + len(".") + len(":65535")


class KeyKind(enum.Enum):
    DOMAIN = "domain"              # a policy domain: resolve it
    PARENT_PROBE = "parent-probe"  # ".example.com": Postfix's parent-domain probe
    EXPLICIT_HOST = "explicit-host"  # "[host]" / "[host]:port": no MX lookup, no MTA-STS
    INVALID = "invalid"            # not a domain name at all


@dataclass(frozen=True, slots=True)
class TableKey:
    """A classified lookup key; ``domain`` is the A-label form for DOMAIN keys."""

    kind: KeyKind
    domain: str = ""
    reason: str = ""


def parse_key(key: str) -> TableKey:
    """Classify and normalise one lookup key.

    - ``Example.COM.`` and ``example.com:25`` become ``example.com``
      (``domain:port`` still uses MX lookups in Postfix, so the policy applies);
    - U-labels become A-labels (IDNA 2008 with UTS 46 mapping), so
      ``bücher.example`` and ``xn--bcher-kva.example`` share one policy;
    - ``[host]`` and ``[host]:port`` are explicit next hops where Postfix does
      no MX lookup: MTA-STS (RFC 8461 §4.1 matches *MX* hosts) does not apply;
    - keys starting with ``.`` are parent-domain probes.
    """
    if len(key) > MAX_KEY_CHARS:
        return TableKey(KeyKind.INVALID, reason=f"key over {MAX_KEY_CHARS} characters")
    key = key.strip()
    if not key:
        return TableKey(KeyKind.INVALID, reason="empty key")
    if key.startswith("["):
        return TableKey(KeyKind.EXPLICIT_HOST, reason="explicit next hop: no MX lookup")
    if key.startswith("."):
        return TableKey(KeyKind.PARENT_PROBE, reason="parent-domain probe")
    host, sep, port = key.rpartition(":")
    if sep:
        if not port.isdigit():
            return TableKey(KeyKind.INVALID, reason="bad port")
        key = host
    if key.endswith(".") and not key.endswith(".."):
        key = key[:-1]
    lowered = key.lower()
    if lowered.isascii() and _LDH_NAME.fullmatch(lowered) and len(lowered) <= MAX_DOMAIN_OCTETS:
        return TableKey(KeyKind.DOMAIN, lowered)
    try:
        domain = idna.encode(key, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        return TableKey(KeyKind.INVALID, reason=f"not a domain name: {exc}")
    if len(domain) > MAX_DOMAIN_OCTETS or "." not in domain:
        return TableKey(KeyKind.INVALID, reason="not a fully qualified domain name")
    return TableKey(KeyKind.DOMAIN, domain)
