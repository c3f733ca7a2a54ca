"""systemd supervision: READY, RELOADING, STATUS, WATCHDOG and STOPPING over sd_notify.

The watchdog is pinged from a reactor timer, so a wedged reactor (the thing
worth restarting for) stops the pings and systemd restarts us.  STATUS= is
what ``systemctl status`` shows an admin: counts, whether DANE is on, and the
outcome of the last reload.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import sdnotify
from twisted.application.internet import TimerService

from mtasts_resolver.net.dnssec_probe import ValidationProbe


def dane_status(dane_enabled: bool, probe: ValidationProbe | None) -> str:
    """DANE's state for the STATUS= line."""
    if not dane_enabled:
        return "DANE off (dane.enabled = false)"
    if probe is None or probe.validating:
        return "DANE on"
    return f"DANE DISABLED: {probe.status}"


def notifier() -> sdnotify.SystemdNotifier:
    """sdnotify's notifier on a non-blocking socket: a message systemd cannot take is dropped, not waited for.

    sdnotify's socket blocks, so a notify socket whose buffer is full (a
    supervisor that stopped reading) held the event loop in ``sendall`` for
    good: no lookup answered, and no watchdog ping either.  A dropped
    STATUS or WATCHDOG is the lesser harm (sdnotify already drops what
    fails: no NOTIFY_SOCKET, a supervisor gone).
    """
    notify = sdnotify.SystemdNotifier()
    if notify.socket is not None:
        notify.socket.setblocking(False)
    return notify


class Supervisor:
    """Tells systemd how the daemon is doing; ``counts()`` gives the live part of STATUS=."""

    def __init__(self, reactor, counts: Callable[[], str], dane_enabled: bool,
                 probe: ValidationProbe | None) -> None:
        self._notifier = notifier()
        self._reactor = reactor
        self._counts = counts
        self._dane_enabled = dane_enabled
        self._probe = probe
        self._watchdog: TimerService | None = None
        self._note = ""

    def ready(self) -> None:
        self._notifier.notify(f"READY=1\nSTATUS={self.status()}")
        if self._probe is not None:  # DANE switched off or back on: show it at once
            self._probe.subscribe(lambda _: self.changed())
        interval_s = watchdog_interval_s(os.environ)
        if interval_s:
            self._watchdog = TimerService(interval_s, self._ping)
            self._watchdog.clock = self._reactor
            self._watchdog.startService()

    def reloading(self) -> None:
        self._notifier.notify("RELOADING=1\nSTATUS=reloading the configuration")

    def reloaded(self, note: str = "") -> None:
        """Back to READY after a reload, applied or refused; ``note`` says which and stays in STATUS."""
        self._note = note
        self._notifier.notify(f"READY=1\nSTATUS={self.status()}")

    def changed(self) -> None:
        """Something STATUS shows changed (DANE on or off, a resolver process down or back): show it now."""
        self._notifier.notify(f"STATUS={self.status()}")

    def _ping(self) -> None:
        self._notifier.notify(f"WATCHDOG=1\nSTATUS={self.status()}")

    def status(self) -> str:
        status = f"{self._counts()}; {dane_status(self._dane_enabled, self._probe)}"
        return f"{status}; {self._note}" if self._note else status

    def stopping(self, connections: int) -> None:
        if self._watchdog is not None:
            self._watchdog.stopService()
        self._notifier.notify(f"STOPPING=1\nSTATUS=stopping, {connections} connections finishing")


def watchdog_interval_s(environ: dict[str, str] | os._Environ) -> float:
    """Half of systemd's WatchdogSec= (sd_watchdog_enabled(3) advises pinging at half), 0 when off.

    WATCHDOG_PID names the process meant when set: a child that inherited
    the environment must not ping for its parent.
    """
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return 0.0
    usec = environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() else 0.0
