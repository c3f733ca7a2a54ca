"""The test world's address plan: every address it binds or publishes, from ``TEST_WORLD_ID``.

One world takes one third octet (``TEST_WORLD_ID=N``, 0-99, default 0) in
each block below, so several suites run side by side on one machine without
sharing a socket or a DNS answer.  Everything is on 127.0.0.0/8, which Linux
routes to ``lo`` without configuring aliases.

| block        | what                                                               | port   |
|--------------|--------------------------------------------------------------------|--------|
| 127.53.N.1   | nsd, authoritative for ``test.`` and its child zones               | 53     |
| 127.53.N.2   | validating unbound (the daemon's resolver for DANE)                | 53     |
| 127.53.N.3   | non-validating unbound                                             | 53     |
| 127.60.N.1   | HTTPS policy server for every ``mta-sts.<domain>``                 | 443    |
| 127.60.N.2   | the hostile policy host (hostile.py): HTTPS that misbehaves        | 443    |
| 127.60.N.99  | a second policy server some tests start on their own               | 8443   |
| 127.70.N.x   | MX hosts of the DNS and DANE scenarios (published only)            |        |
| 127.74.N.x   | TLS-RPT hosts: report receivers, submission SMTP, Postfix sender   | varies |
| 127.75.N.x   | the real-MTA tests' MX hosts (STARTTLS SMTP servers); .100 and up: | 25     |
|              | the audit's broken domains (audit_world.py)                        |        |

The daemon's own listeners take free ports on 127.0.0.1 (``daemon.free_port``).
"""

from __future__ import annotations

import os


def _world_id() -> int:
    text = os.environ.get("TEST_WORLD_ID", "0")
    if not text.isdigit() or not 0 <= int(text) <= 99:
        raise ValueError(f"TEST_WORLD_ID must be a number from 0 to 99, got {text!r}")
    return int(text)


WORLD_ID = _world_id()

DNS_PORT = 53
DNS_AUTH = f"127.53.{WORLD_ID}.1"
DNS_RESOLVER = f"127.53.{WORLD_ID}.2"
DNS_PLAIN_RESOLVER = f"127.53.{WORLD_ID}.3"

POLICY_IP = f"127.60.{WORLD_ID}.1"
POLICY_PORT = 443
HOSTILE_POLICY_IP = f"127.60.{WORLD_ID}.2"
SPARE_POLICY_IP = f"127.60.{WORLD_ID}.99"
SPARE_POLICY_PORT = 8443

DANE_NET = f"127.70.{WORLD_ID}"     # DANE_NET + ".1" ... : published MX addresses
TLSRPT_NET = f"127.74.{WORLD_ID}"
MX_NET = f"127.75.{WORLD_ID}"
