"""The C load generator (bench/loadgen.c) and echo server (bench/echoserver.c), built once per run.

Its own module, with nothing but the standard library, so that a bench can
run it from an interpreter without this project's test dependencies
(bench/hot_path_floor.py runs in the reference's venv, for its uvloop).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Rig:
    """The C load generator and echo server, built once."""

    def __init__(self, workdir: Path) -> None:
        self.loadgen = workdir / "loadgen"
        self.echoserver = workdir / "echoserver"
        for name, target in (("loadgen.c", self.loadgen), ("echoserver.c", self.echoserver)):
            subprocess.run(["gcc", "-O2", "-o", str(target), str(REPO / "bench" / name)], check=True)

    def load(self, port: int, protocol: str, keys_file: Path, connections: int, pipeline: int,
             seconds: float) -> dict:
        out = subprocess.run([str(self.loadgen), "127.0.0.1", str(port), protocol[0], str(connections),
                              str(pipeline), str(seconds), str(keys_file), "postfix"],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
