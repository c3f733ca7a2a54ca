"""CPU per policy fetch: ours (Twisted's Agent over pyOpenSSL) against asyncio's stdlib ssl, same policy host.

What is left of issue 15's cold start after DNS moved to Twisted's codec is
mostly the policy fetch.  This measures one process doing N fetches, 25 at
a time, against the test world's HTTPS policy host, trusting a store the
size of the system's: first our :class:`~mtasts_resolver.net.sts_fetch.PolicyFetcher`
(its DNS lookups of the policy host included), then a bare asyncio client
on the stdlib ``ssl`` module (no DNS, no limits, no framing checks: a floor,
not a rival).  It prints CPU seconds and wall time of each.

usage: python bench/fetch_floor.py [--fetches N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TEST_WORLD_ID", "9")
CONCURRENCY = 25


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ours(count: int, resolver_ip: str, resolver_port: int, ca_file: str) -> dict:
    from mtasts_resolver.net.reactor import install_reactor

    install_reactor()
    from twisted.internet import defer, reactor, task

    from mtasts_resolver.net.network import dns_on_reactor
    from mtasts_resolver.config import Config, DnsConfig, MtaStsConfig
    from mtasts_resolver.net.sts_fetch import PolicyFetcher
    from mtasts_resolver.net.tls import trust_root

    config = Config(dns=DnsConfig(nameservers=(resolver_ip,), port=resolver_port), mta_sts=MtaStsConfig())
    fetcher = PolicyFetcher(reactor, dns_on_reactor(config, reactor), trust_root(ca_file), 10, 65536)
    out: dict = {}

    async def run() -> None:
        limit = defer.DeferredSemaphore(CONCURRENCY)
        started, cpu = time.monotonic(), cpu_s()
        bodies = await defer.gatherResults([limit.run(fetcher.fetch, f"c{i}.test") for i in range(count)])
        out.update(ok=sum(isinstance(b, bytes) for b in bodies), wall=time.monotonic() - started, cpu=cpu_s() - cpu)

    try:
        task.react(lambda _: defer.ensureDeferred(run()))
    except SystemExit:
        pass
    return out


def stdlib(count: int, policy_ip: str, ca_file: str) -> dict:
    import asyncio
    import ssl

    context = ssl.create_default_context(cafile=ca_file)

    async def one(host: str, limit: asyncio.Semaphore) -> bool:
        async with limit:
            reader, writer = await asyncio.open_connection(policy_ip, 443, ssl=context, server_hostname=host)
            writer.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            data = await reader.read()
            writer.close()
            return b" 200 " in data.split(b"\r\n", 1)[0]

    async def run() -> dict:
        limit = asyncio.Semaphore(CONCURRENCY)
        started, cpu = time.monotonic(), cpu_s()
        done = await asyncio.gather(*[one(f"mta-sts.c{i}.test", limit) for i in range(count)])
        return dict(ok=sum(done), wall=time.monotonic() - started, cpu=cpu_s() - cpu)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fetches", type=int, default=600)
    parser.add_argument("--side", choices=("ours", "stdlib"), help=argparse.SUPPRESS)   # a measuring child
    parser.add_argument("--args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "ours":
        ip, port, ca = args.args
        print(json.dumps(ours(args.fetches, ip, int(port), ca)))
        return
    if args.side == "stdlib":
        print(json.dumps(stdlib(args.fetches, *args.args)))
        return
    from bench import POLICY_IP, SYSTEM_CA_BUNDLE, policy_world

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        pki, world, _ = policy_world(work, stack, [f"c{i}" for i in range(args.fetches)])
        resolver_ip, resolver_port = world.resolver()
        trust = work / "trust.pem"
        trust.write_bytes(SYSTEM_CA_BUNDLE.read_bytes() + pki.ca_file.read_bytes())
        for side, side_args in (("ours", [resolver_ip, str(resolver_port), str(trust)]),
                                ("stdlib", [POLICY_IP, str(trust)])):
            out = subprocess.run([sys.executable, __file__, "--fetches", str(args.fetches), "--side", side,
                                  "--args", *side_args], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{side:6}: {r['ok']}/{args.fetches} fetched, {r['cpu'] / args.fetches * 1000:.2f} ms CPU per fetch, "
                  f"wall {r['wall']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
