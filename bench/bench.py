"""Side-by-side benchmark: mtasts-resolver vs postfix-mta-sts-resolver, same machine, same run.

Starts the test world (nsd + unbound, HTTPS policy host, test CA) from
tests/world, our daemon, and postfix-mta-sts-resolver (from PyPI, in a
throwaway venv, pointed at the same DNS and CA through a private mount
namespace), then runs identical workloads against both and prints one table.
Load comes from bench/loadgen.c, checked against bench/echoserver.c (the
"limit" column: what the rig itself can do).  Nothing here asserts a speed.

usage: python bench/bench.py [--seconds S] [--quick] [--reference-venv DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TEST_WORLD_ID", "9")

from mtasts_resolver.policy.model import CachedPolicy  # noqa: E402
from mtasts_resolver.policy.sts import parse_policy  # noqa: E402
from mtasts_resolver.store.sqlite import SqliteStore  # noqa: E402
from tests.world.daemon import DaemonProcess, free_port  # noqa: E402
from tests.world import DnsWorld, PolicyServer, Route, TestPKI  # noqa: E402
from tests.world.fixtures import WORLD_ID  # noqa: E402
from tests.world.hostile import proc_usage  # noqa: E402
from rig import Rig  # noqa: E402

POLICY_IP = f"127.60.{WORLD_ID}.1"
REFERENCE = "postfix-mta-sts-resolver"
STORM_POLICY_SHARE = 10   # one storm domain in this many publishes a policy
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")   # Debian's ca-certificates


def policy_body(domain: str) -> bytes:
    return f"version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 604800\n".encode()


def policy_world(work: Path, stack: ExitStack, labels: list[str]) -> tuple[TestPKI, DnsWorld, PolicyServer]:
    """The test world's DNS, CA and policy host, every ``LABEL.test`` publishing an enforce policy (id 1);
    started now, stopped with ``stack``."""
    pki = TestPKI(work / "pki")
    world = DnsWorld(work / "dns", auth_addr=f"127.53.{WORLD_ID}.1", resolver_addr=f"127.53.{WORLD_ID}.2",
                     plain_resolver_addr=f"127.53.{WORLD_ID}.3")
    server = PolicyServer(pki, address=POLICY_IP)
    records = []
    for label in labels:
        records += [f'_mta-sts.{label} 60 IN TXT "v=STSv1; id=1"', f"mta-sts.{label} 60 IN A {POLICY_IP}"]
        server.set(f"mta-sts.{label}.test", Route(body=policy_body(f"{label}.test")))
    world.parent_records = records
    world.start()
    stack.callback(world.stop)
    server.start()
    stack.callback(server.stop)
    return pki, world, server


class Reference:
    """postfix-mta-sts-resolver, resolving through the world's unbound and trusting the test CA."""

    def __init__(self, venv: Path, workdir: Path, resolver_ip: str, ca_file: Path) -> None:
        self.port = free_port()
        config = workdir / "mta-sts-daemon.yml"
        config.write_text(f"host: 127.0.0.1\nport: {self.port}\nreuse_port: true\n"
                          "cache:\n  type: internal\n  options:\n    cache_size: 200000\n"
                          "default_zone:\n  strict_testing: false\n  timeout: 4\n")
        resolv = workdir / "resolv.conf"
        resolv.write_text(f"nameserver {resolver_ip}\n")
        daemon = venv / "bin" / "mta-sts-daemon"
        # A private mount namespace gives it our resolver without touching the host's resolv.conf.
        script = f"mount --bind {resolv} /etc/resolv.conf && exec {daemon} -c {config} -v warn"
        self.log = open(workdir / "reference.log", "wb")
        self.proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", script], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, SSL_CERT_FILE=str(ca_file)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{REFERENCE} did not start: {(workdir / 'reference.log').read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def reference_venv(path: Path) -> Path:
    if not (path / "bin" / "mta-sts-daemon").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", REFERENCE, "uvloop"], check=True,
                       stderr=subprocess.DEVNULL)
    return path


def socketmap_lookups(port: int, keys: list[str], timeout_s: float = 30) -> list[bytes]:
    """One connection, one request at a time; returns the raw replies."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        reader = sock.makefile("rb")
        for key in keys:
            payload = f"postfix {key}".encode()
            sock.sendall(b"%d:%s," % (len(payload), payload))
            length = b""
            while not length.endswith(b":"):
                length += reader.read(1)
            replies.append(reader.read(int(length[:-1]) + 1)[:-1])
    return replies


def concurrent_clients(port: int, key_lists: list[list[str]]) -> float:
    """Each list on its own connection, all at once; returns the wall time."""
    threads = [threading.Thread(target=socketmap_lookups, args=(port, keys)) for keys in key_lists]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    """RSS of the process and its children (our resolver processes; the reference has none)."""
    return proc_usage(pid)[0] / (1024 * 1024)


def footprint(workdir: Path, count: int) -> tuple[float, float]:
    """Start our daemon on a cache of ``count`` policies: (seconds to READY=1, RSS MB)."""
    state = workdir / "state"
    state.mkdir(parents=True)
    store = SqliteStore(state / "cache.sqlite3")
    now = time.time()
    policies = [CachedPolicy(f"d{i}.example", "1", parse_policy(policy_body(f"d{i}.example")), now)
                for i in range(count)]
    store.save_policies(policies)
    store.close()
    daemon = DaemonProcess(workdir, '[dns]\nnameservers = ["127.0.0.1"]\nport = 9\n')
    daemon.config_path.write_text(daemon.config_path.read_text().replace('"debug"', '"warn"'))
    started = time.monotonic()
    daemon.start(timeout_s=60)
    ready_s = time.monotonic() - started
    rss = rss_mb(daemon.proc.pid)
    daemon.stop()
    return ready_s, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput workload")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (CI): fewer, shorter workloads")
    parser.add_argument("--reference-venv", type=Path, default=Path(tempfile.gettempdir()) / "bench-reference-venv")
    parser.add_argument("--cached-policies", type=int, default=100_000)
    args = parser.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    n_hot, n_cold = (50, 50) if args.quick else (1000, 1000)
    n_storm = 500 if args.quick else 10_000
    policies_on_disk = 2000 if args.quick else args.cached_policies
    ref_venv = reference_venv(args.reference_venv)
    rows: list[tuple[str, str, str, str, str]] = []

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        rig = Rig(work)
        # The storm's domains: one in STORM_POLICY_SHARE publishes MTA-STS, the rest nothing (NXDOMAIN),
        # as in a queue flushed to many domains; ours and the reference get names of their own (no shared DNS cache).
        storm = {who: [f"storm-{who}{i}" for i in range(n_storm)] for who in ("ours", "ref")}
        labels = ([f"hot{i}" for i in range(n_hot)] + [f"cold-ours{i}" for i in range(n_cold)]
                  + [f"cold-ref{i}" for i in range(n_cold)] + ["burst-ours", "burst-ref"]
                  + [label for names in storm.values() for label in names[::STORM_POLICY_SHARE]])
        pki, world, server = policy_world(work, stack, labels)
        resolver_ip, resolver_port = world.resolver()
        # Both trust a store the size of a real one, as in production (ca_file = "": the system's): the
        # system's CA bundle plus the test CA.
        trust = work / "trust.pem"
        trust.write_bytes(SYSTEM_CA_BUNDLE.read_bytes() + pki.ca_file.read_bytes())
        ours_body = f"""
[dns]
nameservers = ["{resolver_ip}"]
port = {resolver_port}
[mta_sts]
ca_file = "{trust}"
txt_recheck_s = 86400
[dane]
probe_name = "test."
# The world's unbound caps TTLs at 5 s (so tests see changes at once); model
# production TTLs instead, or every DANE result is re-resolved each minute.
min_ttl_s = 3600
"""
        ours = DaemonProcess(work / "ours", ours_body)
        ours.config_path.write_text(ours.config_path.read_text().replace('"debug"', '"warn"'))
        ours.start()
        stack.callback(ours.stop)
        ref = Reference(ref_venv, work, resolver_ip, trust)
        stack.callback(ref.stop)
        echo_port = free_port()
        echo = subprocess.Popen([str(rig.echoserver), str(echo_port), "s"])
        stack.callback(echo.kill)
        echo_tcp_port = free_port()
        echo_tcp = subprocess.Popen([str(rig.echoserver), str(echo_tcp_port), "t"])
        stack.callback(echo_tcp.kill)
        time.sleep(0.3)

        hot = [f"{label}.test" for label in labels if label.startswith("hot")]
        nopolicy = [f"none{i}.test" for i in range(len(hot))]
        # warm both caches: policies and "no policy" answers
        for port in (ours.socketmap_port, ref.port):
            replies = socketmap_lookups(port, hot + nopolicy)
            assert all(r.startswith(b"OK secure") for r in replies[:len(hot)]), replies[:3]
        keys_hot = work / "hot.txt"
        keys_hot.write_text("\n".join(hot))
        # Postfix's pattern: a policy domain is one lookup; a domain without
        # policy is its lookup plus the parent-domain probe (".test").
        mixed = []
        for policy_domain, other in zip(hot, nopolicy):
            mixed += [policy_domain, other, ".test"]
        keys_mixed = work / "mixed.txt"
        keys_mixed.write_text("\n".join(mixed))

        def throughput(name: str, keys: Path, connections: int, pipeline: int) -> None:
            limit = rig.load(echo_port, "socketmap", keys, connections, pipeline, seconds)
            a = rig.load(ours.socketmap_port, "socketmap", keys, connections, pipeline, seconds)
            b = rig.load(ref.port, "socketmap", keys, connections, pipeline, seconds)
            rows.append((f"{name}, {connections} conn{'s' if connections > 1 else ''}"
                         f"{f', pipeline {pipeline}' if pipeline > 1 else ''}",
                         f"{a['rps']:,.0f}/s p50 {a['p50_ms']:.3f} p99 {a['p99_ms']:.3f} ms",
                         f"{b['rps']:,.0f}/s p50 {b['p50_ms']:.3f} p99 {b['p99_ms']:.3f} ms",
                         f"{a['rps'] / b['rps']:.2f}x" if b["rps"] else "-",
                         f"{limit['rps']:,.0f}/s"))

        for connections in ((1, 16) if args.quick else (1, 16, 64)):
            for pipeline in (1, 8):
                throughput("cached socketmap", keys_hot, connections, pipeline)
        for connections in ((16,) if args.quick else (1, 16, 64)):
            limit = rig.load(echo_tcp_port, "tcp_table", keys_hot, connections, 1, seconds)
            a = rig.load(ours.tcp_table_port, "tcp_table", keys_hot, connections, 1, seconds)
            rows.append((f"cached tcp_table, {connections} conns", f"{a['rps']:,.0f}/s p50 {a['p50_ms']:.3f} "
                         f"p99 {a['p99_ms']:.3f} ms", "(socketmap only)", "-", f"{limit['rps']:,.0f}/s"))
        for port in (ours.socketmap_port, ref.port):   # cached again: "no policy" answers age out in 60 s
            socketmap_lookups(port, nopolicy)
        throughput("mixed with parent probes", keys_mixed, 16, 1)

        # cold start: distinct uncached domains, 50 concurrent clients
        for who, port, prefix in (("ours", ours.socketmap_port, "cold-ours"), ("ref", ref.port, "cold-ref")):
            domains = [f"{prefix}{i}.test" for i in range(n_cold)]
            wall = concurrent_clients(port, [domains[i::50] for i in range(50)])
            fetches = sum(server.hits(f"mta-sts.{d}") for d in domains)
            if who == "ours":
                cold_ours = (wall, fetches)
            else:
                cold_ref = (wall, fetches)
        rows.append((f"cold start: {n_cold} domains, 50 clients", f"{cold_ours[0]:.2f} s, {cold_ours[1]} fetches",
                     f"{cold_ref[0]:.2f} s, {cold_ref[1]} fetches", f"{cold_ref[0] / cold_ours[0]:.2f}x", "-"))
        # burst: 200 concurrent requests for one uncached domain
        burst = {}
        for who, port in (("ours", ours.socketmap_port), ("ref", ref.port)):
            domain = f"burst-{who}.test"
            wall = concurrent_clients(port, [[domain]] * 200)
            burst[who] = (wall, server.hits(f"mta-sts.{domain}"))
        rows.append(("burst: 200 requests, 1 uncached domain", f"{burst['ours'][1]} fetch(es), {burst['ours'][0]:.2f} s",
                     f"{burst['ref'][1]} fetch(es), {burst['ref'][0]:.2f} s", "-", "-"))
        # cached lookups (one connection, as one smtp(8) process asks) during a storm of distinct new domains
        for who, port in (("ours", ours.socketmap_port), ("ref", ref.port)):
            domains = [f"{label}.test" for label in storm[who]]
            started = time.monotonic()
            flood = threading.Thread(target=concurrent_clients, args=(port, [domains[i::50] for i in range(50)]))
            flood.start()
            time.sleep(0.5)
            during = rig.load(port, "socketmap", keys_hot, 1, 1, seconds)
            still_running = flood.is_alive()
            flood.join()
            storm[who] = (during, time.monotonic() - started, still_running)
        (a, a_wall, a_on), (b, b_wall, b_on) = storm["ours"], storm["ref"]
        rows.append((f"cached, 1 conn, DURING a storm of {n_storm:,} new domains (50 clients)",
                     f"p50 {a['p50_ms']:.3f} p99 {a['p99_ms']:.3f} ms; storm {a_wall:.1f} s"
                     f"{'' if a_on else ' (ENDED EARLY)'}",
                     f"p50 {b['p50_ms']:.3f} p99 {b['p99_ms']:.3f} ms; storm {b_wall:.1f} s"
                     f"{'' if b_on else ' (ENDED EARLY)'}",
                     f"{b['p99_ms'] / a['p99_ms']:.2f}x p99" if a["p99_ms"] else "-", "-"))
        ours_rss = rss_mb(ours.proc.pid)
        ref_rss = rss_mb(ref.proc.pid)
        rows.append((f"RSS after the run ({n_hot + n_cold + 1} policies)", f"{ours_rss:.0f} MB", f"{ref_rss:.0f} MB",
                     "-", "-"))

        # daemon.workers = 2 (ours only): the same cached workload on a pool sharing the sockets
        pool = DaemonProcess(work / "pool", ours_body)
        pool.config_path.write_text(pool.config_path.read_text().replace('log_level = "debug"',
                                                                         'log_level = "warn"\nworkers = 2'))
        pool.start()
        stack.callback(pool.stop)
        concurrent_clients(pool.socketmap_port, [hot] * 6)   # connections spread over both workers: warm each
        for connections in (16, 64):
            b = rig.load(ref.port, "socketmap", keys_hot, connections, 1, seconds)
            for workers, port in ((1, ours.socketmap_port), (2, pool.socketmap_port)):
                r = rig.load(port, "socketmap", keys_hot, connections, 1, seconds)
                rows.append((f"cached socketmap, {connections} conns, {workers} worker{'s' if workers > 1 else ''}",
                             f"{r['rps']:,.0f}/s p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms",
                             f"{b['rps']:,.0f}/s p50 {b['p50_ms']:.3f} p99 {b['p99_ms']:.3f} ms",
                             f"{r['rps'] / b['rps']:.2f}x" if b["rps"] else "-", "-"))

    with tempfile.TemporaryDirectory() as tmp:
        ready_s, rss = footprint(Path(tmp), policies_on_disk)
        rows.append((f"{policies_on_disk:,} cached policies on disk: start to READY, RSS",
                     f"{ready_s:.2f} s, {rss:.0f} MB", "n/a (no persistent preload)", "-", "-"))

    widths = [max(len(r[i]) for r in rows + [HEADER]) for i in range(5)]
    for row in [HEADER] + rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))


HEADER = ("workload", "mtasts-resolver", REFERENCE, "ratio", "limit (echo server)")

if __name__ == "__main__":
    main()
