"""``sending-mta-ip`` for feeds that do not log it (the Postfix and Exim logs): ask the kernel.

RFC 8460 §4.3 wants the address the sending MTA connected from.  Neither
Postfix's nor Exim's log lines carry it, but on the MTA's own host the
kernel can tell: the source address of the route to the receiving IP is
what ``connect`` on a UDP socket picks (no packet is sent) and
``getsockname`` returns.  A configured ``sending_mta_ip`` wins (a host with
several addresses and ``smtp_bind_address``, NAT).  Answers are remembered
per receiving IP (routes rarely change), at most ``MAX_REMEMBERED`` of them;
the receiving IP comes from a log line, so anything that is not an IP
address gets "" without touching a socket.

The daemon's own policy-discovery failures have no receiving IP (no MX was
contacted): :meth:`RouteSource.towards_internet` is the source of the route
towards the Internet (to a root server's address, IPv4 first), the address
the MTA's connections leave from unless routes differ per destination.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

MAX_REMEMBERED = 4096
SMTP_PORT = 25   # any port: a UDP connect only picks the route
#: a.root-servers.net: a stable global address of each family, to ask the kernel for its route to the Internet
INTERNET_PROBES = ("198.41.0.4", "2001:503:ba3e::2:30")

SourceFor = Callable[[str], str]


class RouteSource:
    """``receiving_ip`` -> the local address the route to it uses, "" when unknown."""

    def __init__(self, configured: str = "") -> None:
        self._configured = configured
        self._known: dict[str, str] = {}

    def __call__(self, receiving_ip: str) -> str:
        if self._configured:
            return self._configured
        found = self._known.get(receiving_ip)
        if found is None:
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            found = self._known[receiving_ip] = route_source(receiving_ip)
        return found

    def towards_internet(self) -> str:
        """The configured address, else the source of the route towards the Internet, "" when there is none."""
        return next((found for found in map(self, INTERNET_PROBES) if found), "")


def route_source(receiving_ip: str) -> str:
    try:
        address = ipaddress.ip_address(receiving_ip)
    except ValueError:
        return ""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((str(address), SMTP_PORT))
            return probe.getsockname()[0]
    except OSError:   # no route (network unreachable)
        return ""


def source_for(sending_mta_ip: str | SourceFor) -> SourceFor:
    """A fixed address (tests, or "" for none) or a lookup, as one callable."""
    if callable(sending_mta_ip):
        return sending_mta_ip
    return lambda _receiving_ip: sending_mta_ip
