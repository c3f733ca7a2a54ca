"""Shared pieces of the TLS-RPT end-to-end tests: addresses, DNS records, DKIM key, spool reads."""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.world.daemon import run_cli, start_cli
from tests.world.addresses import TLSRPT_NET as NET   # this suite's hosts: NET.x
DKIM_SELECTOR = "sel1"
SUBMITTER = "rpt-sender.test"


#: systemd's default (50-default.conf) for net.unix.max_dgram_qlen; the kernel's own default is 10.
SYSTEMD_MAX_DGRAM_QLEN = 512


def in_own_netns(max_dgram_qlen: int = SYSTEMD_MAX_DGRAM_QLEN) -> list[str]:
    """A command prefix running the daemon in a new network namespace with this unix datagram queue length.

    The collector's socket is a file path, reachable from every namespace;
    net.unix.max_dgram_qlen is per namespace, so the host's is left alone.
    """
    script = f"ip link set lo up && echo {max_dgram_qlen} > /proc/sys/net/unix/max_dgram_qlen && exec \"$@\""
    return ["unshare", "--net", "sh", "-c", script, "sh"]


def dkim_key(workdir: Path) -> tuple[Path, str]:
    """(private key file, TXT record text for SELECTOR._domainkey.SUBMITTER)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = workdir / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, f"v=DKIM1; k=rsa; s=tlsrpt; p={base64.b64encode(spki).decode()}"


def txt_record(owner: str, text: str) -> str:
    """A zone-file TXT line, split into 200-octet strings (each string is at most 255)."""
    parts = " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))
    return f"{owner} 60 IN TXT {parts}"


def dnsfunc(resolver: tuple[str, int]):
    """dkimpy's dnsfunc, asking the world's validating resolver."""
    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        query = dns.message.make_query(name.decode(), "TXT")
        answer = dns.query.udp(query, resolver[0], port=resolver[1], timeout=timeout)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)
        return None
    return get_txt


def spool_rows(db: Path, day: str | None = None) -> list[tuple]:
    """(report_domain, policy, kind, failure, sessions) of the spool (all days if ``day`` is None)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        if day is None:
            return conn.execute("SELECT report_domain, policy, kind, failure, sessions FROM tlsrpt_outcome "
                                "ORDER BY 1, 2, 3, 4").fetchall()
        return conn.execute("SELECT report_domain, policy, kind, failure, sessions FROM tlsrpt_outcome "
                            "WHERE day = ? ORDER BY 1, 2, 3, 4", (day,)).fetchall()


def spooled_sessions(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT COALESCE(SUM(sessions), 0) FROM tlsrpt_outcome WHERE kind != 'detail'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return row[0]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def run_report(config: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``mtasts-resolver -c CONFIG report ARGS``, run to its end."""
    return run_cli("-c", str(config), "report", *args, timeout_s=timeout_s)


def start_report(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``mtasts-resolver -c CONFIG report ARGS``, started (output on one pipe)."""
    return start_cli("-c", str(config), "report", *args)
