"""Datagrams byte for byte as libtlsrpt writes them (sys4/libtlsrpt libtlsrpt.c, tlsrpt.h).

libtlsrpt builds its JSON with fprintf, not a JSON library: ``{"d": "DOMAIN","pr": "RECORD"``
then ``,"policies":[{"policy-type":N,"policy-domain": "D"``, ``,"policy-string":[...]``,
``,"mx-host":[...]``, ``,"failure-details":[{"c":CODE,"s": "...",...}]``, ``,"t":COUNT,"f":FINAL}``
and ``]}``; this mirror keeps its spacing so the collector is tested on the real layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TLSRPT_POLICY_TLSA, TLSRPT_POLICY_STS, TLSRPT_NO_POLICY_FOUND = 1, 2, 9
STARTTLS_NOT_SUPPORTED, CERTIFICATE_HOST_MISMATCH, CERTIFICATE_NOT_TRUSTED = 201, 202, 203
CERTIFICATE_EXPIRED, VALIDATION_FAILURE = 204, 205
STS_POLICY_FETCH_ERROR, STS_POLICY_INVALID, STS_WEBPKI_INVALID = 301, 302, 303
TLSA_INVALID, DNSSEC_INVALID, DANE_REQUIRED = 304, 305, 306


def _esc(text: str) -> str:
    return json.dumps(text)[1:-1]


@dataclass
class Failure:
    code: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None

    def encode(self) -> str:
        out = '{"c":%d' % self.code
        for key, value in (("s", self.sending_mta_ip), ("n", self.receiving_mx_hostname),
                           ("h", self.receiving_mx_helo), ("r", self.receiving_ip),
                           ("a", self.additional_information), ("f", self.failure_reason_code)):
            if value is not None:
                out += f',"{key}": "{_esc(value)}"'
        return out + "}"


@dataclass
class Policy:
    type: int
    domain: str | None
    strings: list[str] = field(default_factory=list)
    mx_hosts: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    final_failure: bool = False


def datagram(domain: str, record: str, policies: list[Policy]) -> bytes:
    out = f'{{"d": "{_esc(domain)}","pr": "{_esc(record)}"'
    for index, policy in enumerate(policies):
        out += ',"policies":[{' if index == 0 else ",{"
        out += '"policy-type":%d' % policy.type
        if policy.domain is not None:
            out += f',"policy-domain": "{_esc(policy.domain)}"'
        if policy.strings:
            out += ',"policy-string":[' + ",".join(f'"{_esc(s)}"' for s in policy.strings) + "]"
        if policy.mx_hosts:
            out += ',"mx-host":[' + ",".join(f'"{_esc(s)}"' for s in policy.mx_hosts) + "]"
        if policy.failures:
            out += ',"failure-details":[' + ",".join(f.encode() for f in policy.failures) + "]"
        out += ',"t":%d,"f":%d}' % (len(policy.failures), 1 if policy.final_failure else 0)
    return (out + "]}").encode()
