"""Following a growing log file (or the journal) and feeding its lines to a parser.

The read position goes into the spool in the same transaction as the
outcomes read up to it, so after a crash the follower resumes exactly where
the committed outcomes end: nothing counted twice, nothing skipped (only
sessions whose lines straddle the crash are lost, since the correlation
state is in memory).  Rotation: the old file is read to its end, then the
new one from its start.

Lines wait ``settle_s`` after they are read before they are counted.  A
session is reported under the policy in force that the resolution for it
wrote to the store, and that write reaches the store with the worker's next
spool commit, up to ``spool_flush_interval_s`` (plus the commit) after the
answer; the MTA can log the session's end a few milliseconds after the
answer.  Counted at once, such a line found no policy (a DANE domain's
session was ``no-policy-found``); ``settle_s`` is the flush interval plus
:data:`COMMIT_MARGIN_S`.  Lines still waiting when the daemon stops are not
counted: the committed cursor is before them, so the next start reads them
again.
"""

from __future__ import annotations

import datetime
import json
import os
from collections import deque
from collections.abc import Callable
from typing import IO

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from mtasts_resolver.tlsrpt.model import Outcome
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

LineParser = Callable[[str, float], list[Outcome]]
MAX_READ_BYTES = 4 * 1024 * 1024  # per poll, so a huge backlog does not block the reactor for long
COMMIT_MARGIN_S = 1.0             # what a spool commit may take on a busy disk, on top of the flush interval


class SettlingLines:
    """Read lines, counted ``settle_s`` after they were read, in order, with the cursor just past them."""

    def __init__(self, reactor: IReactorTime, spool: OutcomeSpool, feed: str, parse: LineParser,
                 settle_s: float) -> None:
        self._reactor, self._spool, self._feed, self._parse, self._settle_s = reactor, spool, feed, parse, settle_s
        self._waiting: deque[tuple[float, list[str], str]] = deque()   # (read at, lines, cursor after them)
        self._timer: IDelayedCall | None = None

    def put(self, lines: list[str], cursor: str) -> None:
        self._waiting.append((self._reactor.seconds(), lines, cursor))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None and self._waiting:
            due = self._waiting[0][0] + self._settle_s - self._reactor.seconds()
            self._timer = self._reactor.callLater(max(due, 0.0), self._count)

    def _count(self) -> None:
        self._timer = None
        now = self._reactor.seconds()
        while self._waiting and self._waiting[0][0] + self._settle_s <= now:
            read_at, lines, cursor = self._waiting.popleft()
            self._spool.add([outcome for line in lines for outcome in self._parse(line, read_at)],
                            (self._feed, cursor))
        self._schedule()

    def stop(self) -> None:
        """Forget what waits: the committed cursor is before it, so it is read again at the next start."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._waiting.clear()


class FileFollower(TimerService):
    """Polls ``path`` every ``interval_s``; the cursor is ``inode:offset`` under ``feed``."""

    log = Logger()

    def __init__(self, reactor: IReactorTime, spool: OutcomeSpool, feed: str, path: str, parse: LineParser,
                 interval_s: float, cursor: str | None, settle_s: float) -> None:
        super().__init__(interval_s, self.poll)
        self.clock = reactor
        self._lines = SettlingLines(reactor, spool, feed, parse, settle_s)
        self._path = path
        self._handle: IO[bytes] | None = None
        self._inode = 0
        self._start = _parse_cursor(cursor)

    def poll(self) -> None:
        if self._handle is None and not self._open():
            return
        assert self._handle is not None
        self._read()
        try:
            current = os.stat(self._path).st_ino
        except FileNotFoundError:
            return
        if current != self._inode:  # rotated: the old file is read to its end, go on with the new one
            self._handle.close()
            self._handle = None
            self._start = (current, 0)
            if self._open():
                self._read()

    def _open(self) -> bool:
        try:
            handle = open(self._path, "rb")
        except OSError:
            return False
        self._inode = os.fstat(handle.fileno()).st_ino
        inode, offset = self._start
        if inode == self._inode and offset <= os.fstat(handle.fileno()).st_size:
            handle.seek(offset)
        elif inode != 0:
            self.log.info("{path} is a new file since the last run: reading it from the start", path=self._path)
        self._handle = handle
        return True

    def _read(self) -> None:
        assert self._handle is not None
        start = self._handle.tell()
        data = self._handle.read(MAX_READ_BYTES)
        end = data.rfind(b"\n") + 1
        self._handle.seek(start + end)  # a partial last line is read again next time
        if not end:
            return
        self._lines.put(data[:end].decode("utf-8", "replace").splitlines(), f"{self._inode}:{start + end}")

    def stopService(self):
        result = super().stopService()
        self._lines.stop()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        return result


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    inode, _, offset = (cursor or "").partition(":")
    return (int(inode), int(offset)) if inode.isdigit() and offset.isdigit() else (0, 0)


def journal_line(entry: dict) -> str | None:
    """A ``journalctl -o json`` entry as the syslog line Postfix would have written, dated (RFC 3339, UTC)
    by the entry's ``__REALTIME_TIMESTAMP`` (microseconds) when it has one."""
    identifier, pid, message = entry.get("SYSLOG_IDENTIFIER"), entry.get("SYSLOG_PID") or entry.get("_PID"), \
        entry.get("MESSAGE")
    if not isinstance(identifier, str) or not isinstance(message, str):
        return None
    line = f"{identifier}[{pid}]: {message}"
    realtime = entry.get("__REALTIME_TIMESTAMP")
    if isinstance(realtime, str) and realtime.isascii() and realtime.isdigit() and len(realtime) <= 20:
        try:
            when = datetime.datetime.fromtimestamp(int(realtime) / 1e6, datetime.timezone.utc)
        except (ValueError, OverflowError, OSError):
            pass
        else:
            host = entry.get("_HOSTNAME")
            line = f"{when.isoformat()} {host if isinstance(host, str) and host.isprintable() else '-'} {line}"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return None  # a lone surrogate from a JSON escape: it could never be stored
    return line


class JournalFollower(ProcessProtocol):
    """``journalctl --follow -o json SYSLOG_FACILITY=2`` (mail), resuming after the committed cursor."""

    log = Logger()

    def __init__(self, reactor: IReactorTime, spool: OutcomeSpool, feed: str, parse: LineParser,
                 settle_s: float) -> None:
        self._lines = SettlingLines(reactor, spool, feed, parse, settle_s)
        self._buffer = b""

    @staticmethod
    def argv(cursor: str | None) -> list[str]:
        argv = ["journalctl", "--follow", "--output=json", "--no-tail" if cursor else "--lines=0"]
        if cursor:
            argv.append(f"--after-cursor={cursor}")
        return [*argv, "SYSLOG_FACILITY=2"]

    def outReceived(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        found_lines: list[str] = []
        cursor = None
        for raw in lines:
            try:
                entry = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if not isinstance(entry, dict):
                continue
            line = journal_line(entry)
            if line is not None:
                found_lines.append(line)
            found = entry.get("__CURSOR")
            cursor = found if isinstance(found, str) and found.isascii() else cursor
        if cursor is not None:
            self._lines.put(found_lines, cursor)

    def stop(self) -> None:
        self._lines.stop()

    def processEnded(self, reason) -> None:
        self.log.error("journalctl stopped: {reason}; Postfix log lines are no longer counted",
                       reason=reason.getErrorMessage())
