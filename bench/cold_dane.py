"""Cold-lookup latency for DANE and MTA-STS domains, and single-flight DNS query counts.

Starts the test world (nsd with DNSSEC-signed zones, a validating unbound,
the HTTPS policy server, a test CA) on loopback, then the real daemon, and
asks it over socketmap:

1. cold lookups, each of a domain the daemon has never seen (so DANE's
   MX/A/AAAA/TLSA walk and MTA-STS's TXT lookup + HTTPS fetch all run):
   DANE domains (signed, TLSA 3 1 1) and MTA-STS domains (signed, no TLSA,
   enforce policy), median and spread of ``--samples`` each;
2. single flight: a second daemon talks to unbound through a counting DNS
   forwarder; one lookup of a fresh domain, then ``--concurrent`` lookups of
   another fresh domain of the same shape sent at once on separate
   connections: both must cause the same set of DNS queries.

Prints figures; asserts nothing about speed.  Needs root (ports 53 and 443
on 127.x addresses), like the test suite: ``sudo .venv/bin/python bench/cold_dane.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402

from tests.world.daemon import DaemonProcess  # noqa: E402
from tests.world import DnsWorld, PolicyServer, Route, TestPKI, Zone  # noqa: E402


# -- a counting DNS forwarder ---------------------------------------------------

class CountingForwarder:
    """UDP and TCP DNS forwarder on 127.0.0.1 that records every (qname, qtype) it forwards."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self._stop = False
        for target in (self._udp_loop, self._tcp_loop):
            threading.Thread(target=target, daemon=True).start()

    def _record(self, wire: bytes) -> None:
        try:
            q = dns.message.from_wire(wire)
            name = q.question[0].name.to_text(omit_final_dot=True).lower() or "."
            rdtype = dns.rdatatype.to_text(q.question[0].rdtype)
        except Exception:  # noqa: BLE001 - count what can be parsed
            return
        with self._lock:
            self.queries.append((name, rdtype))

    def _udp_loop(self) -> None:
        while not self._stop:
            try:
                wire, client = self.udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=self._udp_one, args=(wire, client), daemon=True).start()

    def _udp_one(self, wire: bytes, client) -> None:
        self._record(wire)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(5)
            up.sendto(wire, self.upstream)
            try:
                reply = up.recv(65535)
            except OSError:
                return
        self.udp.sendto(reply, client)

    def _tcp_loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_one, args=(conn,), daemon=True).start()

    def _tcp_one(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream, timeout=5) as up:
            conn.settimeout(5)
            try:
                while True:
                    length = _recv_exact(conn, 2)
                    wire = _recv_exact(conn, struct.unpack("!H", length)[0])
                    self._record(wire)
                    up.sendall(length + wire)
                    rlen = _recv_exact(up, 2)
                    conn.sendall(rlen + _recv_exact(up, struct.unpack("!H", rlen)[0]))
            except (OSError, EOFError):
                return

    def under(self, domain: str) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(q for q in self.queries if q[0] == domain or q[0].endswith("." + domain))

    def close(self) -> None:
        self._stop = True
        self.udp.close()
        self.tcp.close()


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# -- a socketmap client -------------------------------------------------------------

def socketmap_request(port: int, key: str, conn: socket.socket | None = None) -> str:
    sock = conn or socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        body = f"postfix {key}".encode()
        sock.sendall(str(len(body)).encode() + b":" + body + b",")
        return _read_netstring(sock)
    finally:
        if conn is None:
            sock.close()


def _read_netstring(sock: socket.socket) -> str:
    head = b""
    while not head.endswith(b":"):
        head += _recv_exact(sock, 1)
    return _recv_exact(sock, int(head[:-1]) + 1)[:-1].decode()


# -- the world ----------------------------------------------------------------------

def build_world(workdir: Path, world_id: int, samples: int) -> tuple[DnsWorld, PolicyServer, TestPKI, dict]:
    pki = TestPKI(workdir / "pki")
    world = DnsWorld(workdir / "dns", auth_addr=f"127.53.{world_id}.1", resolver_addr=f"127.53.{world_id}.2",
                     plain_resolver_addr=f"127.53.{world_id}.3")
    policy_ip = f"127.60.{world_id}.1"
    server = PolicyServer(pki, address=policy_ip)
    names = {"dane": [f"bench-dane-{i}.test" for i in range(samples)],
             "sts": [f"bench-sts-{i}.test" for i in range(samples)],
             "flight": ["bench-flight-one.test", "bench-flight-many.test"]}
    zones = []
    for domain in names["dane"] + names["flight"]:
        zones.append(Zone(domain, ["@ IN MX 10 mx1", "@ IN MX 20 mx2", "mx1 IN A 127.71.0.1", "mx2 IN A 127.71.0.2",
                                   f"_25._tcp.mx1 IN TLSA 3 1 1 {pki.tlsa_data('mx1.' + domain)}",
                                   f"_25._tcp.mx2 IN TLSA 3 1 1 {pki.tlsa_data('mx2.' + domain)}",
                                   '_mta-sts IN TXT "v=STSv1; id=1"', f"mta-sts IN A {policy_ip}"]))
    for domain in names["sts"]:
        zones.append(Zone(domain, ["@ IN MX 10 mx1", "mx1 IN A 127.71.0.1", '_mta-sts IN TXT "v=STSv1; id=1"',
                                   f"mta-sts IN A {policy_ip}"]))
    world.add_zones(zones)
    for domain in names["dane"] + names["sts"] + names["flight"]:
        server.set(f"mta-sts.{domain}", Route(
            body=f"version: STSv1\nmode: enforce\nmx: mx1.{domain}\nmax_age: 86400\n".encode()))
    world.start()
    server.start()
    return world, server, pki, names


def daemon_config(resolver: tuple[str, int], pki: TestPKI) -> str:
    return f"""
[dns]
nameservers = ["{resolver[0]}"]
port = {resolver[1]}
timeout_s = 3
[mta_sts]
ca_file = "{pki.ca_file}"
[dane]
probe_name = "test."
"""


def start_daemon(workdir: Path, body: str) -> DaemonProcess:
    daemon = DaemonProcess(workdir, body)
    daemon.config_path.write_text(daemon.config_path.read_text().replace('log_level = "debug"', 'log_level = "warn"'))
    daemon.start()
    return daemon


def cold_latencies(daemon: DaemonProcess, domains: list[str]) -> tuple[list[float], Counter]:
    times, answers = [], Counter()
    for domain in domains:
        started = time.perf_counter()
        answer = socketmap_request(daemon.socketmap_port, domain)
        times.append((time.perf_counter() - started) * 1000)
        answers[" ".join(answer.split()[:2])] += 1   # "OK dane-only", "OK secure", ...
    return times, answers


def concurrent_lookups(port: int, domain: str, count: int) -> Counter:
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    body = f"postfix {domain}".encode()
    frame = str(len(body)).encode() + b":" + body + b","
    barrier = threading.Barrier(count)
    answers: Counter = Counter()
    lock = threading.Lock()

    def one(conn: socket.socket) -> None:
        barrier.wait()
        conn.sendall(frame)
        answer = _read_netstring(conn)
        with lock:
            answers[answer] += 1

    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return answers


def fmt(times: list[float]) -> str:
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else times
    return (f"median {statistics.median(times):7.2f} ms   min {min(times):7.2f}   p10 {q[0]:7.2f}   "
            f"p90 {q[-1]:7.2f}   max {max(times):7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=15, help="fresh domains per kind")
    parser.add_argument("--concurrent", type=int, default=50, help="simultaneous lookups of one fresh domain")
    parser.add_argument("--world-id", type=int, default=int(os.environ.get("TEST_WORLD_ID", "7")),
                        help="test world addresses 127.53.N.x / 127.60.N.1 (default: $TEST_WORLD_ID or 7)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/cold_dane.py binds ports 53 and 443 on loopback: run it as root")
    workdir = Path(tempfile.mkdtemp(prefix="cold-dane-"))
    world = server = direct = counted = forwarder = None
    try:
        world, server, pki, names = build_world(workdir, args.world_id, args.samples)
        direct = start_daemon(workdir / "direct", daemon_config(world.resolver(), pki))
        socketmap_request(direct.socketmap_port, "warmup.test")   # first use of the HTTPS/DNS code paths
        dane_times, dane_answers = cold_latencies(direct, names["dane"])
        sts_times, sts_answers = cold_latencies(direct, names["sts"])
        warm_started = time.perf_counter()
        for domain in names["dane"]:
            socketmap_request(direct.socketmap_port, domain)
        warm_ms = (time.perf_counter() - warm_started) * 1000 / len(names["dane"])

        forwarder = CountingForwarder(world.resolver())
        counted = start_daemon(workdir / "counted", daemon_config(("127.0.0.1", forwarder.port), pki))
        one_answer = socketmap_request(counted.socketmap_port, names["flight"][0])
        many_answers = concurrent_lookups(counted.socketmap_port, names["flight"][1], args.concurrent)
        time.sleep(0.5)   # let any stray query land before counting
        one = forwarder.under(names["flight"][0])
        many = forwarder.under(names["flight"][1])
    finally:
        for daemon in (counted, direct):
            if daemon is not None:
                daemon.stop()
        if forwarder is not None:
            forwarder.close()
        if server is not None:
            server.stop()
        if world is not None:
            world.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"cold lookups over socketmap, test world on loopback (nsd + validating unbound + HTTPS policy host), "
          f"{args.samples} fresh domains each, {os.cpu_count()} CPUs")
    print(f"  DANE domain (2 MX, TLSA 3 1 1, also MTA-STS):  {fmt(dane_times)}   answers {dict(dane_answers)}")
    print(f"  MTA-STS domain (1 MX, no TLSA):                {fmt(sts_times)}   answers {dict(sts_answers)}")
    print(f"  same DANE domains again, from the cache:       {warm_ms:.3f} ms per lookup (one connection each)")
    print()
    print(f"single flight (DNS queries counted by a forwarder between the daemon and unbound):")
    print(f"  1 lookup of {names['flight'][0]}: {len(one)} queries, answer {one_answer!r}")
    print(f"  {args.concurrent} concurrent lookups of {names['flight'][1]}: {len(many)} queries, "
          f"answers {dict(many_answers)}")
    strip = lambda qs, d: [(n.removesuffix(d).rstrip(".") or "@", t) for n, t in qs]  # noqa: E731
    same = strip(one, names["flight"][0]) == strip(many, names["flight"][1])
    print(f"  same query set: {same}")
    for name, rdtype in strip(many, names["flight"][1]):
        print(f"    {name:<14} {rdtype}")


if __name__ == "__main__":
    main()
