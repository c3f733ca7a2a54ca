"""Hostile cases against the real daemon, measured: what each costs and whether everyone else noticed.

Starts the test world (nsd + unbound, the HTTPS policy server, the hostile
policy host, the test CA) from tests/world and one daemon with the default
limits, then runs each hostile case while a well-behaved client asks for a
cached domain on its own connection, and prints one table:

- time: until the hostile lookup was answered, or the hostile client was
  dealt with (closed, stopped being read, fully answered);
- RSS and open file descriptors of the daemon before the case, at its peak
  during the case, and after it;
- fds back: seconds after the case until the daemon's descriptors are back at
  the baseline (target: within mta_sts.http_timeout_s + 1 s);
- the well-behaved client's p99 during the case (and at least 2 s), against
  its idle p99 (target: <= 2 x idle p99 + 1 ms);
- the answer, and whether a NOTFOUND came from one of our own limits (target:
  never; a hostile policy host's own domain gets "no policy", RFC 8461 §5).

Nothing here asserts; the tests in tests/e2e/test_hostile_*.py do, with short
limits.  usage: python bench/hostile.py [--http-timeout S] [--per-host N] [--pin] [--only TEXT]

--pin separates the daemon from the rig on a 2-core machine: the daemon's
event loop and the well-behaved client on CPU 0; the test world, the
attackers and the daemon's resolver processes on CPU 1.  Without it the
attackers' own CPU (a Python client opening 1,100 connections, the world
serving 400 cold domains) competes with the daemon for the same two cores,
and the p99 measures that contention as much as the daemon.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.world import DnsWorld, PolicyServer, Route, TestPKI  # noqa: E402
from tests.world.addresses import (  # noqa: E402
    DNS_AUTH, DNS_PLAIN_RESOLVER, DNS_RESOLVER, HOSTILE_POLICY_IP, POLICY_IP)
from tests.world.daemon import DaemonProcess  # noqa: E402
from tests.world.hostile import HostileServer, SteadyClient, proc_usage  # noqa: E402

# The well-behaved client runs in its own process: in ours, the hostile
# clients' threads would hold the GIL and the p99 would measure Python, not the daemon.
FORK = multiprocessing.get_context("fork")
from tests.world.netstrings import netstring, read_netstring  # noqa: E402

MB = 1024 * 1024
HOSTILE_HOSTS = ["endless-headers", "informational-storm", "slow-body", "oversize-content-length",
                 "oversize-chunked", "oversize-close-delimited"]
VALID_HOSTS = ["content-length", "chunked", "close-delimited"]
COLD = 600          # cold policy domains for the in-flight cases
PER_HOST_CASE = 1   # domains per policy-host case, fetched at once (--per-host)
MIN_WINDOW_S = 2.0  # the well-behaved client's p99 is taken over the case, and at least this long
DAEMON_CPU, RIG_CPU = {0}, {1}   # --pin
PINNED = False


def policy(domain: str) -> bytes:
    return f"version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 86400\n".encode()


class Steady:
    """The well-behaved client, in a child process: one socketmap connection kept open, asking
    for the cached domain one lookup at a time (as Postfix does) every 5 ms until stopped."""

    def __init__(self, path: Path, key: bytes, expected: bytes) -> None:
        self._stopping = FORK.Event()
        self._results = FORK.Queue()
        self._process = FORK.Process(target=self._run, args=(str(path), key, expected), daemon=True)
        self._process.start()

    def _run(self, path: str, key: bytes, expected: bytes) -> None:
        if PINNED:
            os.sched_setaffinity(0, DAEMON_CPU)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(60)
        sock.connect(path)
        client = SteadyClient(lambda: self._ask(sock, key), expected, pause_s=0.005)
        client.start()
        self._stopping.wait()
        client.stop()
        self._results.put((client.p99(), len(client.latencies), len(client.wrong)))

    @staticmethod
    def _ask(sock: socket.socket, key: bytes) -> bytes:
        sock.sendall(netstring(b"postfix " + key))
        return read_netstring(sock)

    def stop(self) -> tuple[float, int, int]:
        """(p99 in seconds, lookups, wrong answers)."""
        self._stopping.set()
        result = self._results.get(timeout=120)
        self._process.join()
        return result


@dataclass
class Row:
    case: str
    took_s: float
    rss: tuple[int, int, int]
    fds: tuple[int, int, int]
    fds_back_s: float | None
    p99_ms: float
    answer: str
    local_notfound: bool


class Sampler(threading.Thread):
    """Peak RSS and fds of the daemon while a case runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_rss, self.peak_fds = pid, 0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            rss, fds = proc_usage(self.pid)
            self.peak_rss, self.peak_fds = max(self.peak_rss, rss), max(self.peak_fds, fds)
            self.stopping.wait(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def measure(name: str, daemon: DaemonProcess, expected: bytes, case, settle_s: float) -> Row:
    """Run ``case()`` (returns (answer, local_notfound)) while a steady client asks; collect one row."""
    pid = daemon.proc.pid
    rss0, fds0 = proc_usage(pid)
    sampler = Sampler(pid)
    sampler.start()
    client = Steady(daemon.unix_path, b"calm.test", expected)
    time.sleep(0.2)
    start = time.monotonic()
    try:
        answer, local_notfound = case()
    finally:
        took = time.monotonic() - start
        time.sleep(max(0.0, MIN_WINDOW_S - took))
        p99, _, wrong = client.stop()
        sampler.stop()
    ended = time.monotonic()
    back = None
    while time.monotonic() - ended < settle_s:
        if proc_usage(pid)[1] <= fds0:
            back = time.monotonic() - ended
            break
        time.sleep(0.02)
    rss1, fds1 = proc_usage(pid)
    if wrong:
        answer += f"; steady client got {wrong} wrong answers"
    return Row(name, took, (rss0, sampler.peak_rss, rss1), (fds0, sampler.peak_fds, fds1), back,
               p99 * 1000, answer, local_notfound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-timeout", type=float, default=10.0, help="mta_sts.http_timeout_s (default 10)")
    parser.add_argument("--per-host", type=int, default=PER_HOST_CASE,
                        help="domains on the hostile host fetched at once per case (default 1: one hostile host)")
    parser.add_argument("--pin", action="store_true", help="the daemon's loop on CPU 0, everything else on CPU 1")
    parser.add_argument("--only", default="", metavar="TEXT", help="run only the cases whose name contains TEXT")
    args = parser.parse_args()
    global PINNED
    PINNED = args.pin
    if PINNED:
        os.sched_setaffinity(0, RIG_CPU)   # inherited by the world, the attackers' threads and the daemon's children
    per_host = args.per_host
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        pki = TestPKI(work / "pki")
        world = DnsWorld(work / "dns", auth_addr=DNS_AUTH, resolver_addr=DNS_RESOLVER,
                         plain_resolver_addr=DNS_PLAIN_RESOLVER)
        server = PolicyServer(pki, address=POLICY_IP)
        hostile = HostileServer(pki)
        records = []
        for label in ["calm"] + [f"cold{i}" for i in range(COLD)]:
            records += [f'_mta-sts.{label} 60 IN TXT "v=STSv1; id=1"', f"mta-sts.{label} 60 IN A {POLICY_IP}"]
            server.set(f"mta-sts.{label}.test", Route(body=policy(f"{label}.test")))
        for case in HOSTILE_HOSTS + VALID_HOSTS:
            for i in range(per_host):
                label = f"h-{case}-{i}"
                records += [f'_mta-sts.{label} 60 IN TXT "v=STSv1; id=1"',
                            f"mta-sts.{label} 60 IN A {HOSTILE_POLICY_IP}"]
                hostile.set(f"mta-sts.{label}.test", case, policy(f"{label}.test"))
        world.parent_records = records
        world.start()
        stack.callback(world.stop)
        server.start()
        stack.callback(server.stop)
        hostile.start()
        stack.callback(hostile.stop)
        resolver_ip, resolver_port = world.resolver()
        daemon = DaemonProcess(work / "daemon", f"""
[dns]
nameservers = ["{resolver_ip}"]
port = {resolver_port}
[mta_sts]
ca_file = "{pki.ca_file}"
http_timeout_s = {args.http_timeout}
[dane]
enabled = false
""")
        daemon.config_path.write_text(daemon.config_path.read_text().replace('"debug"', '"info"'))
        daemon.start()
        stack.callback(daemon.stop)
        if PINNED:   # its resolver processes, started already, stay on the rig's CPU
            os.sched_setaffinity(daemon.proc.pid, DAEMON_CPU)
        expected = b"OK secure match=mx.calm.test servername=hostname"
        idle = Steady(daemon.unix_path, b"calm.test", expected)   # the first lookup caches it
        time.sleep(5)
        idle_p99, lookups, wrong = idle.stop()
        assert lookups > 100 and not wrong, "the world does not answer"
        idle_p99 *= 1000
        settle = args.http_timeout + 1

        def run(name: str, case) -> None:
            if args.only in name:
                rows.append(measure(name, daemon, expected, case, settle))

        def tcp_ask(key: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=60) as sock:
                sock.sendall(netstring(b"postfix " + key))
                return read_netstring(sock)

        for case in HOSTILE_HOSTS + VALID_HOSTS:
            def host_case(case=case):
                answers: list[bytes] = [b""] * per_host
                def one(i: int) -> None:
                    answers[i] = tcp_ask(f"h-{case}-{i}.test".encode())
                threads = [threading.Thread(target=one, args=(i,)) for i in range(per_host)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                kinds = sorted({a.split(b" ")[0].decode() for a in answers})
                return f"{per_host} x " + "/".join(kinds), False   # the host's own fault, not a local limit
            run(f"policy host: {case} (x{per_host})", host_case)

        def slowloris():
            sock = socket.create_connection(("127.0.0.1", daemon.socketmap_port))
            request = netstring(b"postfix calm.test")
            try:
                for i in range(1000):
                    sock.send(request[i % len(request):][:1])
                    sock.settimeout(2)
                    try:
                        if sock.recv(100) == b"":
                            return "closed by daemon", False
                    except socket.timeout:
                        pass
            except OSError:
                return "closed by daemon", False
            finally:
                sock.close()
            return "still open", False
        run("client: slowloris, 1 byte / 2 s", slowloris)

        def flood():
            held, refused = [], 0
            try:
                for _ in range(1100):
                    held.append(socket.create_connection(("127.0.0.1", daemon.socketmap_port)))
                time.sleep(0.5)
                for sock in held:
                    sock.setblocking(False)
                    try:
                        if sock.recv(1) == b"":
                            refused += 1
                    except BlockingIOError:
                        pass
                    except ConnectionResetError:
                        refused += 1
            finally:
                for sock in held:
                    sock.close()
            return f"{len(held) - refused} held, {refused} closed at once", False
        run("client: 1100 idle connections", flood)

        def no_reading():
            sock = socket.create_connection(("127.0.0.1", daemon.socketmap_port))
            sock.settimeout(2)
            sent = 0
            try:
                while sent < 500 * MB:
                    sent += sock.send(netstring(b"postfix calm.test") * 4096)
            except socket.timeout:
                return f"stopped reading after {sent / MB:.1f} MB", False
            finally:
                sock.close()
            return f"read all {sent / MB:.0f} MB", False
        run("client: pipelines, never reads", no_reading)

        def cold_pipeline(first: int, count: int, connections: int):
            def one(keys: list[bytes], out: list[bytes]) -> None:
                with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=120) as sock:
                    sock.sendall(b"".join(netstring(b"postfix " + k) for k in keys))
                    out.extend(read_netstring(sock) for _ in keys)
            keys = [f"cold{i}.test".encode() for i in range(first, first + count)]
            outs: list[list[bytes]] = [[] for _ in range(connections)]
            threads = [threading.Thread(target=one, args=(keys[i::connections], outs[i])) for i in range(connections)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            answers = [a for out in outs for a in out]
            kinds = {kind: sum(a.startswith(kind.encode()) for a in answers) for kind in ("OK", "TEMP", "NOTFOUND")}
            return ", ".join(f"{n} {k}" for k, n in kinds.items() if n), kinds["NOTFOUND"] > 0
        run("client: 200 cold names, 1 connection", lambda: cold_pipeline(0, 200, 1))
        run("client: 400 cold names, 8 connections", lambda: cold_pipeline(200, 400, 8))

    print(f"idle p99 of the well-behaved client: {idle_p99:.2f} ms; target during a case: "
          f"<= {2 * idle_p99 + 1:.2f} ms; fds back within {args.http_timeout + 1:g} s; RSS growth <= 64 MB")
    print()
    header = ("case", "time s", "RSS MB before/peak/after", "fds before/peak/after", "fds back s", "p99 ms",
              "targets", "answer")
    table = [header]
    for row in rows:
        ok = (row.rss[1] - row.rss[0] <= 64 * MB and row.fds_back_s is not None
              and row.p99_ms <= 2 * idle_p99 + 1 and not row.local_notfound)
        table.append((row.case, f"{row.took_s:.2f}",
                      "/".join(f"{r / MB:.0f}" for r in row.rss), "/".join(map(str, row.fds)),
                      "-" if row.fds_back_s is None else f"{row.fds_back_s:.2f}", f"{row.p99_ms:.2f}",
                      "met" if ok else "MISSED", row.answer))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print(" | ".join(cell.ljust(width) for cell, width in zip(r, widths)))


if __name__ == "__main__":
    main()
