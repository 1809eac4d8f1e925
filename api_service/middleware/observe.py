"""The outermost middleware: a request id for every request (X-Request-ID, in every log line), and
the request's count and latency by route template.

The route template (`/api/gateway/runs/{run_id}`), never the raw path, labels the metrics: ids in
labels would make a new series per run. A request refused before routing (401, 413, 429) is matched
against the route table here so it is counted under its template too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..request_context import bind_request_id, new_request_id
from . import header

log = structlog.get_logger("api")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNMATCHED = "(unmatched)"


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = list(routes)
        # Bound once (after `serve` configured logging): through the module's lazy proxy a filtered
        # debug call cost ~2.2 us, on every read request; bound, ~0.7 us.
        self.log = log.bind()
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(header(scope, b"x-request-id"))
        bind_request_id(request_id)
        started = time.perf_counter()
        status = 500
        streaming = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = []
                for key, value in message.get("headers", ()):  # one pass: drop theirs, spot a stream
                    name = key.lower()
                    if name == b"x-request-id":
                        continue
                    if name == b"content-type" and value.startswith(b"text/event-stream"):
                        streaming = True
                    headers.append((key, value))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route, method = self.template(scope), scope["method"]
            self._count(route, method, status, None if streaming else elapsed)
            # Writes and failures at info; reads at debug (one line per poll would drown the log).
            level = self.log.info if method in WRITES or status >= 500 else self.log.debug
            level(
                "request",
                method=method,
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
