"""Counting what passes: lookups at the listeners' side of the service, resolutions from its hook.

Nothing here is inside :class:`~mtasts_resolver.service.PolicyService`: a
lookup is counted by :class:`CountingLookups`, which stands between the
listeners and the service (an answer returned at once is *hot*, one that
comes later through a Deferred is *cold*: a resolution was waited for), and
a finished resolution by :meth:`Tally.resolution`, composed with the TLS-RPT
sink on the service's ``on_resolution`` hook.  Failures are counted by
RFC 8460 result type (:func:`failure_types`), every one the resolution met:
the TLS-RPT feed reports only those of an announced policy, a metric wants
a TXT lookup that failed too.  Counting must never fail a lookup: the hook
logs its own errors and returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mtasts_resolver.lookup import Answer, AnswerKind, LookupService
from mtasts_resolver.metrics.snapshot import Series
from mtasts_resolver.policy.dane import DaneOutcome
from mtasts_resolver.policy.model import NoStsTxt, StsFailure, StsPolicy
from mtasts_resolver.tlsrpt.feeds.resolution import HOST_RESULT_TYPES, Resolution
from mtasts_resolver.tlsrpt.model import ResultType

log = Logger()

HOT = "hot"
COLD = "cold"
#: Every lookup is counted on the hot path: the label of each answer kind, made once.
_ANSWER_LABELS = {kind: kind.name.lower() for kind in AnswerKind}


#: Distinct map names counted apart; later ones are counted as OTHER_MAP.  The
#: map name is the client's to choose (socketmap sends any): without a bound a
#: client could grow the counters, and every scrape, by one series per name.
MAX_MAP_LABELS = 16
OTHER_MAP = "other"


class Tally:
    """This process's counters, by series (:mod:`mtasts_resolver.metrics.snapshot`)."""

    def __init__(self) -> None:
        self.counters: Counter[Series] = Counter()
        self._maps: set[str] = set()

    def lookup(self, map_name: str, answer: Answer, path: str) -> None:
        if map_name not in self._maps:
            if len(self._maps) >= MAX_MAP_LABELS:
                map_name = OTHER_MAP
            else:
                self._maps.add(map_name)
        self.counters[("lookups_total", map_name, _ANSWER_LABELS[answer.kind], path)] += 1

    def resolution(self, resolution: Resolution) -> None:
        """The ``on_resolution`` hook: one MTA-STS resolution, one DANE one if DANE ran, their failures."""
        try:
            self.counters[("resolutions_total", "sts", sts_outcome(resolution))] += 1
            if resolution.dane is not None:
                self.counters[("resolutions_total", "dane", resolution.dane.outcome.value)] += 1
            for result_type in failure_types(resolution):
                self.counters[("policy_failures_total", result_type.value)] += 1
        except Exception:  # noqa: BLE001 - a bug here must not turn the answer into TEMP
            log.failure("counting the resolution of {domain} failed", domain=resolution.domain)


def sts_outcome(resolution: Resolution) -> str:
    """How MTA-STS discovery ended: failed, none (no policy announced), fetched, or cached (kept as it was)."""
    if isinstance(resolution.txt, StsFailure) or isinstance(resolution.fetched, StsFailure):
        return "failed"
    if isinstance(resolution.txt, NoStsTxt):
        return "none"
    if isinstance(resolution.fetched, StsPolicy):
        return "fetched"
    return "cached"


def failure_types(resolution: Resolution) -> list[ResultType]:
    """The RFC 8460 result type of each failure the resolution met (MTA-STS steps, the domain's DANE, its hosts)."""
    found = [ResultType(step.type.value) for step in (resolution.txt, resolution.fetched)
             if isinstance(step, StsFailure)]
    dane = resolution.dane
    if dane is not None:
        if dane.outcome is DaneOutcome.TEMP:
            found.append(ResultType.DNSSEC_INVALID)
        found += [HOST_RESULT_TYPES[host.status] for host in dane.hosts if host.status in HOST_RESULT_TYPES]
    return found


class CountingLookups:
    """A :class:`~mtasts_resolver.lookup.LookupService` that counts every answer of the one it wraps."""

    def __init__(self, service: LookupService, tally: Tally) -> None:
        self._service = service
        self._tally = tally

    def lookup(self, map_name: str, key: str) -> Answer | Deferred[Answer]:
        answer = self._service.lookup(map_name, key)
        if isinstance(answer, Deferred):
            return answer.addCallback(self._counted, map_name)
        self._tally.lookup(map_name, answer, HOT)
        return answer

    def _counted(self, answer: Answer, map_name: str) -> Answer:
        self._tally.lookup(map_name, answer, COLD)
        return answer


def both(*hooks: Callable[[Resolution], None]) -> Callable[[Resolution], None]:
    """One ``on_resolution`` hook calling each of ``hooks`` in turn."""
    def on_resolution(resolution: Resolution) -> None:
        for hook in hooks:
            hook(resolution)
    return on_resolution
