"""The daemon's resolver processes (mtasts_resolver/offload), with a real daemon, DNS and policy host.

Cold resolutions run in a child process.  What must hold: a domain is
resolved there and enforced; killing the child makes a NEW enforce domain
TEMP (our trouble is no downgrade: never NOTFOUND, nothing cached), cached
domains keep being answered from memory meanwhile, the child is started
again and the new domain then gets its policy; and the child never outlives
the daemon, however the daemon ends.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import pytest

from mtasts_resolver.offload.child import NICENESS
from tests.world import Route
from tests.world.daemon import DaemonProcess, world_config
from tests.world.fixtures import WORLD_ID
from tests.world.hostile import child_pids
from tests.world.netstrings import netstring, socketmap_call

DOMAINS = ("offload-a", "offload-b", "offload-c")


def policy(name: str) -> bytes:
    return f"version: STSv1\nmode: enforce\nmx: mx.{name}.test\nmax_age: 86400\n".encode()


def expected(name: str) -> bytes:
    return f"OK secure match=mx.{name}.test servername=hostname".encode()


def ask(daemon: DaemonProcess, name: str) -> bytes:
    return socketmap_call(daemon.socketmap_port, netstring(f"postfix {name}.test".encode()))


def logged(daemon: DaemonProcess, line: str, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while line not in daemon.log_tail(200) and time.monotonic() < deadline:
        time.sleep(0.05)
    return line in daemon.log_tail(200)


def gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def daemon(dns_world, policy_server, pki, tmp_path):
    base = list(dns_world.parent_records)
    records = []
    for name in DOMAINS:
        records += [f'_mta-sts.{name} 60 IN TXT "v=STSv1; id=1"', f"mta-sts.{name} 60 IN A 127.60.{WORLD_ID}.1"]
        policy_server.set(f"mta-sts.{name}.test", Route(body=policy(name)))
    dns_world.set_parent_records(base + records)
    proc = DaemonProcess(tmp_path, world_config(dns_world, pki))
    proc.start()
    yield proc
    proc.stop()
    dns_world.set_parent_records(base)


def test_a_killed_resolver_process_means_temp_then_it_is_back(daemon):
    assert ask(daemon, "offload-a") == expected("offload-a")        # resolved in a child
    killed = child_pids(daemon.proc.pid)
    assert len(killed) == 2                                          # daemon.resolver_processes' default
    for child in killed:
        os.kill(child, signal.SIGKILL)
    answer = ask(daemon, "offload-b")
    assert answer.startswith(b"TEMP "), answer                     # never NOTFOUND: a downgrade
    assert ask(daemon, "offload-a") == expected("offload-a")        # the cached domain: from memory
    assert daemon.wait_for("resolver process 0, 1 DOWN: new domains answered TEMP", 5), daemon.notifications
    for index in (0, 1):
        assert logged(daemon, f"resolver process {index} started again", 10), daemon.log_tail()
    deadline = time.monotonic() + 5
    while "DOWN" in daemon.notifications[-1] and time.monotonic() < deadline:
        daemon.wait_for("(collect what has arrived)", 0.2)
    assert "DOWN" not in daemon.notifications[-1], daemon.notifications    # STATUS: back
    assert ask(daemon, "offload-b") == expected("offload-b")        # nothing was cached from the TEMP
    again = child_pids(daemon.proc.pid)
    assert len(again) == 2 and not set(again) & set(killed)
    assert "ended" in daemon.log_tail(80)                           # said loudly, with the child's pid


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_resolver_process_never_outlives_the_daemon(daemon, how):
    assert ask(daemon, "offload-c") == expected("offload-c")
    resolvers = child_pids(daemon.proc.pid)
    daemon.stop(how)
    for child in resolvers:
        assert gone(child, 10), f"resolver process {child} still running after the daemon got {how!r}"


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_resolver_process_yields_the_cpu_to_the_event_loop(daemon):
    for child in child_pids(daemon.proc.pid):
        assert nice(child) == min(nice(daemon.proc.pid) + NICENESS, 19)
    assert "cannot renice" not in daemon.log_tail(200)


def test_out_of_file_descriptors_is_temp_never_notfound(daemon):
    """The resolver process cannot open one more socket: a new enforce domain is TEMP, and nothing is cached."""
    resolvers = child_pids(daemon.proc.pid)
    before = {child: resource.prlimit(child, resource.RLIMIT_NOFILE) for child in resolvers}
    for child in resolvers:   # no DNS socket, no fetch
        resource.prlimit(child, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{child}/fd")), before[child][1]))
    try:
        for _ in range(3):
            answer = ask(daemon, "offload-b")
            assert answer.startswith(b"TEMP "), answer
    finally:
        for child in resolvers:
            resource.prlimit(child, resource.RLIMIT_NOFILE, before[child])
    assert ask(daemon, "offload-b") == expected("offload-b")       # not remembered: resolved now
    assert "limit local resources reached" in daemon.log_tail(200)


def test_a_stuck_resolver_process_is_replaced(dns_world, policy_server, pki, tmp_path):
    """SIGSTOP: the call's deadline passes (TEMP), the stuck child is killed and started again."""
    proc = DaemonProcess(tmp_path, world_config(dns_world, pki, dns_timeout_s=0.5, http_timeout_s=0.5)
                         + "[dane]\ntimeout_s = 0.5\n")   # the call deadline: 0.5 s + 5 s
    proc.start()
    try:
        stuck = child_pids(proc.proc.pid)
        for child in stuck:
            os.kill(child, signal.SIGSTOP)
        started = time.monotonic()
        answer = ask(proc, "offload-stuck")
        assert answer.startswith(b"TEMP "), answer
        assert time.monotonic() - started < 10
        assert logged(proc, "is stuck", 5) and logged(proc, "started again", 10), proc.log_tail()
        now = child_pids(proc.proc.pid)
        assert len(now) == 2 and set(stuck) - set(now)     # the child of that domain was replaced
    finally:
        for child in set(stuck) & set(child_pids(proc.proc.pid)):
            os.kill(child, signal.SIGCONT)               # the other one: never asked, never judged
        proc.stop()


def test_sigterm_to_everyone_at_once_still_drains_through_the_child_pids(daemon):
    """systemd signals the whole unit: the children keep serving until the daemon closes their stdin."""
    resolvers = child_pids(daemon.proc.pid)
    for child in resolvers:
        os.kill(child, signal.SIGTERM)
    time.sleep(0.3)
    assert child_pids(daemon.proc.pid) == resolvers                  # ignored: still there
    assert ask(daemon, "offload-c") == expected("offload-c")        # and serving
    assert daemon.stop() == 0
    for child in resolvers:
        assert gone(child, 10)
    assert "Unhandled" not in daemon.log_tail(200) and "ReactorNotRunning" not in daemon.log_tail(200)


def test_a_resolver_process_that_cannot_start_stops_the_start_loudly(dns_world, pki, tmp_path):
    """No child, no resolution: the daemon must not answer READY and serve TEMP for ever; it exits 70 saying why."""
    site = tmp_path / "site"
    site.mkdir()
    # Python imports sitecustomize at start-up in every process on the path: only the child gives up.
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "if 'mtasts_resolver.offload.child' in sys.orig_argv:\n"
        "    raise SystemExit('resolver process sabotaged by the test')\n")
    proc = DaemonProcess(tmp_path / "daemon", world_config(dns_world, pki))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="not ready"):
        proc.start(extra_env={"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                             str(site)])})
    assert proc.proc.wait(timeout=10) == 70 and time.monotonic() - started < 15
    log = proc.log_tail(200)
    assert "resolver process sabotaged by the test" in log
    assert "cannot start the resolver processes: resolver process" in log and "ended at start-up" in log
    assert not any("READY=1" in n for n in proc.notifications)
