"""Fleet benchmark: the PostgreSQL store against SQLite, and a cold start spread over three daemons.

Starts the test world (nsd + unbound, the HTTPS policy host, the test CA)
and a PostgreSQL server of its own (tests/world/postgres.py), then measures
in one run:

1. cached socketmap throughput of a daemon on SQLite and of one on
   PostgreSQL (the hot path is memory: the two should be the same);
2. a cold start of DOMAINS new domains over three daemons sharing one
   PostgreSQL store: each domain asked once, at one daemon (round robin),
   and each domain asked at all three at once; total policy fetches (the
   policy host counts them) and wall time.

Load comes from bench/loadgen.c (bench/bench.py's rig).  Nothing here
asserts a speed.

usage: python bench/fleet.py [--seconds S] [--domains N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TEST_WORLD_ID", "8")

from bench import concurrent_clients, policy_world, socketmap_lookups
from rig import Rig
from tests.world.daemon import DaemonProcess
from tests.world.postgres import PostgresServer

CLIENTS = 50   # concurrent socketmap clients of a cold start, as in bench/bench.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput workload")
    parser.add_argument("--domains", type=int, default=1000, help="new domains of each cold start")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        rig = Rig(work)
        hot = [f"hot{i}" for i in range(1000)]
        spread = [f"spread{i}" for i in range(args.domains)]
        everywhere = [f"everywhere{i}" for i in range(args.domains)]
        pki, world, server = policy_world(work, stack, hot + spread + everywhere)
        postgres = stack.enter_context(PostgresServer())
        resolver_ip, resolver_port = world.resolver()
        base = (f'[dns]\nnameservers = ["{resolver_ip}"]\nport = {resolver_port}\n'
                f'[mta_sts]\nca_file = "{pki.ca_file}"\ntxt_recheck_s = 86400\n')
        dsn = postgres.database("bench")
        fleet_table = f'[cache]\nbackend = "postgresql"\ndsn = "{dsn}"\n'

        def daemon(name: str, body: str) -> DaemonProcess:
            process = DaemonProcess(work / name, body)
            process.config_path.write_text(process.config_path.read_text().replace('"debug"', '"warn"'))
            process.start(timeout_s=60)
            stack.callback(process.stop)
            return process

        sqlite = daemon("sqlite", base)
        fleet = [daemon(f"fleet{n}", fleet_table + base) for n in range(3)]

        keys = work / "hot.txt"
        keys.write_text("\n".join(f"{label}.test" for label in hot))
        for port in (sqlite.socketmap_port, fleet[0].socketmap_port):
            replies = socketmap_lookups(port, [f"{label}.test" for label in hot])
            assert all(reply.startswith(b"OK secure") for reply in replies), replies[:3]
        for connections, pipeline in ((1, 1), (16, 8)):
            figures = [rig.load(d.socketmap_port, "socketmap", keys, connections, pipeline, args.seconds)
                       for d in (sqlite, fleet[0])]
            rows.append((f"cached socketmap, {connections} conn(s), pipeline {pipeline}: SQLite | PostgreSQL",
                         " | ".join(f"{f['rps']:,.0f}/s p99 {f['p99_ms']:.3f} ms" for f in figures)))

        def cold(labels: list[str], assign) -> tuple[float, int]:
            """Every client's keys sent to the daemons ``assign`` gives: (wall time, fetches)."""
            domains = [f"{label}.test" for label in labels]
            threads = []
            started = time.monotonic()
            for client in range(CLIENTS):
                for process, keys_of_client in assign(domains[client::CLIENTS]):
                    threads.append(threading.Thread(target=concurrent_clients,
                                                    args=(process.socketmap_port, [keys_of_client])))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return time.monotonic() - started, sum(server.hits(f"mta-sts.{d}") for d in domains)

        wall, fetches = cold(spread, lambda keys: [(fleet[i], keys[i::3]) for i in range(3)])
        rows.append((f"cold start, {args.domains} domains, each at one of 3 daemons ({CLIENTS} clients)",
                     f"{wall:.2f} s, {fetches} fetches"))
        wall, fetches = cold(everywhere, lambda keys: [(process, keys) for process in fleet])
        rows.append((f"cold start, {args.domains} domains, each at all 3 daemons at once ({CLIENTS} clients each)",
                     f"{wall:.2f} s, {fetches} fetches"))
        stored = postgres.sql(dsn, "SELECT count(*) FROM sts_policy")[0][0]
        rows.append(("policies in the fleet's store afterwards", f"{stored}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
