"""The runner's metrics, published through the store with each heartbeat (runners.metrics) and
exported by the API's /metrics with a `runner_id` label.

Why through the store and not a port of its own: runners are often started where no scraper can
reach them (a second host, a container without a published port), several share a host, and they
already write a heartbeat every lease_s / 3; one extra column in that same UPDATE costs nothing,
and one scrape target then sees the whole deployment. The price is staleness of up to one
heartbeat interval (10 s with the default 30 s lease).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from shared_store import LeaseHolder

disable_created_metrics()

PREFIX = "abstractgateway"
# Seconds: ticks are milliseconds to a 2 s slice; runs and media jobs seconds to hours.
TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
LONG_BUCKETS = (0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


class _LeaseCounts(Collector):
    """The LeaseHolder's own counts, read when the text is rendered."""

    def __init__(self, fence: LeaseHolder) -> None:
        self.fence = fence

    def collect(self) -> Iterator[Metric]:
        for name, help_text, value in (
            ("lease_claims", "Run leases claimed", self.fence.claims),
            ("lease_takeovers", "Expired leases of other runners taken back", self.fence.takeovers),
            ("leases_lost", "Leases found lost (fenced out by another runner)", self.fence.lost_leases),
        ):
            yield CounterMetricFamily(f"{PREFIX}_runner_{name}", help_text, value=value)


class RunnerMetrics:
    def __init__(self, fence: LeaseHolder) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_LeaseCounts(fence))
        self.starts = Counter(
            f"{PREFIX}_runner_runs_started",
            "Queued runs this runner started",
            registry=self.registry,
        )
        self.commands = Counter(
            f"{PREFIX}_runner_commands",
            "Commands this runner applied or rejected, by type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.tick = Histogram(
            f"{PREFIX}_runner_tick_duration_seconds",
            "One tick of a run (up to steps_per_tick steps)",
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.run_duration = Histogram(
            f"{PREFIX}_run_duration_seconds",
            "From a run's creation to its end, by workflow and outcome (completed | failed | cancelled)",
            ["workflow", "outcome"],
            buckets=LONG_BUCKETS,
            registry=self.registry,
        )
        self.media_job = Histogram(
            f"{PREFIX}_media_job_duration_seconds",
            "One attempt of a media job, by kind and outcome",
            ["kind", "outcome"],
            buckets=LONG_BUCKETS,
            registry=self.registry,
        )

    def text(self) -> str:
        return generate_latest(self.registry).decode()
