"""Shared pieces of the TLS-RPT end-to-end tests: addresses, DNS records, DKIM key, spool reads."""

from __future__ import annotations

import base64
import datetime
import ipaddress
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


def kernel_source(destination: str) -> str:
    """``ip route get``'s src: the kernel's source address towards ``destination`` ("" without a route),
    found independently of the daemon's own probe."""
    found = subprocess.run(["ip", "-o", "route", "get", destination], capture_output=True, text=True,
                           check=False)   # no route: an error, and no src
    words = found.stdout.split()
    return words[words.index("src") + 1] if "src" in words else ""


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


RESULT_TYPES = {"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required",
                "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
_DETAIL_TEXT = ("receiving-mx-hostname", "receiving-mx-helo", "additional-information", "failure-reason-code")


def report_problems(report: object) -> list[str]:
    """What a strict receiver finds wrong in a report's JSON (RFC 8460 §4.3, §4.4); [] when nothing."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> bool:
        if not ok:
            problems.append(what)
        return ok

    if not need(isinstance(report, dict), "the report is not an object"):
        return problems
    assert isinstance(report, dict)
    for key in ("organization-name", "contact-info", "report-id"):
        need(isinstance(report.get(key), str) and bool(report[key]), f"{key} missing or not a string")
    dates = report.get("date-range")
    if need(isinstance(dates, dict), "date-range missing"):
        for key in ("start-datetime", "end-datetime"):
            need(isinstance(dates.get(key), str) and _rfc3339(dates[key]), f"date-range {key} not RFC 3339")
    policies = report.get("policies")
    if need(isinstance(policies, list) and bool(policies), "policies missing or empty"):
        for n, entry in enumerate(policies):
            problems += [f"policies[{n}]: {p}" for p in _entry_problems(entry)]
    return problems


def _entry_problems(entry: object) -> list[str]:
    if not isinstance(entry, dict):
        return ["not an object"]
    problems = []
    policy, summary = entry.get("policy"), entry.get("summary")
    if not isinstance(policy, dict) or policy.get("policy-type") not in ("tlsa", "sts", "no-policy-found"):
        problems.append(f"policy-type not tlsa, sts or no-policy-found: {policy!r}")
    else:
        if not isinstance(policy.get("policy-domain"), str) or not policy["policy-domain"]:
            problems.append("policy-domain missing")
        strings = policy.get("policy-string")
        if policy["policy-type"] != "no-policy-found" and not (
                isinstance(strings, list) and strings and all(isinstance(s, str) for s in strings)):
            problems.append(f"policy-string of a {policy['policy-type']} policy missing or empty: {strings!r}")
        if "mx-host" in policy and not all(isinstance(s, str) for s in policy["mx-host"]):
            problems.append("mx-host not a list of strings")
    counts = ("total-successful-session-count", "total-failure-session-count")
    if not isinstance(summary, dict) or not all(_count(summary.get(key)) for key in counts):
        problems.append(f"summary counts missing or not counts: {summary!r}")
    for detail in entry.get("failure-details", []):
        if not isinstance(detail, dict) or detail.get("result-type") not in RESULT_TYPES:
            problems.append(f"failure detail with an unknown result-type: {detail!r}")
            continue
        if not _count(detail.get("failed-session-count")) or detail["failed-session-count"] == 0:
            problems.append(f"failed-session-count missing or 0: {detail!r}")
        for key in ("sending-mta-ip", "receiving-ip"):
            if key in detail and not _ip(detail[key]):
                problems.append(f"{key} not an IP address: {detail[key]!r}")
        problems += [f"{key} not a string" for key in _DETAIL_TEXT if key in detail and not isinstance(detail[key], str)]
    return problems


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ip(value: object) -> bool:
    try:
        ipaddress.ip_address(value)   # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _rfc3339(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return text.endswith("Z") or "+" in text[10:] or "-" in text[10:]
