"""Is the configured resolver really validating DNSSEC?  (Checked at start-up and periodically.)

DANE trusts the AD bit, and the AD bit means something only when the
resolver validates and the path to it cannot be tampered with.  The probe
asks for ``dane.probe_name``/``dane.probe_type`` (the root DNSKEY by
default) and requires a non-empty answer with the AD bit; with
``dane.require_loopback`` it also refuses resolvers not on a loopback
address.  While the probe fails, DANE answers are disabled: the failure is
logged as an error at every check and shown in the daemon's status, and
domains get MTA-STS answers only.  They come back as soon as a check passes.
Until the first check is done, DANE lookups wait for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mtasts_resolver.config import DaneConfig
from mtasts_resolver.net.dns import DnsClient, DnsFailure


def is_loopback(nameserver: str) -> bool:
    try:
        return ipaddress.ip_address(nameserver).is_loopback
    except ValueError:  # a DoH/DoT URL or a host name: not a loopback address
        return False


class ValidationProbe:
    log = Logger()

    def __init__(self, dns: DnsClient, settings: DaneConfig) -> None:
        self._dns = dns
        self._name = settings.probe_name
        self._rdtype = settings.probe_type
        self._require_loopback = settings.require_loopback
        self.validating = False
        self.checked = False
        self.status = "resolver validation not checked yet"
        self._listeners: list[Callable[[bool], None]] = []
        self._waiters: list[Deferred[None]] = []

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(validating)`` whenever the state changes (and after the first check)."""
        self._listeners.append(listener)

    def when_checked(self) -> Deferred[None]:
        """A new Deferred firing once the first check is done (at once if it is); cancelling it is harmless."""
        d: Deferred[None] = Deferred()
        if self.checked:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def check(self) -> Deferred[None]:
        """Run the probe once; never fails (a TimerService calls this)."""
        return Deferred.fromCoroutine(self._check())

    async def _check(self) -> None:
        try:
            ok, reason = await self._test()
        except Exception as exc:  # noqa: BLE001 - a bug must not leave DANE on unverified
            self.log.failure("DNSSEC validation probe crashed")
            ok, reason = False, f"validation probe error: {exc!r}"
        self._set(ok, reason)

    async def _test(self) -> tuple[bool, str]:
        servers = self._dns.nameservers
        if self._require_loopback:
            remote = [ns for ns in servers if not is_loopback(ns)]
            if remote or not servers:
                return False, (f"resolver {', '.join(remote) or '(none configured)'} is not on a loopback address: "
                               "its AD bit could be forged on the way (set dns.nameservers to a local validating "
                               "resolver, or dane.require_loopback = false)")
        what = f"{self._name} {self._rdtype}"
        try:
            answer = await self._dns.query(self._name, self._rdtype)
        except DnsFailure as exc:
            return False, f"validation probe {what} failed: {exc}"
        if not answer.records:
            return False, f"validation probe {what} returned no records"
        if not answer.secure:
            return False, (f"resolver {', '.join(servers)} does not validate DNSSEC: {what} came back without "
                           "the AD bit")
        return True, f"resolver {', '.join(servers)} validates DNSSEC ({what} has the AD bit)"

    def _set(self, ok: bool, reason: str) -> None:
        changed = ok != self.validating or not self.checked
        self.validating, self.status, self.checked = ok, reason, True
        if not ok:
            self.log.error("DANE DISABLED: {reason}; domains get MTA-STS answers only until the resolver "
                           "validates", reason=reason)
        elif changed:
            self.log.info("DANE enabled: {reason}", reason=reason)
        if changed:
            for listener in self._listeners:
                listener(ok)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:  # a cancelled waiter has fired already
                waiter.callback(None)
