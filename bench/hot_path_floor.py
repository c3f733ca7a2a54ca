"""What a Python hot path without Twisted's layers does here: the design that would reach issue 15's cached targets.

A bare asyncio ``Protocol`` that frames socketmap netstrings in
``data_received`` and answers from a dict (what our daemon's cached path
does, without Twisted's per-event logging context, its producer/consumer
transport and ``NetstringReceiver``'s parsing methods), on uvloop when it
can be imported (as the reference runs), in 1 and then 2 processes sharing
the port (SO_REUSEPORT).  Measured with bench/loadgen.c like bench/bench.py;
it looks nothing up and checks no limit, so it is a ceiling, not a rival.

usage: python bench/hot_path_floor.py [--seconds S]   (the reference's venv has uvloop:
       /tmp/bench-reference-venv/bin/python bench/hot_path_floor.py)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import Rig  # noqa: E402
DOMAINS = [f"hot{i}.test" for i in range(50)]


class Socketmap(asyncio.Protocol):
    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        while True:
            colon = buffer.find(b":")
            if colon < 0:
                break
            length = int(buffer[:colon])
            end = colon + 1 + length
            if len(buffer) <= end:
                break
            _, _, key = buffer[colon + 1:end].partition(b" ")
            out.append(self.answers.get(key, b"9:NOTFOUND ,"))
            buffer = buffer[end + 1:]
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))


def serve(port: int) -> None:
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    answers = {}
    for domain in DOMAINS:
        payload = f"OK secure match=mx.{domain} servername=hostname".encode()
        answers[domain.encode()] = b"%d:%s," % (len(payload), payload)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    server = loop.run_until_complete(loop.create_server(lambda: Socketmap(answers), sock=sock))
    loop.run_until_complete(server.serve_forever())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: F401
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        keys = Path(tmp) / "keys.txt"
        keys.write_text("\n".join(DOMAINS))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        servers = []
        for processes in (1, 2):
            while len(servers) < processes:
                servers.append(multiprocessing.Process(target=serve, args=(port,), daemon=True))
                servers[-1].start()
            time.sleep(0.5)
            for connections in (16, 64):
                r = rig.load(port, "socketmap", keys, connections, 1, args.seconds)
                print(f"bare asyncio Protocol ({loop_name}), {processes} process{'es' if processes > 1 else ''}, "
                      f"{connections} conns: {r['rps']:,.0f}/s p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms",
                      flush=True)
        for server in servers:
            server.terminate()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
