"""A socketmap / tcp_table load generator: N connections, each sending requests back to back.

Runs in its own process (asyncio, one core) so it competes with the daemon
only for the CPU, never for its event loop.  Prints one JSON line:
requests/s and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def socketmap_request(map_name: str, key: str) -> bytes:
    payload = f"{map_name} {key}".encode()
    return b"%d:%s," % (len(payload), payload)


def tcp_request(key: str) -> bytes:
    return f"get {key}\n".encode()


async def _read_reply(reader: asyncio.StreamReader, protocol: str) -> bytes:
    if protocol == "tcp_table":
        return await reader.readline()
    length = await reader.readuntil(b":")
    return await reader.readexactly(int(length[:-1]) + 1)


async def _client(host: str, port: int, protocol: str, requests: list[bytes], deadline: float,
                  pipeline: int, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    index = 0
    try:
        while time.perf_counter() < deadline:
            batch = [requests[(index + i) % len(requests)] for i in range(pipeline)]
            index += pipeline
            started = time.perf_counter()
            writer.write(b"".join(batch))
            for _ in batch:
                await _read_reply(reader, protocol)
            latencies.append((time.perf_counter() - started) / pipeline)
            done += pipeline
    finally:
        writer.close()
    return done


async def run(host: str, port: int, protocol: str, keys: list[str], connections: int, seconds: float,
              pipeline: int, map_name: str) -> dict:
    requests = [tcp_request(k) if protocol == "tcp_table" else socketmap_request(map_name, k) for k in keys]
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    counts = await asyncio.gather(*(
        _client(host, port, protocol, requests[i % len(requests):] + requests[:i % len(requests)], deadline,
                pipeline, latencies) for i in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": sum(counts), "rps": sum(counts) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=("socketmap", "tcp_table"), default="socketmap")
    parser.add_argument("--map-name", default="postfix")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--keys-file", required=True)
    args = parser.parse_args()
    with open(args.keys_file) as handle:
        keys = [line.strip() for line in handle if line.strip()]
    result = asyncio.run(run(args.host, args.port, args.protocol, keys, args.connections, args.seconds,
                             args.pipeline, args.map_name))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
