"""One worker's numbers at one moment, as a value: what a scrape sums and what ``status`` shows.

A *series* is a metric name and its label values in the order of the
metric's labels (:data:`mtasts_resolver.metrics.exposition.METRICS`), e.g.
``("lookups_total", "postfix", "found", "hot")``.  Counters are summed over
the workers of a pool; gauges are per process, so each worker's keep a
``worker`` label instead of being added up (two workers' memory caches hold
many of the same domains: a sum would count them twice).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Series = tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    """``info`` is what ``status`` shows besides the numbers (DANE's state in words, the version)."""

    worker: int
    pid: int
    started_at: float
    written_at: float
    counters: dict[Series, int] = field(default_factory=dict)
    gauges: dict[Series, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"worker": self.worker, "pid": self.pid, "started_at": self.started_at,
                           "written_at": self.written_at, "info": self.info,
                           "counters": [[*series, value] for series, value in sorted(self.counters.items())],
                           "gauges": [[*series, value] for series, value in sorted(self.gauges.items())]})

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """Raises ValueError (or KeyError, TypeError) for text that is not a snapshot."""
        data: dict[str, Any] = json.loads(text)
        return cls(int(data["worker"]), int(data["pid"]), float(data["started_at"]), float(data["written_at"]),
                   {tuple(map(str, row[:-1])): int(row[-1]) for row in data["counters"]},
                   {tuple(map(str, row[:-1])): float(row[-1]) for row in data["gauges"]},
                   {str(key): str(value) for key, value in data["info"].items()})


def combine(snapshots: Iterable[Snapshot]) -> tuple[dict[Series, int], dict[Series, float]]:
    """Counters summed over ``snapshots``; gauges kept apart, the worker's index appended as a last label."""
    counters: Counter[Series] = Counter()
    gauges: dict[Series, float] = {}
    for snapshot in snapshots:
        counters.update(snapshot.counters)
        for series, value in snapshot.gauges.items():
            gauges[(*series, str(snapshot.worker))] = value
    return dict(counters), gauges
