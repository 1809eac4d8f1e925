"""Prometheus metrics of the API: what each process counts, what the db says, what runners publish.

Three sources, one exposition at /metrics:
- per-process counters (requests, starts, commands appended, SSE subscribers, change-feed lag):
  prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (`serve --workers N`
  sets a fresh one per start, shared by its workers), so whichever worker the kernel hands the scrape to
  answers the sum over all of them. Without it (one serve process, an app in a test) the in-process
  registry.
- deployment gauges read from the db at scrape time (queue depth, due runs, live runners, pending
  commands): the db is the truth every worker shares, and each is an index probe.
- runner metrics: each runner publishes its registry's text with its heartbeat (runners table); the
  API re-exports every live runner's families with a `runner_id` label. Runners may live on hosts no
  scraper reaches and need no port of their own; one scrape target sees the whole deployment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from shared_store.db import Database
from shared_store.errors import StoreError
from shared_store.gauges import deployment_gauges
from shared_store.runners import runner_metrics

disable_created_metrics()  # `_created` series double the output and no dashboard reads them

PREFIX = "abstractgateway"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RUNNER_WINDOW_S = 30.0  # a runner silent this long is not live (as /api/health judges it)

REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer a request (SSE streams excluded: they last as long as the client stays)",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STARTS = Counter(f"{PREFIX}_runs_started", "Runs started through the API (an idempotent replay not counted)")
COMMANDS = Counter(
    f"{PREFIX}_commands_appended",
    "Commands appended through the API, by type and outcome (accepted | duplicate)",
    ["type", "outcome"],
)
SSE_SUBSCRIBERS = Gauge(f"{PREFIX}_sse_subscribers", "Open ledger SSE streams", multiprocess_mode="livesum")
FEED_LAG = Gauge(
    f"{PREFIX}_change_feed_lag_seconds",
    "How old a change can be when the SSE hub reads it: time since its previous poll, at a poll "
    "that found changes (worst over API processes)",
    multiprocess_mode="livemax",
)


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
    """This process's own counters (when not in multiprocess mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(db: Database) -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    registry.register(DeploymentCollector(db))
    registry.register(RunnerCollector(db))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited() -> None:
    """Drop this process's live gauges (SSE subscribers, feed lag) from the shared directory."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
