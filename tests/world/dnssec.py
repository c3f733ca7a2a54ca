"""Zone files and DNSSEC signing for the test world, using BIND's tools.

Signing with the real ``dnssec-keygen``/``dnssec-signzone`` (rather than
hand-rolled RRSIGs) means a validation failure in a test is a property of
the scenario, not a bug in the test harness.  One ECDSA P-256 CSK per zone
(KSK flag, ``-z``) keeps key generation and signing to a few milliseconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .procs import run

ALGORITHM = "ECDSAP256SHA256"
DEFAULT_TTL = 60
#: SOA minimum = negative-answer TTL; tiny so NXDOMAIN does not linger.
NEGATIVE_TTL = 5


class ZoneSigner:
    """Keeps one signing key per zone and writes (signed) zone files."""

    def __init__(self, keydir: Path, soa_mname: str = "ns.test.",
                 soa_rname: str = "hostmaster.test.") -> None:
        self.keydir = Path(keydir)
        self.keydir.mkdir(parents=True, exist_ok=True)
        (self.keydir / "throwaway").mkdir(exist_ok=True)
        self.soa = (soa_mname, soa_rname)
        self._keys: dict[tuple[str, bool], str] = {}  # (origin, throwaway) -> K-file stem
        self._ds: dict[tuple[str, bool], str] = {}
        # Serials only ever grow, so a reload always sees "new" data,
        # even for several rewrites within one second.
        self._serial = int(time.time())

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def key(self, origin: str, throwaway: bool = False) -> Path:
        """Path stem (without .key/.private) of origin's CSK, made on first use."""
        origin = _abs(origin)
        if (origin, throwaway) not in self._keys:
            where = self.keydir / "throwaway" if throwaway else self.keydir
            stem = run(["dnssec-keygen", "-q", "-a", ALGORITHM, "-f", "KSK", "-n", "ZONE",
                        "-K", str(where), origin], cwd=where).strip()
            self._keys[(origin, throwaway)] = str(where / stem)
        return Path(self._keys[(origin, throwaway)])

    def ds(self, origin: str, throwaway: bool = False) -> str:
        """The SHA-256 DS record (zone-file line) for origin's key.

        With ``throwaway=True`` the DS belongs to a key that never signs
        anything: publishing it in the parent makes the child bogus.
        """
        origin = _abs(origin)
        if (origin, throwaway) not in self._ds:
            key = self.key(origin, throwaway)
            self._ds[(origin, throwaway)] = run(
                ["dnssec-dsfromkey", "-2", f"{key}.key"], cwd=self.keydir).strip()
        return self._ds[(origin, throwaway)]

    def dnskey(self, origin: str) -> str:
        """The DNSKEY record line of origin's key (comments stripped)."""
        text = Path(f"{self.key(origin)}.key").read_text()
        return "\n".join(ln for ln in text.splitlines() if ln and not ln.startswith(";"))

    def write_zone(self, origin: str, records: list[str], out: Path, *,
                   signed: bool) -> int:
        """Write origin's zone file to ``out`` (signed or not); return its serial.

        SOA and apex NS are added here; ``records`` are zone-file lines
        relative to the origin.
        """
        origin = _abs(origin)
        serial = self.next_serial()
        mname, rname = self.soa
        lines = [
            f"$ORIGIN {origin}",
            f"$TTL {DEFAULT_TTL}",
            f"@ IN SOA {mname} {rname} {serial} 3600 600 86400 {NEGATIVE_TTL}",
            f"@ IN NS {mname}",
            *records,
        ]
        if signed:
            lines.append(self.dnskey(origin))
        text = "\n".join(lines) + "\n"
        unsigned = out.with_name(out.name + ".unsigned")  # kept for debugging
        unsigned.write_text(text)
        tmp = out.with_name(out.name + ".tmp")
        if signed:
            run(["dnssec-signzone", "-q", "-z", "-N", "keep", "-o", origin,
                 "-K", str(self.keydir), "-d", str(self.keydir), "-f", str(tmp),
                 str(unsigned), f"{self.key(origin)}.key"], cwd=self.keydir)
        else:
            tmp.write_text(text)
        os.replace(tmp, out)  # nsd never sees a half-written file
        return serial


def _abs(name: str) -> str:
    return name.lower().rstrip(".") + "."
