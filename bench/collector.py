"""Collector throughput: libtlsrpt-format datagrams sent non-blocking (as libtlsrpt does) at fixed rates.

For each rate the sender paces MSG_DONTWAIT sends for ``--seconds``; a send
that fails with EAGAIN is a datagram a real libtlsrpt client would have
lost.  After each step the spool must hold exactly the datagrams the kernel
accepted.  Prints, per rate: sent, refused (lost), spooled, and the highest
rate with zero loss.  Run as root from the repository: python3 bench/collector.py
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000,40000,80000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--qlen", type=int, default=SYSTEMD_MAX_DGRAM_QLEN,
                        help="net.unix.max_dgram_qlen for the daemon, set in its own network namespace "
                             f"(default {SYSTEMD_MAX_DGRAM_QLEN}, systemd's; the kernel's is 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtasts-bench-") as tmp:
        work = Path(tmp)
        path = str(work / "tlsrpt.sock")
        daemon = DaemonProcess(work / "daemon", f'\n[tlsrpt]\ncollector_socket = "{path}"\n')
        daemon.config_path.write_text(daemon.config_path.read_text().replace('log_level = "debug"',
                                                                             'log_level = "info"'))
        daemon.command_prefix = in_own_netns(args.qlen)
        daemon.start()
        db = daemon.workdir / "state" / "cache.sqlite3"
        try:
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
