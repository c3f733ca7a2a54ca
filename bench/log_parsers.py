"""Stranger-input parsers on long adversarial lines: time at 8 KiB and at 64 KiB (linear: about 8x, not 64x).

The lines are the shapes that made the parsers quadratic before (a pattern
rescanning a long run at each position): repeated ``status=x (`` for the
Postfix log, repeated `` H=a [`` for Exim's main log, runs of blanks and
commas in ``_smtp._tls`` records, repeated ``event=`` in an Exim event.
Best of ``--repeat`` runs per line, in milliseconds.
Run from the repository: python3 bench/log_parsers.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtasts_resolver.tlsrpt.feeds.exim_events import EventError, EximLogCorrelator, parse_event  # noqa: E402
from mtasts_resolver.tlsrpt.feeds.postfix_log import PostfixLogCorrelator  # noqa: E402
from mtasts_resolver.tlsrpt.model import PolicyType, ReportPolicy  # noqa: E402
from mtasts_resolver.tlsrpt.report.record import parse_tlsrpt_records  # noqa: E402

SIZES = (8 * 1024, 64 * 1024)


def no_policy(domain: str) -> ReportPolicy:
    return ReportPolicy(PolicyType.NO_POLICY_FOUND, domain)


def postfix(line: str) -> None:
    PostfixLogCorrelator(no_policy).feed(line, 0.0)


def exim(line: str) -> None:
    EximLogCorrelator(no_policy).feed(line, 0.0)


def record(text: str) -> None:
    parse_tlsrpt_records([text])


def event(line: str) -> None:
    try:
        parse_event(line)
    except EventError:
        pass


#: (parser name, what the line is, its builder for a size, the parser)
CASES: list[tuple[str, str, Callable[[int], str], Callable[[str], None]]] = [
    ("postfix log", "status=x ( repeated",
     lambda n: "postfix/smtp[1]: Q: to=<a@b.c>, relay=h[1.2.3.4]:25, " + "status=x (" * (n // 10), postfix),
    ("postfix log", "verification failed for a[ repeated",
     lambda n: "postfix/smtp[1]: " + "certificate verification failed for a[" * (n // 39), postfix),
    ("postfix log", "a long to=<...",
     lambda n: "postfix/smtp[1]: Q: to=<" + "a" * n, postfix),
    ("exim log", " H=a [ repeated", lambda n: "1rAbCd-000123-AB => a@b.c" + " H=a [" * (n // 6), exim),
    ("exim log", "queue ids repeated", lambda n: "1rAbCd-000123-AB " * (n // 17), exim),
    ("_smtp._tls record", "blanks", lambda n: "v=TLSRPTv1;" + " " * n + "x", record),
    ("_smtp._tls record", "', ' repeated", lambda n: "v=TLSRPTv1; rua=" + ", " * (n // 2), record),
    ("exim event", "event= repeated", lambda n: "tlsrpt-v1 " + "event= " * (n // 7) + " data=x", event),
]


def best_ms(parse: Callable[[str], None], line: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        parse(line)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'parser':>18} {'line':>38} {'8 KiB ms':>9} {'64 KiB ms':>9} {'ratio':>6}")
    for name, what, build, parse in CASES:
        small, large = (best_ms(parse, build(size), args.repeat) for size in SIZES)
        print(f"{name:>18} {what:>38} {small:9.3f} {large:9.3f} {large / small if small else 0:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
