"""One serve process counts its hot-path metrics in plain Python (api_service/local_metrics.py): a
scrape must read exactly what prometheus_client's own Counter and Histogram would have exposed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api_service.local_metrics import LocalCounter, LocalGauge, LocalHistogram
from api_service.metrics_exposition import LocalCollector, family  # disables `_created`, as serve does

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# On a bound (`le` includes it), between bounds, zero, above every bound, and repeats.
AMOUNTS = [0.0, 0.001, 0.0011, 0.0025, 0.2, 1.0, 1.5, 59.9, 60.0, 61.0, 1e6, 0.004, 0.004]


def exposed(local: bool) -> bytes:
    registry = CollectorRegistry()
    requests: Any
    latency: Any
    starts: Any
    streams: Any
    if local:
        requests = LocalCounter("t_requests", "requests", ["route", "status"])
        latency = LocalHistogram("t_latency_seconds", "latency", ["route"], buckets=BUCKETS)
        starts = LocalCounter("t_starts", "starts")
        streams = LocalGauge("t_streams", "streams")
        registry.register(LocalCollector([requests, latency, starts, streams]))
        labelled = LocalCounter("t_unused", "never incremented", ["kind"])
        registry.register(LocalCollector([labelled]))
    else:
        requests = Counter("t_requests", "requests", ["route", "status"], registry=registry)
        latency = Histogram("t_latency_seconds", "latency", ["route"], buckets=BUCKETS, registry=registry)
        starts = Counter("t_starts", "starts", registry=registry)
        streams = Gauge("t_streams", "streams", registry=registry)
        Counter("t_unused", "never incremented", ["kind"], registry=registry)
    streams.set(2.5)
    for i, amount in enumerate(AMOUNTS):
        route = "/a" if i % 3 else "/b/{id}"
        requests.labels(route, "200" if i % 4 else "404").inc()
        latency.labels(route).observe(amount)
        starts.inc()
        if i % 2:
            streams.inc(3)
        else:
            streams.dec()
    starts.inc(2.5)
    return generate_latest(registry)


def test_local_metrics_expose_what_prometheus_client_would() -> None:
    local, reference = exposed(local=True), exposed(local=False)
    assert b't_latency_seconds_bucket{le="+Inf",route="/a"}' in reference  # the comparison means something
    assert local.splitlines() == reference.splitlines()


def test_a_scrape_in_another_thread_sees_every_update_made_before_it() -> None:
    counter = LocalCounter("t_n", "n", ["k"])
    histogram = LocalHistogram("t_h", "h", ["k"], buckets=(1.0,))
    for _ in range(1_000):
        counter.labels("x").inc()
        histogram.labels("x").observe(0.5)
    families: list = []
    reader = threading.Thread(target=lambda: families.extend([family(counter), family(histogram)]))
    reader.start()
    reader.join()
    assert [s.value for s in families[0].samples] == [1_000]
    count = next(s for s in families[1].samples if s.name == "t_h_count")
    assert count.value == 1_000


def test_wrong_label_count_is_refused_as_prometheus_client_does() -> None:
    with pytest.raises(ValueError):
        LocalCounter("t_c", "c", ["a", "b"]).labels("only-one")
    with pytest.raises(ValueError):
        LocalHistogram("t_h2", "h", ["a"], buckets=(1.0,)).labels("x", "y")
