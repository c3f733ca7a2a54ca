"""Collector throughput: libtlsrpt-format datagrams sent non-blocking (as libtlsrpt does) at fixed rates.

For each rate the sender paces MSG_DONTWAIT sends for ``--seconds``; a send
that fails with EAGAIN is a datagram a real libtlsrpt client would have
lost.  After each step the spool must hold exactly the datagrams the kernel
accepted.  Prints, per rate: sent, refused (lost), spooled, and the highest
rate with zero loss.  With ``--latency``: the commit latency (from a
datagram's send to the commit that holds it, seen by polling the spool)
under a steady 10/s stream and under 30,000/s bursts.
Run as root from the repository: python3 bench/collector.py [--latency]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.world.daemon import DaemonProcess  # noqa: E402
from tests.world import libtlsrpt  # noqa: E402
from tests.world.tlsrpt import SYSTEMD_MAX_DGRAM_QLEN, in_own_netns, spooled_sessions, wait_until  # noqa: E402

PACE_CHUNK_S = 0.002  # the sender tops up to the target count every 2 ms


def sample_datagram(n: int) -> bytes:
    policy = libtlsrpt.Policy(libtlsrpt.TLSRPT_POLICY_STS, "bench.example",
                              ["version: STSv1", "mode: enforce", "mx: *.bench.example", "max_age: 86400"],
                              ["*.bench.example"])
    if n % 10 == 0:
        policy.failures.append(libtlsrpt.Failure(libtlsrpt.CERTIFICATE_EXPIRED, "192.0.2.1", "mx1.bench.example",
                                                 None, "198.51.100.5", None, "certificate has expired"))
        policy.final_failure = True
    return libtlsrpt.datagram("bench.example", "v=TLSRPTv1; rua=mailto:r@bench.example", [policy])


def send_at(path: str, rate: int, seconds: float) -> tuple[int, int]:
    """(accepted, refused) sending ``rate`` datagrams per second for ``seconds``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    data = [sample_datagram(n) for n in range(100)]
    total = int(rate * seconds)
    accepted = refused = sent = 0
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            try:
                sock.sendto(data[sent % 100], socket.MSG_DONTWAIT, path)
                accepted += 1
            except BlockingIOError:
                refused += 1
            sent += 1
        time.sleep(PACE_CHUNK_S)
    sock.close()
    return accepted, refused


class SpoolWatcher(threading.Thread):
    """Polls the spool's committed session count every ``interval_s``: (monotonic time, count) samples."""

    def __init__(self, db: Path, interval_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.db, self.interval_s = db, interval_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), spooled_sessions(self.db)))
            time.sleep(self.interval_s)

    def committed_at(self, count: int) -> float | None:
        return next((t for t, n in self.samples if n >= count), None)


def send_timed(path: str, rate: int, seconds: float) -> list[float]:
    """Sends at ``rate`` for ``seconds``; returns the send time of each datagram the kernel accepted."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    data = sample_datagram(1)
    total = int(rate * seconds)
    sent_at: list[float] = []
    sent = 0
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            try:
                sock.sendto(data, socket.MSG_DONTWAIT, path)
                sent_at.append(time.monotonic())
            except BlockingIOError:
                pass
            sent += 1
        time.sleep(min(PACE_CHUNK_S, 1 / rate))
    sock.close()
    return sent_at


def latency(path: str, db: Path, flush_interval_s: float) -> None:
    """Commit latency per datagram at 10/s steady and in 30,000/s bursts."""
    print(f"spool_flush_interval_s = {flush_interval_s:g}; latency = send to commit, seen by polling every 2 ms")
    print(f"{'pattern':>26} {'datagrams':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, rate, seconds, repeat in (("steady 10/s for 10 s", 10, 10.0, 1),
                                        ("burst 30000/s for 1 s (x3)", 30000, 1.0, 3)):
        latencies: list[float] = []
        count = 0
        for _ in range(repeat):
            base = spooled_sessions(db)
            watcher = SpoolWatcher(db)
            watcher.start()
            sent_at = send_timed(path, rate, seconds)
            wait_until(lambda: spooled_sessions(db) >= base + len(sent_at), 30, "the spool")
            time.sleep(0.05)
            watcher.stop.set()
            watcher.join()
            for i, at in enumerate(sent_at):
                done = watcher.committed_at(base + i + 1)
                assert done is not None
                latencies.append(max(0.0, done - at))
            count += len(sent_at)
            time.sleep(1.0)
        ms = sorted(x * 1000 for x in latencies)
        print(f"{name:>26} {count:>9} {statistics.median(ms):>7.0f} {ms[int(len(ms) * 0.99) - 1]:>7.0f} "
              f"{ms[-1]:>7.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000,40000,80000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--latency", action="store_true", help="measure commit latency instead of loss")
    parser.add_argument("--flush-interval", type=float, default=0.2, help="spool_flush_interval_s (--latency)")
    parser.add_argument("--qlen", type=int, default=SYSTEMD_MAX_DGRAM_QLEN,
                        help="net.unix.max_dgram_qlen for the daemon, set in its own network namespace "
                             f"(default {SYSTEMD_MAX_DGRAM_QLEN}, systemd's; the kernel's is 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtasts-bench-") as tmp:
        work = Path(tmp)
        path = str(work / "tlsrpt.sock")
        flush = f"spool_flush_interval_s = {args.flush_interval}\n" if args.latency else ""
        daemon = DaemonProcess(work / "daemon", f'\n[tlsrpt]\ncollector_socket = "{path}"\n{flush}')
        daemon.config_path.write_text(daemon.config_path.read_text().replace('log_level = "debug"',
                                                                             'log_level = "info"'))
        daemon.command_prefix = in_own_netns(args.qlen)
        daemon.start()
        db = daemon.workdir / "state" / "cache.sqlite3"
        try:
            if args.latency:
                latency(path, db, args.flush_interval)
                return 0
            print(f"net.unix.max_dgram_qlen = {args.qlen} (daemon's namespace); {args.seconds:g} s per rate")
            print(f"{'rate/s':>8} {'sent':>8} {'lost':>7} {'spooled':>8}")
            best = 0
            spooled_before = 0
            for rate in (int(r) for r in args.rates.split(",")):
                accepted, refused = send_at(path, rate, args.seconds)
                expected = spooled_before + accepted
                wait_until(lambda: spooled_sessions(db) >= expected, 30, "the spool")
                time.sleep(0.5)
                spooled = spooled_sessions(db) - spooled_before
                spooled_before += spooled
                print(f"{rate:>8} {accepted + refused:>8} {refused:>7} {spooled:>8}")
                if refused == 0 and spooled == accepted:
                    best = max(best, rate)
            print(f"highest rate with zero loss: {best}/s")
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
