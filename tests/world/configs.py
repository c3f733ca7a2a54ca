"""Config files for the world's nsd and unbound.

Everything lives in the world's workdir and every path is explicit, so the
daemons never read /etc/nsd or /etc/unbound, never need a user switch or
chroot, and never talk to anything but loopback.
"""

from __future__ import annotations

from pathlib import Path


def nsd_conf(workdir: Path, zonesdir: Path, addr: str, port: int, zones: list[str]) -> str:
    """nsd.conf serving every zone from ``<zonesdir>/<name>.zone``.

    Remote control goes over a unix socket (no TLS keys to generate), so
    reloads and ``reconfig`` for zones added at run time are cheap.
    """
    zone_blocks = "".join(
        f'zone:\n    name: "{name}"\n    include-pattern: "world"\n' for name in zones
    )
    return f"""\
server:
    ip-address: {addr}@{port}
    port: {port}
    do-ip4: yes
    do-ip6: no
    reuseport: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{zonesdir}"
    database: ""
    zonelistfile: "{workdir}/nsd-zone.list"
    xfrdfile: "{workdir}/nsd-xfrd.state"
    xfrdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    logfile: "{workdir}/nsd.log"
    verbosity: 1
    hide-version: yes
    zonefiles-write: 0
    xfrd-reload-timeout: 0
    refuse-any: no
    # Response rate limiting is for the Internet: here every query comes from
    # one unbound, and benchmarks' bursts must not be answered with drops.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0

remote-control:
    control-enable: yes
    control-interface: "{workdir}/nsd.ctl"

pattern:
    name: "world"
    zonefile: "%s.zone"

{zone_blocks}"""


def unbound_conf(workdir: Path, name: str, addr: str, port: int, auth_addr: str,
                 validating: bool) -> str:
    """unbound.conf for a resolver that only knows ``test.`` (stub to nsd).

    ``local-zone: "." refuse`` keeps it from ever contacting a real root;
    ``test.`` is made transparent (it is a built-in static local zone in
    unbound).  Caps on cache TTLs keep scenario changes visible quickly.
    """
    validation = (
        f'    module-config: "validator iterator"\n'
        f'    trust-anchor-file: "{workdir}/test.anchor"\n'
        f"    val-log-level: 2\n"
        f"    val-bogus-ttl: 1\n"
        f"    val-permissive-mode: no\n"
        if validating
        else '    module-config: "iterator"\n'
    )
    return f"""\
server:
    interface: {addr}@{port}
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/{name}.pid"
    logfile: "{workdir}/{name}.log"
    use-syslog: no
    log-time-ascii: yes
    verbosity: 1
    log-servfail: yes
    ede: yes
    do-not-query-localhost: no
    root-hints: "{workdir}/root.hints"
    local-zone: "." refuse
    local-zone: "test." transparent
    qname-minimisation: no
    aggressive-nsec: no
    prefetch: no
    prefetch-key: no
    cache-min-ttl: 0
    cache-max-ttl: 5
    cache-max-negative-ttl: 5
    infra-host-ttl: 5
    infra-keep-probing: yes
    harden-referral-path: no
    trust-anchor-signaling: no
    root-key-sentinel: no
{validation}
remote-control:
    control-enable: yes
    control-interface: "{workdir}/{name}.ctl"
    control-use-cert: no

stub-zone:
    name: "test."
    stub-addr: {auth_addr}@{port}
"""
