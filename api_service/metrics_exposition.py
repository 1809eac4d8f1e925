"""The /metrics text: this process's metrics (or every worker's), the db's gauges, the runners' metrics.

Imported at the first scrape, not before: one serve process keeps its metrics in plain Python
(local_metrics.py), so prometheus_client (~1.2 MB of a serve's idle RSS) loads only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from shared_store.db import Database
from shared_store.errors import StoreError
from shared_store.gauges import deployment_gauges
from shared_store.runners import runner_metrics

from .local_metrics import LocalCounter, LocalHistogram, LocalMetric
from .metrics import PREFIX

disable_created_metrics()  # `_created` series double the output and no dashboard reads them

RUNNER_WINDOW_S = 30.0  # a runner silent this long is not live (as /api/health judges it)


def family(metric: LocalMetric) -> Metric:
    """A local metric as the family prometheus_client's own metric of that kind would expose."""
    if isinstance(metric, LocalHistogram):
        histogram = HistogramMetricFamily(metric.name, metric.documentation, labels=metric.labelnames)
        names = [floatToGoString(b) for b in metric.bounds] + ["+Inf"]
        for values, counts, total in metric.buckets():
            cumulative, buckets = 0, []
            for name, count in zip(names, counts, strict=True):
                cumulative += count
                buckets.append((name, float(cumulative)))
            histogram.add_metric(values, buckets, sum_value=total)
        return histogram
    kind = CounterMetricFamily if isinstance(metric, LocalCounter) else GaugeMetricFamily
    if not metric.labelnames:
        return kind(metric.name, metric.documentation, value=metric.samples()[0][1])
    labelled = kind(metric.name, metric.documentation, labels=metric.labelnames)
    for values, value in metric.samples():
        labelled.add_metric(values, value)
    return labelled


class LocalCollector(Collector):
    """This process's plain-Python metrics, read at the scrape."""

    def __init__(self, metrics: Sequence[LocalMetric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield family(metric)


class DeploymentCollector(Collector):
    """Gauges from the db, read at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        try:
            g = deployment_gauges(self.db, runner_window_s=RUNNER_WINDOW_S)
        except StoreError:
            return  # the scrape still answers the process counters; /api/health reports the db
        for name, help_text, value in (
            ("runs_queued", "Runs started and not yet picked up by a runner", g.runs_queued),
            ("queue_depth", "Runs due now and waiting for a runner to claim them", g.runs_due),
            ("runs_leased", "Runs held by a runner right now", g.runs_leased),
            ("commands_pending", "Commands not yet applied or rejected", g.commands_pending),
            ("runners_live", f"Runners that heartbeated within {RUNNER_WINDOW_S:.0f}s", g.runners_live),
            ("change_feed_head", "The change feed's position (grows with every ledger append)", g.feed_head),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)


class RunnerCollector(Collector):
    """Every live runner's published metrics, each sample labelled with its runner_id."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        try:
            published = runner_metrics(self.db, within_s=RUNNER_WINDOW_S)
        except StoreError:
            return
        families: dict[str, Metric] = {}
        for runner_id, text in published:
            try:
                parsed = list(text_string_to_metric_families(text))
            except ValueError:  # a runner of another version wrote something we cannot read
                continue
            for family in parsed:
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "runner_id": runner_id}, sample.value)
        yield from families.values()


class _ProcessRegistry(Collector):
    """prometheus_client's default registry: this process's CPU, memory, fds and GC (one process)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(db: Database, local: Sequence[LocalMetric] | None) -> tuple[bytes, str]:
    """The /metrics body and its content type. `local`: this process's metrics; None in multiprocess
    mode, where every worker's are read from the shared directory."""
    registry = CollectorRegistry(auto_describe=False)
    if local is None:
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
        registry.register(LocalCollector(local))
    registry.register(DeploymentCollector(db))
    registry.register(RunnerCollector(db))
    return generate_latest(registry), CONTENT_TYPE_LATEST
