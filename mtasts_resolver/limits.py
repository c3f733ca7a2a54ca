"""Our own limits being hit: counted always, logged at most once per interval.

A limit is hit because a stranger (a client, a policy host, a DNS answer) is
driving a resource of ours: logging every hit would hand that stranger our
log volume too.  :class:`LimitLog` keeps a running count per limit (for
metrics and ``status``) and writes one line per limit per
``interval_s`` saying how many hits the interval saw.  Every layer that
enforces a limit reports to the one process-wide instance, ``LIMITS``, so
that the counts and the log have one shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

#: One line per limit per this many seconds, at most.
LIMIT_LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class _Limit:
    total: int = 0          # hits since start
    unlogged: int = 0       # hits since the last line
    logged_at: float = float("-inf")


class LimitLog:
    """Counts limit hits by name and logs them rate-limited.

    ``now`` is the clock (``reactor.seconds``); tests pass a ``Clock``'s.
    """

    log = Logger(namespace="mtasts_resolver.limits")

    def __init__(self, now: Callable[[], float], interval_s: float = LIMIT_LOG_INTERVAL_S) -> None:
        self._now = now
        self._interval_s = interval_s
        self._limits: dict[str, _Limit] = {}
        self._forward: Callable[[str, str], None] | None = None

    def forward_to(self, forward: Callable[[str, str], None] | None) -> None:
        """Hand every hit to ``forward(limit, detail)`` instead (a resolver process reports to its daemon); None: here."""
        self._forward = forward

    def hit(self, limit: str, detail: str = "") -> None:
        """Record one hit of ``limit`` (a config key, e.g. ``daemon.max_connections``).

        ``detail`` goes into the log line when this hit is the one logged.
        """
        if self._forward is not None:
            self._forward(limit, detail)
            return
        state = self._limits.get(limit)
        if state is None:
            state = self._limits[limit] = _Limit()
        state.total += 1
        state.unlogged += 1
        now = self._now()
        if now - state.logged_at >= self._interval_s:
            self.log.warn("limit {limit} reached {count} time(s) in the last {interval:.0f} s{detail}",
                          limit=limit, count=state.unlogged, interval=min(now - state.logged_at, self._interval_s),
                          detail=f" (latest: {detail})" if detail else "")
            state.unlogged = 0
            state.logged_at = now

    def counts(self) -> dict[str, int]:
        """Hits per limit since start (for metrics and ``status``)."""
        return {name: state.total for name, state in self._limits.items()}


def _wall_clock() -> float:
    from twisted.internet import reactor

    return reactor.seconds()


#: The process's limit log.  Code under test may build its own ``LimitLog(clock.seconds)``.
LIMITS = LimitLog(_wall_clock)
