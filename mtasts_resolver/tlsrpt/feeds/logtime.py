"""When a log line says it was written: sessions are dated by when they happened, not when read.

A backlog read after midnight (the daemon was down, the journal replays)
must count on the day its sessions happened.  Recognised at the start of
a line, else the time it was read is used:

- RFC 3339 (rsyslog's default on Debian 12, and :func:`journal_line`):
  ``2026-03-01T10:00:00.123456+00:00 host postfix/smtp[1]: ...``;
- RFC 3164 syslog and Postfix's own ``maillog_file``: ``Mar  1 10:00:00 host ...``,
  local time without a year: the year is the one that puts the line at most
  a day after the time it is read (a December line read in January is last
  year's);
- Exim's main log: ``2026-03-01 10:00:00`` (local time), optionally with
  ``.123`` (``+millisec``) and a ``+0100`` offset (``log_timezone``).

Pure: the local zone is a parameter (None: the system's, for the local
times of syslog and Exim).
"""

from __future__ import annotations

import datetime
import re

#: A line dated more than this after it was read has a bad year guess or a bad clock: use the read time.
MAX_FUTURE_S = 86400.0

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?(Z|[+-]\d\d:?\d\d)?\s")
_EXIM = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d{1,6})?(?: ([+-]\d{4}))? ")
_RFC3164 = re.compile(r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
_MONTHS = {name: n for n, name in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                                             "Oct", "Nov", "Dec"), start=1)}


def line_time(line: str, read_at: float, local: datetime.tzinfo | None = None) -> float:
    """Seconds since the epoch at which ``line`` was written, or ``read_at`` when it does not say."""
    try:
        at = _line_time(line, read_at, local)
    except (ValueError, OverflowError, OSError):   # 2026-02-31, year 9999 + offset, mktime limits
        return read_at
    return read_at if at is None or at > read_at + MAX_FUTURE_S else at


def _line_time(line: str, read_at: float, local: datetime.tzinfo | None) -> float | None:
    if (found := _RFC3339.match(line)) is not None:
        return _stamp(found, _offset(found[8]) if found[8] else None, local)
    if (found := _EXIM.match(line)) is not None:
        return _stamp(found, _offset(found[8]) if found[8] else None, local)
    if (found := _RFC3164.match(line)) is not None:
        return _syslog(found, read_at, local)
    return None


def _stamp(found: re.Match, zone: datetime.tzinfo | None, local: datetime.tzinfo | None) -> float:
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    fraction = float(found[7]) if found[7] else 0.0
    when = datetime.datetime(year, month, day, hour, minute, second, tzinfo=zone or local)
    return when.timestamp() + fraction   # a naive datetime's timestamp() is the system's local time


def _syslog(found: re.Match, read_at: float, local: datetime.tzinfo | None) -> float | None:
    month, day = _MONTHS[found[1]], int(found[2])
    hour, minute, second = int(found[3]), int(found[4]), int(found[5])
    year = datetime.datetime.fromtimestamp(read_at, local).year
    for candidate in (year + 1, year, year - 1):   # the latest year that is not in the future
        try:
            at = datetime.datetime(candidate, month, day, hour, minute, second, tzinfo=local).timestamp()
        except ValueError:   # Feb 29 of a year that has none
            continue
        if at <= read_at + MAX_FUTURE_S:
            return at
    return None


def _offset(text: str) -> datetime.tzinfo:
    if text == "Z":
        return datetime.timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return datetime.timezone(sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
