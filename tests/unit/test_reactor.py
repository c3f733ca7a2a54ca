"""The daemon's event loop takes bounded turns; its descriptor table is sized at start."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from mtasts_resolver.net.reactor import EVENTS_PER_TURN, bounded_selector

REPO = Path(__file__).resolve().parents[2]


def test_a_turn_reports_at_most_events_per_turn_and_the_rest_come_next():
    selector = bounded_selector()
    pairs = [socket.socketpair() for _ in range(3 * EVENTS_PER_TURN + 5)]
    try:
        for ours, theirs in pairs:
            selector.register(ours, 1, ours)   # EVENT_READ
            theirs.close()                     # every one readable at once: 200 clients hanging up together
        seen: set[int] = set()
        turns = 0
        while len(seen) < len(pairs):
            ready = selector.select(0)
            assert 0 < len(ready) <= EVENTS_PER_TURN
            for key, _ in ready:
                seen.add(key.fd)
                selector.unregister(key.fileobj)   # handled: connectionLost
            turns += 1
        assert turns == 4 and selector.select(0) == []
    finally:
        for ours, _ in pairs:
            ours.close()
        selector.close()


def test_a_turn_with_fewer_ready_reports_them_all():
    selector = bounded_selector()
    a, b = socket.socketpair()
    try:
        selector.register(a, 1)
        assert selector.select(0) == []
        b.send(b"x")
        assert [key.fileobj for key, _ in selector.select(1)] == [a]
    finally:
        a.close(), b.close(), selector.close()


def test_the_descriptor_table_is_grown_at_start_not_while_accepting():
    """The kernel's table size is /proc/self/status FDSize; in a fresh process it starts at 64."""
    script = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
from mtasts_resolver.app.listeners import presize_descriptor_table
def size():
    return int(next(l for l in open("/proc/self/status") if l.startswith("FDSize:")).split()[1])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
soft = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
wanted = min(3000, soft - 1)
before = size()
presize_descriptor_table(wanted)
after = size()
presize_descriptor_table(soft + 1)   # past the limit: left as it is, no error
print(wanted, before, after, size())
"""
    wanted, before, after, past_limit = map(int, subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split())
    assert before < wanted <= after == past_limit
