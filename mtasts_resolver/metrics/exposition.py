"""The metrics, named once, rendered in Prometheus's text format by ``prometheus_client``.

``prometheus_client`` (python3-prometheus-client: 0.16 in Debian 12, 0.19
in Debian 13) is used for its exposition only: escaping label values and
the format's details are its job.  Its own metric objects are not: the
numbers come from :class:`~mtasts_resolver.metrics.snapshot.Snapshot`\\ s
(several workers' summed), so a custom collector hands it finished families
at each scrape.

Names carry the ``mtasts_resolver_`` prefix and their unit (``_total`` for
counted events, ``_sessions``, ``_seconds``, ``_domains``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mtasts_resolver.metrics.snapshot import Series

PREFIX = "mtasts_resolver_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER = "worker"


@dataclass(frozen=True)
class MetricSpec:
    name: str            # without PREFIX; a counter's ends in _total
    help: str
    labels: tuple[str, ...] = ()
    gauge: bool = False  # gauges are per worker: WORKER is appended to their labels


METRICS = (
    MetricSpec("lookups_total", "Table lookups answered, by map name, answer (found, notfound, temp, perm) and "
               "path (hot: answered from memory at once; cold: a resolution was waited for).",
               ("map", "result", "path")),
    MetricSpec("resolutions_total", "Policy resolutions finished, by kind (sts, dane) and outcome (sts: fetched, "
               "cached, none, failed; dane: dane-only, dane, absent, temp-failure, disabled).", ("kind", "outcome")),
    MetricSpec("policy_failures_total", "Policy discovery failures, by RFC 8460 result type (as TLS-RPT reports them).",
               ("result_type",)),
    MetricSpec("limit_hits_total", "Times one of the daemon's own limits was reached, by configuration key.",
               ("limit",)),
    MetricSpec("spool_committed_sessions_total", "TLS-RPT sessions committed to the spool."),
    MetricSpec("spool_pending_sessions", "TLS-RPT sessions counted in memory, not committed yet.", gauge=True),
    MetricSpec("cached_domains", "Domains held in this worker's memory (policies and negative answers).", gauge=True),
    MetricSpec("client_connections", "Open table client connections.", gauge=True),
    MetricSpec("dane_validating", "1 while the resolver is known to validate DNSSEC (DANE answers on), else 0; "
               "absent when DANE is off.", gauge=True),
    MetricSpec("start_time_seconds", "When the worker started, seconds since the epoch.", gauge=True),
    MetricSpec("report_deliveries", "TLS-RPT report deliveries in the store, by transport (mailto, https) and state "
               "(pending, sending, sent, uncertain, failed), as `mtasts-resolver report` left them.",
               ("transport", "state")),
)
BY_NAME = {spec.name: spec for spec in METRICS}


class _Families:
    """A prometheus_client collector of finished numbers: counters, gauges, and store gauges (no worker label)."""

    def __init__(self, counters: dict[Series, int], gauges: dict[Series, float], store: dict[Series, float]) -> None:
        self._values = (counters, gauges, store)

    def collect(self) -> Iterator[Metric]:
        counters, gauges, store = self._values
        for spec in METRICS:
            if spec.name.endswith("_total"):
                family: Metric = CounterMetricFamily(PREFIX + spec.name, spec.help, labels=spec.labels)
                values: dict[Series, int] | dict[Series, float] = counters
            elif spec.gauge:
                family = GaugeMetricFamily(PREFIX + spec.name, spec.help, labels=(*spec.labels, WORKER))
                values = gauges
            else:
                family = GaugeMetricFamily(PREFIX + spec.name, spec.help, labels=spec.labels)
                values = store
            for series, value in sorted(values.items()):
                if series[0] == spec.name:
                    family.add_metric(list(series[1:]), value)
            yield family


def render(counters: dict[Series, int], gauges: dict[Series, float], store: dict[Series, float]) -> bytes:
    """The text exposition of every metric (families without a sample still say HELP and TYPE)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(counters, gauges, store))
    return generate_latest(registry)


def deliveries_by_transport(deliveries: Iterable[tuple[str, str]]) -> dict[Series, float]:
    """``report_deliveries`` from (destination URI, state) pairs: the transport is the URI's scheme."""
    counts: dict[Series, float] = {}
    for destination, state in deliveries:
        series = ("report_deliveries", destination.partition(":")[0], state)
        counts[series] = counts.get(series, 0) + 1
    return counts
