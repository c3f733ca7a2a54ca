"""Run the real daemon as a subprocess for end-to-end tests.

Readiness is taken from a real sd_notify datagram socket (NOTIFY_SOCKET), so
every test that starts the daemon also checks that READY=1 comes only once
it is listening.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.world.postfix import postmap

REPO = Path(__file__).resolve().parents[2]
#: The environment of one-shot CLI runs: this checkout's package, and no inherited configuration.
CLI_ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def cli_command(*args: str) -> list[str]:
    """``python -m mtasts_resolver ARGS``: this checkout's code, with the interpreter running the tests."""
    return [sys.executable, "-m", "mtasts_resolver", *args]


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one CLI command (``-c FILE query DOMAIN``, ``--check-config``, ``report``) to its end."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout_s,
                          cwd=REPO, env=CLI_ENV, stdin=subprocess.DEVNULL)


def start_cli(*args: str) -> subprocess.Popen[bytes]:
    """Start one CLI command, its stdout and stderr on one pipe, for tests that stop it midway."""
    return subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=REPO, env=CLI_ENV, stdin=subprocess.DEVNULL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class DaemonProcess:
    """One mtasts-resolver process with its own config, state dir and notify socket."""

    def __init__(self, workdir: Path, config_body: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socketmap_port = free_port()
        self.tcp_table_port = free_port()
        self.unix_path = workdir / "socketmap.sock"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(
            f"""
[daemon]
log_level = "debug"
state_dir = "{workdir / 'state'}"

[[listen]]
protocol = "socketmap"
tcp = "127.0.0.1:{self.socketmap_port}"

[[listen]]
protocol = "tcp_table"
tcp = "127.0.0.1:{self.tcp_table_port}"

[[listen]]
protocol = "socketmap"
unix = "{self.unix_path}"
mode = "0600"
""" + config_body)
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.notifications: list[str] = []
        self._notify: socket.socket | None = None
        # Run the daemon through this (e.g. into its own network namespace); it must exec the command.
        self.command_prefix: list[str] = []

    def start(self, timeout_s: float = 15.0, extra_env: dict[str, str] | None = None) -> None:
        notify_path = self.workdir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), PYTHONPATH=str(REPO))
        env.pop("WATCHDOG_USEC", None)
        env.update(extra_env or {})
        self.notifications = []
        self.proc = subprocess.Popen(
            [*self.command_prefix, *cli_command("-c", str(self.config_path))],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"), env=env, cwd=self.workdir,
        )
        if not self.wait_for("READY=1", timeout_s):
            self.stop()
            raise RuntimeError(f"daemon not ready in {timeout_s}s:\n{self.log_tail()}")

    def wait_for(self, message: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(message in n for n in self.notifications):
                return True
            if self.proc is not None and self.proc.poll() is not None and message == "READY=1":
                return False
            self._notify.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                self.notifications.append(self._notify.recv(4096).decode())
            except socket.timeout:
                pass
        return any(message in n for n in self.notifications)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- clients --------------------------------------------------------------

    def socketmap_map(self, name: str = "postfix") -> str:
        return f"socketmap:inet:127.0.0.1:{self.socketmap_port}:{name}"

    def tcp_map(self) -> str:
        return f"tcp:127.0.0.1:{self.tcp_table_port}"

    def postmap(self, key: str, table: str | None = None) -> tuple[int, str]:
        """``postmap -q KEY TABLE``: exit 0 and the value when found, 1 when not found."""
        return postmap(key, table or self.socketmap_map())


def world_config(dns_world, pki, *, dns_timeout_s: float = 2, **mta_sts: float | int | str) -> str:
    """The ``[dns]`` and ``[mta_sts]`` tables that point a daemon at the test world.

    Its validating resolver and the test CA; ``mta_sts`` adds keys to that
    table (a TOML table may be written only once, so they cannot follow).
    """
    resolver_ip, resolver_port = dns_world.resolver()
    lines = ["[dns]", f'nameservers = ["{resolver_ip}"]', f"port = {resolver_port}", f"timeout_s = {dns_timeout_s}",
             "", "[mta_sts]", f'ca_file = "{pki.ca_file}"']
    lines += [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}" for key, value in mta_sts.items()]
    return "\n".join(lines) + "\n"
