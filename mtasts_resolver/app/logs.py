"""Log output: Twisted's logger to stderr (journald adds time and unit), filtered by level."""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


def _line(event: dict) -> None:
    text = formatEvent(event)
    if "log_failure" in event:
        text = f"{text}\n{event['log_failure'].getTraceback()}"
    sys.stderr.write(f"{event['log_level'].name}: {text}\n")
    sys.stderr.flush()


# One predicate for the process, so a reload (SIGHUP) can change the level.
_PREDICATE = LogLevelFilterPredicate()


def start_logging(level: str) -> None:
    set_level(level)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(_line, [_PREDICATE])], redirectStandardIO=False)


def set_level(level: str) -> None:
    _PREDICATE.setLogLevelForNamespace(None, _LEVELS[level])
