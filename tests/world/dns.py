"""A DNSSEC-signed ``test.`` namespace served by nsd, resolved by unbound.

The daemon's DANE logic depends on the AD bit of a *validating* resolver, so
the world has real validation: a signed parent ``test.`` (the trust anchor),
child zones with secure / insecure / bogus delegations, one validating
unbound and one non-validating unbound (to prove DANE is refused without
validation).  Nothing outside ``test.`` is resolvable and no packet leaves
127.0.0.0/8.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from .addresses import DNS_AUTH, DNS_PLAIN_RESOLVER, DNS_PORT, DNS_RESOLVER
from .configs import nsd_conf, unbound_conf
from .dnssec import ZoneSigner
from .procs import Daemon, DaemonError, run

PARENT = "test"
DELEGATIONS = ("secure", "insecure", "bogus")


@dataclass
class Zone:
    """A child zone of ``test.``; ``records`` are zone-file lines."""

    name: str
    records: list[str] = field(default_factory=list)
    signed: bool = True
    delegation: str = "secure"  # secure | insecure | bogus

    def __post_init__(self) -> None:
        self.name = self.name.lower().rstrip(".")
        if not self.name.endswith("." + PARENT):
            raise ValueError(f"zone {self.name!r} must be below {PARENT}.")
        if self.delegation not in DELEGATIONS:
            raise ValueError(f"delegation must be one of {DELEGATIONS}")


class DnsWorld:
    """nsd (authoritative) + validating unbound + non-validating unbound."""

    def __init__(self, workdir: Path, *, auth_addr: str = DNS_AUTH,
                 resolver_addr: str = DNS_RESOLVER, plain_resolver_addr: str = DNS_PLAIN_RESOLVER,
                 port: int = DNS_PORT) -> None:
        self.workdir = Path(workdir)
        self.auth_addr, self.resolver_addr = auth_addr, resolver_addr
        self.plain_resolver_addr, self.port = plain_resolver_addr, port
        self.parent_records: list[str] = []
        self.zones: dict[str, Zone] = {}
        self.zonesdir = self.workdir / "zones"
        self.zonesdir.mkdir(parents=True, exist_ok=True)
        self.signer = ZoneSigner(self.workdir / "keys")
        self._nsd_conf = self.workdir / "nsd.conf"
        self._nsd = Daemon("nsd", ["nsd", "-d", "-c", str(self._nsd_conf)], self.workdir,
                           [self.workdir / "nsd.log"], [(auth_addr, port)])
        self._unbounds = {True: self._unbound_daemon("unbound", resolver_addr),
                          False: self._unbound_daemon("unbound-plain", plain_resolver_addr)}

    # -- scenario data ----------------------------------------------------
    def add_zone(self, zone: Zone) -> None:
        """Add a child zone (and its delegation); live if already running."""
        self.add_zones([zone])

    def add_zones(self, zones: list[Zone]) -> None:
        """Add several child zones with a single re-sign of the parent."""
        serials = {}
        for zone in zones:
            self.zones[zone.name] = zone
            serials[zone.name] = self._write_child(zone)
        serials[PARENT] = self._write_parent()
        if self.running:
            self._write_nsd_conf()
            self._nsd_control("reconfig")  # loads zones new to the config
            self._apply(serials)

    def replace_zone(self, name: str, records: list[str]) -> None:
        """Replace a child zone's records; the resolvers see them at once."""
        name = name.lower().rstrip(".")
        if name == PARENT:
            self.set_parent_records(records)
            return
        zone = self.zones[name] = replace(self.zones[name], records=list(records))
        self._apply({name: self._write_child(zone)})

    def set_parent_records(self, records: list[str]) -> None:
        """Replace the extra records of ``test.`` itself."""
        self.parent_records = list(records)
        self._apply({PARENT: self._write_parent()})

    # -- lifecycle ----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._nsd.running

    def start(self) -> None:
        if self.running:
            return
        try:
            serials = {z.name: self._write_child(z) for z in self.zones.values()}
            serials[PARENT] = self._write_parent()
            self._write_nsd_conf()
            self._nsd.start(lambda: self._auth_serial(PARENT) == serials[PARENT])
            anchor = self.workdir / "test.anchor"
            anchor.write_text(self.signer.ds(PARENT) + "\n")
            (self.workdir / "root.hints").write_text(
                f". 3600 IN NS ns.test.\nns.test. 3600 IN A {self.auth_addr}\n")
            for validating, daemon in self._unbounds.items():
                self._write_unbound_conf(validating)
                daemon.start(lambda v=validating: self._answers(v))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for daemon in self._unbounds.values():
            daemon.stop()
        self._nsd.stop()

    def __enter__(self) -> DnsWorld:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ------------------------------------------------
    def resolver(self, validating: bool = True) -> tuple[str, int]:
        """(address, port) of the validating or the plain resolver."""
        return (self.resolver_addr if validating else self.plain_resolver_addr, self.port)

    def dig(self, name: str, rdtype: str, *, validating: bool = True) -> str:
        """``dig +dnssec`` output from one of the resolvers."""
        addr, port = self.resolver(validating)
        return subprocess.run(
            ["dig", f"@{addr}", "-p", str(port), "+dnssec", "+time=3", "+tries=1",
             name, rdtype], capture_output=True, text=True, check=False, timeout=15,
        ).stdout

    def query(self, name: str, rdtype: str, *, validating: bool = True,
              timeout: float = 5.0) -> dns.message.Message:
        """The resolver's answer (DO bit set) as a dnspython message."""
        addr, port = self.resolver(validating)
        q = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp_with_fallback(q, addr, timeout=timeout, port=port)[0]

    # -- internals ----------------------------------------------------------
    def _write_child(self, zone: Zone) -> int:
        return self.signer.write_zone(zone.name, zone.records,
                                      self.zonesdir / f"{zone.name}.zone", signed=zone.signed)

    def _write_parent(self) -> int:
        lines = [f"ns IN A {self.auth_addr}"]
        for zone in self.zones.values():
            lines.append(f"{zone.name}. IN NS ns.test.")
            if zone.delegation == "bogus":
                lines.append(self.signer.ds(zone.name, throwaway=True))
            elif zone.delegation == "secure" and zone.signed:
                lines.append(self.signer.ds(zone.name))
        lines += self.parent_records
        return self.signer.write_zone(PARENT, lines, self.zonesdir / f"{PARENT}.zone",
                                      signed=True)

    def _apply(self, serials: dict[str, int]) -> None:
        """Make nsd serve the new serials, then flush both resolvers' caches."""
        if not self.running:
            return
        for name, serial in serials.items():
            self._reload(name, serial)
        for validating in (True, False):
            conf = str(self.workdir / f"{self._unbounds[validating].name}.conf")
            run(["unbound-control", "-c", conf, "flush_zone", f"{PARENT}."])
            run(["unbound-control", "-c", conf, "flush_bogus"])
            run(["unbound-control", "-c", conf, "flush_infra", "all"])

    def _reload(self, name: str, serial: int, timeout: float = 10.0) -> None:
        """Reload one zone; return once no nsd process can serve old data.

        nsd forks new server children on reload while the old ones still
        answer for a moment, so seeing the new serial once is not enough:
        also wait for the pre-reload children to exit.
        """
        old = self._nsd.leaf_pids()
        self._nsd_control("reload", name)
        deadline = time.monotonic() + timeout
        while self._auth_serial(name) != serial or old & self._nsd.leaf_pids():
            if time.monotonic() > deadline:
                raise DaemonError(f"nsd did not load {name} serial {serial}\n"
                                  f"{self._nsd.tail()}")
            time.sleep(0.01)

    def _auth_serial(self, name: str) -> int | None:
        """nsd's SOA serial for a zone, None while it is (re)starting."""
        q = dns.message.make_query(name + ".", "SOA")
        try:  # TCP, see _answers; old children reset connections on exit
            r = dns.query.tcp(q, self.auth_addr, timeout=2, port=self.port)
        except (OSError, dns.exception.DNSException):
            return None
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset[0].serial
        return None

    def _answers(self, validating: bool) -> bool:
        """Readiness: the resolver answers ``test. SOA`` (validated if it should)."""
        # TCP: before the daemon listens this fails at once, where a UDP
        # probe would be silently lost and cost a whole timeout.
        q = dns.message.make_query(PARENT + ".", "SOA", want_dnssec=True)
        addr, port = self.resolver(validating)
        r = dns.query.tcp(q, addr, timeout=2, port=port)
        return r.rcode() == dns.rcode.NOERROR and (bool(r.flags & dns.flags.AD) == validating)

    def _nsd_control(self, *args: str) -> None:
        run(["nsd-control", "-c", str(self._nsd_conf), *args])

    def _unbound_daemon(self, name: str, addr: str) -> Daemon:
        conf = self.workdir / f"{name}.conf"
        return Daemon(name, ["unbound", "-d", "-c", str(conf)], self.workdir,
                      [self.workdir / f"{name}.log"], [(addr, self.port)])

    def _write_nsd_conf(self) -> None:
        self._nsd_conf.write_text(nsd_conf(self.workdir, self.zonesdir, self.auth_addr,
                                           self.port, [PARENT, *self.zones]))

    def _write_unbound_conf(self, validating: bool) -> None:
        daemon = self._unbounds[validating]
        addr, port = self.resolver(validating)
        (self.workdir / f"{daemon.name}.conf").write_text(
            unbound_conf(self.workdir, daemon.name, addr, port, self.auth_addr, validating))
