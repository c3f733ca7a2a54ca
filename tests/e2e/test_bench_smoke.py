"""The side-by-side benchmark runs to the end and prints its table (no speed is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.world.daemon import REPO
from tests.world.addresses import WORLD_ID


def test_bench_quick_prints_every_row():
    # Its own world, on addresses the suite's world does not use.
    env = dict(os.environ, TEST_WORLD_ID=str((WORLD_ID + 50) % 100))
    result = subprocess.run([sys.executable, str(REPO / "bench" / "bench.py"), "--quick"], capture_output=True,
                            text=True, timeout=900, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("workload ")
    rows = {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]] for line in lines[1:]}
    for name in ("cached socketmap, 1 conn", "cached socketmap, 16 conns", "cached tcp_table, 16 conns",
                 "mixed with parent probes, 16 conns", "cold start: 50 domains, 50 clients",
                 "burst: 200 requests, 1 uncached domain", "cached, 1 conn, DURING a storm of 500 new domains (50 clients)",
                 "cached socketmap, 16 conns, 2 workers"):
        assert name in rows, result.stdout
    assert "/s" in rows["cached socketmap, 16 conns"][0] and "/s" in rows["cached socketmap, 16 conns"][1]
    # correctness figures the bench also measures: one fetch per domain, one for the burst
    assert rows["cold start: 50 domains, 50 clients"][0].endswith(", 50 fetches")
    assert rows["burst: 200 requests, 1 uncached domain"][0].startswith("1 fetch(es)")
