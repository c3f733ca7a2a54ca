"""Cached-answer throughput and latency of the daemon over socketmap and tcp_table.

Seeds the persistent cache with enforce policies (as the daemon itself
stores them), starts the real daemon on it with DNS pointed at a dead
loopback port (so nothing but cached answers is measured), and drives it
with bench/load.py in a separate process.  Prints a table; asserts nothing
about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mtasts_resolver.policy.model import CachedPolicy  # noqa: E402
from mtasts_resolver.policy.sts import parse_policy  # noqa: E402
from mtasts_resolver.store.sqlite import SqliteStore  # noqa: E402
from tests.daemon_proc import DaemonProcess  # noqa: E402


def seed(state_dir: Path, count: int) -> list[str]:
    store = SqliteStore(state_dir / "cache.sqlite3")
    domains = [f"bench{i}.example" for i in range(count)]
    now = time.time()
    for domain in domains:
        policy = parse_policy(f"version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 604800\n".encode())
        store.save_policy(CachedPolicy(domain, "1", policy, now))
    store.close()
    return domains


def load(port: int, protocol: str, keys_file: Path, connections: int, seconds: float, pipeline: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--port", str(port), "--protocol", protocol,
         "--keys-file", str(keys_file), "--connections", str(connections), "--seconds", str(seconds),
         "--pipeline", str(pipeline)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per workload")
    parser.add_argument("--domains", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "state").mkdir()
        domains = seed(workdir / "state", args.domains)
        keys_file = workdir / "keys.txt"
        keys_file.write_text("\n".join(domains))
        daemon = DaemonProcess(workdir, """
[dns]
nameservers = ["127.0.0.1"]
port = 9
timeout_s = 0.5
[mta_sts]
txt_recheck_s = 86400
""")
        daemon.config_path.write_text(daemon.config_path.read_text().replace('log_level = "debug"',
                                                                             'log_level = "warn"'))
        daemon.start()
        try:
            # warm-up: the first lookup of each loaded domain starts its TXT re-check
            load(daemon.socketmap_port, "socketmap", keys_file, 4, 2.0, 1)
            rows = []
            for protocol, port in (("socketmap", daemon.socketmap_port), ("tcp_table", daemon.tcp_table_port)):
                for connections in (1, 16):
                    for pipeline in (1, 8):
                        result = load(port, protocol, keys_file, connections, args.seconds, pipeline)
                        rows.append((protocol, connections, pipeline, result))
        finally:
            daemon.stop()
    print(f"cached answers, {args.domains} domains, {args.seconds:g} s per workload, "
          f"{os.cpu_count()} CPUs (daemon and load generator share them)")
    print(f"{'protocol':<10} {'conns':>5} {'pipeline':>8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for protocol, connections, pipeline, r in rows:
        print(f"{protocol:<10} {connections:>5} {pipeline:>8} {r['rps']:>10.0f} {r['p50_ms']:>8.3f} "
              f"{r['p99_ms']:>8.3f}")


if __name__ == "__main__":
    main()
