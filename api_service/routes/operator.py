"""Operator pages outside the client contract: /metrics (Prometheus text) and the run console.

The console is static files from the repository (plain ES modules, no build step, nothing from a
CDN); it needs no token to load and reads everything through /api/gateway with the bearer token the
operator types into it, so it gets exactly the answers (and 4xx) any client gets.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .. import metrics
from ..http import reading
from . import gateway

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
# The console's own pages may load only what the API serves: a script injected into a page could
# not send the token anywhere else.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


async def metrics_text(request: Request) -> Response:
    # Its collectors read the db (deployment gauges, runners' metrics): off the event loop, as every read.
    body, content_type = await reading(metrics.exposition, gateway(request).db)
    return Response(body, media_type=content_type)


async def console_root(_: Request) -> Response:
    return RedirectResponse("/console/", 308)


class ConsoleFiles(StaticFiles):
    """The console's files with its security headers; any unknown path below /console/ is the app
    (it routes in the page), so a reload on /console/runs/x works."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path if "." in path.rsplit("/", 1)[-1] else "index.html", scope)
        response.headers.update(CONSOLE_HEADERS)
        return response


def operator_routes() -> list:
    return [
        Route("/metrics", metrics_text, methods=["GET"], include_in_schema=False),
        Route("/console", console_root, methods=["GET"]),
        Mount("/console", app=ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console"),
    ]
