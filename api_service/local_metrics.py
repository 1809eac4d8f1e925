"""Counters, gauges and histograms of one serve process, kept in plain Python; prometheus_client reads
them only when /metrics is scraped (metrics_exposition.py), and is imported only then.

A prometheus_client Counter's inc() checks the metric is observable, validates the amount and takes a
lock; a Histogram's observe() does that twice and walks its buckets. Those four updates were ~360 of
a start's ~3,570 bytecodes (in-process, c16). Here an update is a dict lookup (cached children) and an
addition: every update runs on the event loop thread, so nothing needs a lock. A scrape (which runs in
a read thread) copies each child's values, so it sees every update made before it, and a histogram's
count is its buckets' sum (its sum may lag by the one observation in flight: Prometheus allows it).

`serve --workers N` (N > 1) uses prometheus_client's own metrics instead: there each update must reach
the files every worker's scrape reads (metrics.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

Labels = tuple[str, ...]


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LocalCounter:
    """A counter, with prometheus_client's inc() / labels(...).inc() surface."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._children: dict[Labels, _Count] = {}
        self._own = _Count()

    def labels(self, *values: str) -> _Count:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            child = self._children[values] = _Count()
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._own.value += amount

    def samples(self) -> list[tuple[Labels, float]]:
        """(label values, value) of each child; the one unlabelled value when it takes no labels."""
        if not self.labelnames:
            return [((), self._own.value)]
        return [(values, child.value) for values, child in list(self._children.items())]


class LocalGauge:
    """An unlabelled gauge, with prometheus_client's inc() / dec() / set() surface."""

    labelnames: Labels = ()

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)

    def samples(self) -> list[tuple[Labels, float]]:
        return [((), self.value)]


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # `le`: the first bound >= amount
        self.sum += amount


class LocalHistogram:
    """A labelled histogram, with prometheus_client's labels(...).observe() surface."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._children: dict[Labels, _Buckets] = {}

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            child = self._children[values] = _Buckets(self.bounds)
        return child

    def buckets(self) -> list[tuple[Labels, list[int], float]]:
        """(label values, each bucket's own count with +Inf's last, sum) of each child."""
        return [(values, list(child.counts), child.sum) for values, child in list(self._children.items())]


LocalMetric = LocalCounter | LocalGauge | LocalHistogram
