"""What the front layer (middleware.front) observes of every request: its count and latency by route
template, and its log line.

The route template (`/api/gateway/runs/{run_id}`), never the raw path, labels the metrics: ids in
labels would make a new series per run. A request refused before routing (401, 413, 429) is matched
against the route table here so it is counted under its template too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from shared_store.logs import HotLine

from .. import metrics

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNMATCHED = "(unmatched)"


class Observer:
    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = list(routes)
        self.line = HotLine("api")
        # Labelled children cached here: prometheus_client's labels() costs ~10 us a call.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def _count(self, route: str, method: str, status: int, elapsed: float | None) -> None:
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = self._counters[(route, method, status)] = metrics.REQUESTS.labels(
                route, method, str(status)
            )
        counter.inc()
        if elapsed is None:
            return
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[(route, method)] = metrics.LATENCY.labels(route, method)
        timer.observe(elapsed)

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] != Match.NONE), None)
        if isinstance(route, Route):
            return route.path
        if isinstance(route, Mount):  # the console's files: one series for all of them
            return f"{route.path}/{{path}}"
        return UNMATCHED

    def done(self, scope: Scope, status: int, elapsed: float, streaming: bool, audited: bool = False) -> None:
        """Count the answered request (an SSE stream's lifetime is no latency) and log its line."""
        route, method = self.template(scope), scope["method"]
        self._count(route, method, status, None if streaming else elapsed)
        # Writes and failures at info; reads at debug (one line per poll would drown the log), and a
        # write the audit log recorded (with its request id) unless refused: one record of it, not
        # two (the line cost ~45,000 instructions of a start's ~1.9 million, served).
        write = method in WRITES and not (audited and status < 400)
        level = logging.INFO if write or status >= 500 else logging.DEBUG
        if not self.line.enabled(level):
            return  # its fields are not even gathered
        self.line(
            level,
            "request",
            method=method,
            path=scope["path"],
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
        )
