"""Prometheus metrics of the API: what each process counts, what the db says, what runners publish.

Three sources, one exposition at /metrics (metrics_exposition.py):
- per-process metrics (requests, starts, commands appended, SSE subscribers, change-feed lag):
  prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (`serve --workers N`
  sets a fresh one per start, shared by its workers), so whichever worker the kernel hands the scrape to
  answers the sum over all of them. Without it (one serve process, an app in a test) they are kept in
  plain Python (local_metrics.py) and prometheus_client is imported at the first scrape.
- deployment gauges read from the db at scrape time (queue depth, due runs, live runners, pending
  commands): the db is the truth every worker shares, and each is an index probe.
- runner metrics: each runner publishes its registry's text with its heartbeat (runners table); the
  API re-exports every live runner's families with a `runner_id` label. Runners may live on hosts no
  scraper reaches and need no port of their own; one scrape target sees the whole deployment.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from shared_store.db import Database

from .local_metrics import LocalCounter, LocalGauge, LocalHistogram, LocalMetric

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

PREFIX = "abstractgateway"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Decided where prometheus_client decides it (its values module reads the variable at import): `serve
# --workers N` sets it before either is imported.
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

_REQUESTS = ("HTTP requests answered, by route template, method and status", ["route", "method", "status"])
_LATENCY = (
    "Time to answer a request (SSE streams excluded: they last as long as the client stays)",
    ["route", "method"],
)
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STARTS = "Runs started through the API (an idempotent replay not counted)"
_COMMANDS = (
    "Commands appended through the API, by type and outcome (accepted | duplicate)",
    ["type", "outcome"],
)
_SSE = "Open ledger SSE streams"
_FEED_LAG = (
    "How old a change can be when the SSE hub reads it: time since its previous poll, at a poll "
    "that found changes (worst over API processes)"
)

REQUESTS: Counter | LocalCounter
LATENCY: Histogram | LocalHistogram
STARTS: Counter | LocalCounter
COMMANDS: Counter | LocalCounter
SSE_SUBSCRIBERS: Gauge | LocalGauge
FEED_LAG: Gauge | LocalGauge
# This process's metrics as a scrape reads them; None in multiprocess mode (read from the files).
LOCAL: list[LocalMetric] | None = None
if MULTIPROCESS:
    from prometheus_client import Counter, Gauge, Histogram

    REQUESTS = Counter(f"{PREFIX}_http_requests", *_REQUESTS)
    LATENCY = Histogram(f"{PREFIX}_http_request_duration_seconds", *_LATENCY, buckets=_BUCKETS)
    STARTS = Counter(f"{PREFIX}_runs_started", _STARTS)
    COMMANDS = Counter(f"{PREFIX}_commands_appended", *_COMMANDS)
    SSE_SUBSCRIBERS = Gauge(f"{PREFIX}_sse_subscribers", _SSE, multiprocess_mode="livesum")
    FEED_LAG = Gauge(f"{PREFIX}_change_feed_lag_seconds", _FEED_LAG, multiprocess_mode="livemax")
else:
    # Each request, start and command updates these: ~360 -> ~40 bytecodes a start (local_metrics).
    REQUESTS = LocalCounter(f"{PREFIX}_http_requests", *_REQUESTS)
    LATENCY = LocalHistogram(f"{PREFIX}_http_request_duration_seconds", *_LATENCY, buckets=_BUCKETS)
    STARTS = LocalCounter(f"{PREFIX}_runs_started", _STARTS)
    COMMANDS = LocalCounter(f"{PREFIX}_commands_appended", *_COMMANDS)
    SSE_SUBSCRIBERS = LocalGauge(f"{PREFIX}_sse_subscribers", _SSE)
    FEED_LAG = LocalGauge(f"{PREFIX}_change_feed_lag_seconds", _FEED_LAG)
    LOCAL = [REQUESTS, LATENCY, STARTS, COMMANDS, SSE_SUBSCRIBERS, FEED_LAG]


def exposition(db: Database) -> tuple[bytes, str]:
    """The /metrics body and its content type (it reads the db: call it off the event loop)."""
    from .metrics_exposition import exposition as render

    return render(db, LOCAL)


def process_exited() -> None:
    """Drop this process's live gauges (SSE subscribers, feed lag) from the shared directory."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
