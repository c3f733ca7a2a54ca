"""Failing loud, with real processes and files: exit statuses, a bound on time, messages that name the problem.

Each start-up failure must end the process with its sysexits status within
``FAIL_BOUND_S`` (no half-bound process kept alive by a thread pool), with a
message naming the address, path, user or cache row, and no traceback.  A
reload either applies or refuses, and READY=1 comes back either way.  A stop
answers what is in flight and persists what it fetched before closing the
cache.  A damaged cache is never loaded silently, and ``salvage-cache``
copies what can be read.

Every test prints one ``TABLE|failure|status|seconds|message`` line (``-s``)
for the table in the issue's note.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtasts_resolver.policy.model import CachedPolicy
from mtasts_resolver.policy.sts import parse_policy
from mtasts_resolver.store.sqlite import SqliteStore
from tests.world import Route
from tests.world.addresses import POLICY_IP
from tests.world.daemon import REPO, DaemonProcess, free_port

FAIL_BOUND_S = 5.0      # "exit non-zero within a few seconds"
EX_NOINPUT, EX_UNAVAILABLE, EX_CANTCREAT, EX_IOERR, EX_CONFIG = 66, 69, 73, 74, 78
POLICY = b"version: STSv1\nmode: enforce\nmx: mx.%s\nmax_age: 604800\n"
DOMAINS = ["one.example", "two.example", "three.example"]


def table(failure: str, status: int | None, seconds: float, message: str) -> None:
    print(f"\nTABLE|{failure}|{status}|{seconds:.2f}|{message.strip()}")


@pytest.fixture()
def black_hole():
    """A nameserver that never answers: lookups stay in flight, no DNS world needed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def daemon_with(tmp_path: Path, black_hole: int, extra: str = "") -> DaemonProcess:
    return DaemonProcess(tmp_path, f"""
[dns]
nameservers = ["127.0.0.1"]
port = {black_hole}
timeout_s = 3
""" + extra)


def start_fails(daemon: DaemonProcess) -> tuple[int, float, str]:
    """Start ``daemon`` expecting it to exit before READY; (status, seconds to exit, what it logged)."""
    before = daemon.log_path.stat().st_size if daemon.log_path.exists() else 0
    started = time.monotonic()
    with pytest.raises(RuntimeError):
        daemon.start(timeout_s=FAIL_BOUND_S * 2)
    elapsed = time.monotonic() - started
    log = daemon.log_path.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in log, log
    assert not any("READY=1" in n for n in daemon.notifications)
    return daemon.proc.returncode, elapsed, log


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtasts_resolver", "-c", str(daemon.config_path), *args],
                          capture_output=True, text=True, timeout=30, cwd=REPO)


def cache_path(daemon: DaemonProcess) -> Path:
    return daemon.workdir / "state" / "cache.sqlite3"


def write_cache(daemon: DaemonProcess) -> Path:
    """A cache holding DOMAINS' policies, written by the product's own store (fetched now: all usable)."""
    path = cache_path(daemon)
    store = SqliteStore(path)
    store.save_policies(CachedPolicy(domain, "1", parse_policy(POLICY % domain.encode()), time.time())
                        for domain in DOMAINS)
    store.close()
    return path


def raw_update(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


# -- start-up: all or nothing ---------------------------------------------------


def test_port_in_use_exits_69_naming_the_address(tmp_path, black_hole):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    daemon = daemon_with(tmp_path, black_hole, f'[[listen]]\nprotocol = "tcp_table"\ntcp = "127.0.0.1:{port}"\n')
    try:
        status, elapsed, log = start_fails(daemon)
    finally:
        blocker.close()
    assert status == EX_UNAVAILABLE and elapsed < FAIL_BOUND_S
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in log
    for bound in (daemon.socketmap_port, daemon.tcp_table_port):   # nothing stays half-bound
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", bound), timeout=1)
    table("listener port in use", status, elapsed, f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_unknown_socket_group_fails_check_config_and_start_with_78(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole,
                         f'[[listen]]\nunix = "{tmp_path / "grp.sock"}"\ngroup = "no-such-group-x"\n')
    checked = cli(daemon, "--check-config")
    assert checked.returncode == EX_CONFIG
    assert "listen[3].group: no such group 'no-such-group-x'" in checked.stderr
    assert "Traceback" not in checked.stderr
    status, elapsed, log = start_fails(daemon)
    assert status == EX_CONFIG and elapsed < FAIL_BOUND_S
    assert "no such group 'no-such-group-x'" in log
    table("unknown socket group (--check-config and start)", status, elapsed, checked.stderr)


def test_non_utf8_config_is_a_clean_78(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    daemon.config_path.write_bytes(daemon.config_path.read_bytes() + b'\n# caf\xe9\n')
    checked = cli(daemon, "--check-config")
    assert checked.returncode == EX_CONFIG
    assert "is not UTF-8: byte 0xe9" in checked.stderr and "Traceback" not in checked.stderr
    started = time.monotonic()
    run = cli(daemon)
    elapsed = time.monotonic() - started
    assert run.returncode == EX_CONFIG and "not UTF-8" in run.stderr and "Traceback" not in run.stderr
    table("non-UTF-8 byte in the config (--check-config and start)", run.returncode, elapsed, checked.stderr)


def test_state_dir_that_cannot_be_created_exits_73(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    (tmp_path / "state").write_text("a file where the state directory should be")
    checked = cli(daemon, "--check-config")
    assert checked.returncode == EX_CANTCREAT and f"{tmp_path / 'state'} is not a directory" in checked.stderr
    status, elapsed, log = start_fails(daemon)
    assert status == EX_CANTCREAT and elapsed < FAIL_BOUND_S
    assert f"cannot create the policy cache {tmp_path / 'state' / 'cache.sqlite3'}" in log
    table("state dir is a file (cannot create the cache)", status, elapsed,
          log.strip().splitlines()[-1])


def test_a_feed_that_cannot_start_stops_everything_already_started(tmp_path, black_hole):
    """The collector cannot bind (a regular file holds its path): the spool's thread must not keep us alive."""
    taken = tmp_path / "collector.sock"
    taken.write_text("not a socket: left alone")
    daemon = daemon_with(tmp_path, black_hole, f'[tlsrpt]\ncollector_socket = "{taken}"\n')
    status, elapsed, log = start_fails(daemon)
    assert status == EX_UNAVAILABLE and elapsed < FAIL_BOUND_S, log
    assert f"cannot start DatagramCollector on {taken}: [Errno 98] Address already in use" in log
    assert taken.read_text() == "not a socket: left alone"
    table("TLS-RPT collector path taken by a file", status, elapsed,
          next(line for line in log.splitlines() if "cannot start" in line))


# -- the persistent cache's integrity --------------------------------------------

DAMAGE = {
    "non-UTF-8 byte in a row": (
        lambda path: raw_update(path, "UPDATE sts_policy SET policy = CAST(? AS TEXT) WHERE domain = ?",
                                b"version: STSv1\nmode: enforce\nmx: mx.\xff\nmax_age: 604800", "two.example"),
        "two.example cannot be loaded: not UTF-8 text"),
    "non-numeric fetched_at": (
        lambda path: raw_update(path, "UPDATE sts_policy SET fetched_at = 'yesterday' WHERE domain = ?",
                                "two.example"),
        "two.example cannot be loaded: fetched_at is not a number: 'yesterday'"),
    "changed byte in a stored policy": (
        lambda path: path.write_bytes(path.read_bytes().replace(b"mode: enforce\nmx: mx.two",
                                                                b"mode: enforcX\nmx: mx.two")),
        "two.example cannot be loaded: the row does not match its checksum"),   # checked before parsing
    "changed byte that still parses": (
        lambda path: path.write_bytes(path.read_bytes().replace(b"mx: mx.two.example", b"mx: mx.twp.example")),
        "two.example cannot be loaded: the row does not match its checksum"),
    "file truncated to 0 bytes": (
        lambda path: path.write_bytes(b""),
        "file cannot be loaded: it is empty (0 bytes)"),
    "file truncated to its first page": (
        lambda path: path.write_bytes(path.read_bytes()[:4096]),
        "file cannot be loaded:"),
    "file overwritten with junk": (
        lambda path: path.write_bytes(b"this is not a database" * 400),
        "file cannot be loaded: file is not a database"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_cache_refuses_to_start_then_salvage_keeps_what_is_readable(tmp_path, black_hole, damage):
    break_it, expected = DAMAGE[damage]
    daemon = daemon_with(tmp_path, black_hole)
    path = write_cache(daemon)
    break_it(path)
    status, elapsed, log = start_fails(daemon)
    assert status == EX_IOERR and elapsed < FAIL_BOUND_S, log
    assert expected in log, log
    assert "run `mtasts-resolver salvage-cache`" in log
    table(f"cache: {damage}", status, elapsed, next(line for line in log.splitlines() if expected in line))

    salvaged = cli(daemon, "salvage-cache")
    assert salvaged.returncode == 0, salvaged.stderr
    kept = list(path.parent.glob("cache.sqlite3.damaged-*"))
    assert [p.name for p in kept if not p.name.endswith(("-wal", "-shm"))], kept   # the damaged file is kept aside
    readable = 0 if damage.startswith("file") else 2
    assert f"{readable} policies copied" in salvaged.stdout, salvaged.stdout
    if readable:
        assert "NOT copied: two.example" in salvaged.stdout
    daemon.start()
    daemon.stop()
    assert f"loaded {readable} cached policies" in daemon.log_path.read_text()


def test_salvage_without_a_cache_file_exits_66(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    result = cli(daemon, "salvage-cache")
    assert result.returncode == EX_NOINPUT and "no policy cache at" in result.stderr


def test_worker_pool_exits_with_the_workers_status(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    text = daemon.config_path.read_text().replace("[daemon]\n", "[daemon]\nworkers = 2\n", 1)
    daemon.config_path.write_text(text)
    write_cache(daemon).write_bytes(b"")
    status, elapsed, log = start_fails(daemon)
    assert status == EX_IOERR and elapsed < FAIL_BOUND_S * 2, log
    assert "is empty (0 bytes)" in log
    table("cache truncated, 2 workers", status, elapsed, "worker ... exited with status 74; stopping the others")


def test_report_with_a_damaged_spool_exits_74(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    write_cache(daemon).write_bytes(b"junk" * 1000)
    result = cli(daemon, "report", "--status")
    assert result.returncode == EX_IOERR and "is damaged" in result.stderr
    table("report --status on a damaged cache", result.returncode, 0.0, result.stderr.strip().splitlines()[-1])


def test_report_not_configured_at_all_exits_0(tmp_path, black_hole):
    """The packaged default: the daily timer must not fail until an admin sets up [tlsrpt]."""
    daemon = daemon_with(tmp_path, black_hole)
    result = cli(daemon, "report")
    assert result.returncode == 0 and "TLS-RPT reporting is not configured" in result.stdout, result


def test_report_with_settings_only_partly_there_exits_78(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole, '[tlsrpt]\norganization_name = "Example"\n')
    result = cli(daemon, "report")
    assert result.returncode == EX_CONFIG and "[tlsrpt] needs contact_info" in result.stderr, result


# -- reload: apply or refuse, READY=1 either way ---------------------------------


def sighup(daemon: DaemonProcess) -> str:
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for("READY=1", 10), daemon.notifications
    return next(n for n in daemon.notifications if "READY=1" in n)


def test_reload_with_non_utf8_is_refused_and_ready_comes_back(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    daemon.start()
    try:
        daemon.config_path.write_bytes(daemon.config_path.read_bytes() + b"\n# \xff\n")
        ready = sighup(daemon)
        assert "last reload refused" in ready and "not UTF-8" in ready
        assert "reload refused, still running the previous configuration" in daemon.log_tail()
        assert daemon.postmap(".example.com") == (1, "")
    finally:
        assert daemon.stop() == 0
    table("SIGHUP: non-UTF-8 config", None, 0.0, ready.split("STATUS=")[1])


def test_reload_with_unknown_owner_is_refused(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    daemon.start()
    try:
        with open(daemon.config_path, "a") as config:
            config.write(f'\n[[listen]]\nunix = "{tmp_path / "new.sock"}"\nowner = "no-such-user-x"\n')
        ready = sighup(daemon)
        assert "last reload refused" in ready and "no such user 'no-such-user-x'" in ready
        assert not (tmp_path / "new.sock").exists()
    finally:
        assert daemon.stop() == 0
    table("SIGHUP: unknown socket owner", None, 0.0, ready.split("STATUS=")[1])


def test_reload_leaves_out_a_listener_that_cannot_bind(tmp_path, black_hole):
    daemon = daemon_with(tmp_path, black_hole)
    daemon.start()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port, fresh = blocker.getsockname()[1], free_port()
    try:
        with open(daemon.config_path, "a") as config:
            config.write(f'\n[[listen]]\nprotocol = "tcp_table"\ntcp = "127.0.0.1:{port}"\n'
                         f'\n[[listen]]\nprotocol = "readsocket"\ntcp = "127.0.0.1:{fresh}"\n')
        ready = sighup(daemon)
        assert f"left out (cannot listen): 127.0.0.1:{port}" in ready
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use: this listener is left out" in \
            daemon.log_tail()
        with socket.create_connection(("127.0.0.1", fresh), timeout=5) as sock:   # the other new one is served
            sock.sendall(b".example.com\n")
            assert sock.recv(100) == b"NOTFOUND\n"
        assert daemon.postmap(".example.com") == (1, "")
    finally:
        blocker.close()
        assert daemon.stop() == 0
    table("SIGHUP: new listener's port in use", None, 0.0, ready.split("STATUS=")[1])


# -- stop: drain, persist, then close --------------------------------------------


def test_sigterm_exits_0_within_drain_timeout_with_a_lookup_stuck(tmp_path, black_hole):
    daemon = DaemonProcess(tmp_path, f"""
[dns]
nameservers = ["127.0.0.1"]
port = {black_hole}
timeout_s = 30
""")
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        "[daemon]\n", "[daemon]\ndrain_timeout_s = 2\n", 1))
    daemon.start()
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=10) as sock:
        sock.sendall(b"25:postfix stuck.example.com,")
        time.sleep(0.5)
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        status = daemon.proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    assert status == 0 and elapsed < 2 + 2, elapsed
    assert "connections still busy after 2" in daemon.log_tail()
    table("SIGTERM, lookup stuck past drain_timeout_s = 2", status, elapsed, "1 connections still busy after 2 s")


@pytest.fixture()
def drain_world(dns_world, policy_server):
    base = list(dns_world.parent_records)
    dns_world.set_parent_records(base + ['_mta-sts.drain 60 IN TXT "v=STSv1; id=1"',
                                         f"mta-sts.drain 60 IN A {POLICY_IP}"])
    policy_server.set("mta-sts.drain.test", Route(body=POLICY % b"drain.test", delay_s=2.0))
    yield dns_world
    dns_world.set_parent_records(base)


def test_sigterm_answers_in_flight_and_persists_what_it_fetched(tmp_path, drain_world, pki):
    resolver_ip, resolver_port = drain_world.resolver()
    daemon = DaemonProcess(tmp_path, f"""
[dns]
nameservers = ["{resolver_ip}"]
port = {resolver_port}
[mta_sts]
ca_file = "{pki.ca_file}"
http_timeout_s = 10
""")
    daemon.start()
    with socket.create_connection(("127.0.0.1", daemon.socketmap_port), timeout=20) as sock:
        sock.sendall(b"18:postfix drain.test,")
        time.sleep(1.0)                       # the policy fetch is now waiting on the slow host
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        reply = sock.recv(4096)
        status = daemon.proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    assert b"secure match=mx.drain.test" in reply, reply
    assert status == 0 and elapsed < 20
    db = sqlite3.connect(cache_path(daemon))
    rows = db.execute("SELECT domain FROM sts_policy").fetchall()
    db.close()
    assert rows == [("drain.test",)], daemon.log_tail()
    assert "closed database" not in daemon.log_tail()
    table("SIGTERM with a policy fetch in flight", status, elapsed, "answered; drain.test persisted; then closed")


# -- failed writes are retried ----------------------------------------------------


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_policy_written_while_the_disk_is_full_lands_once_space_returns(tmp_path, tiny_disk, drain_world, pki):
    resolver_ip, resolver_port = drain_world.resolver()
    daemon = DaemonProcess(tmp_path, f"""
[dns]
nameservers = ["{resolver_ip}"]
port = {resolver_port}
[mta_sts]
ca_file = "{pki.ca_file}"
[cache]
path = "{tiny_disk / 'cache.sqlite3'}"
""")
    daemon.start()
    filler = tiny_disk / "filler"
    with open(filler, "wb", buffering=0) as fill:   # unbuffered: close() has nothing left to write on a full disk
        try:
            while True:
                fill.write(b"\0" * 65536)
                fill.flush()
        except OSError:
            pass
    try:
        assert daemon.postmap("drain.test") == (0, "secure match=mx.drain.test servername=hostname")
        deadline = time.monotonic() + 10
        while "policies NOT persisted yet (drain.test)" not in daemon.log_tail(200) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "policies NOT persisted yet (drain.test)" in daemon.log_tail(200)
        assert "critical:" in daemon.log_tail(200)
    finally:
        filler.unlink()
    deadline = time.monotonic() + 15
    while "written to the cache after earlier failures" not in daemon.log_tail(200) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "1 policies written to the cache after earlier failures" in daemon.log_tail(200)
    assert daemon.stop() == 0
    db = sqlite3.connect(tiny_disk / "cache.sqlite3")
    assert db.execute("SELECT domain FROM sts_policy").fetchall() == [("drain.test",)]
    db.close()
    table("disk full while a policy is fetched", 0, 0.0, "critical: policy cache write failed: ... retrying")
