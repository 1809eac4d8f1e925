"""ApiRoute.matches refuses a path outside a route's literal prefix without Starlette's regex
(api_service/http.py): it must decide exactly as Starlette's own Route.matches does, for every route of
the table and every path, methods and parameters included."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route

from api_service.app import api_routes
from api_service.http import ApiRoute
from api_service.routes.operator import operator_routes


def _scope(path: str, method: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "root_path": root_path, "path_params": {}}


def _example(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "x-1", path)


def test_every_route_matches_as_starlette_would() -> None:
    routes = [r for r in [*api_routes(), *operator_routes()] if isinstance(r, ApiRoute)]
    assert len(routes) > 30
    paths = {"/", "/api", "/api/gateway", "/api/gateway/", "/api/health/", "/nope", "/api/gateway/runs//x"}
    for route in routes:
        example = _example(route.path)
        paths |= {example, example + "/", example[:-1], route.path, route.literal, route.literal + "a/b"}
    checked = 0
    for route in routes:
        for path in sorted(paths):
            for method in ("GET", "POST", "DELETE"):
                for root in ("", "/prefix"):
                    scope = _scope(root + path if root else path, method, root)
                    assert route.matches(scope) == Route.matches(route, scope), (
                        route.path,
                        path,
                        method,
                        root,
                    )
                    checked += 1
    full = [
        r
        for r in routes
        if r.matches(_scope(_example(r.path), next(iter(r.methods or {"GET"}))))[0].name == "FULL"
    ]
    assert len(full) == len(routes), "each route matches its own example path"
    assert checked > 10_000


def test_the_route_index_picks_the_route_starlettes_router_picks() -> None:
    """Every fixed path goes to its indexed candidates; what they pick (route, path parameters, a 405's
    partial match, a slash redirect, a 404) is what Starlette's full scan picks, for every path and
    method, with the console mount and the documentation routes in the table as served."""
    import asyncio
    import copy

    from starlette.routing import Router

    from api_service.openapi import doc_routes
    from api_service.route_index import RouteIndex

    # Copies: the route objects are the modules' own, shared by every app this process builds.
    table = [copy.copy(r) for r in [*api_routes(), *doc_routes(lambda: b"{}"), *operator_routes()]]
    picked: list[Any] = []

    def recorder(route: Any) -> Any:
        async def handle(scope: Any, receive: Any, send: Any) -> None:
            picked.append((route, dict(scope.get("path_params", {}))))

        return handle

    for route in table:
        route.handle = recorder(route)
    router = Router(table)
    index = RouteIndex(router)
    assert len(index.by_path) > 20  # the fixed paths of the table are indexed

    async def outcome(app: Any, path: str, method: str) -> tuple[Any, ...]:
        picked.clear()
        sent: list[Any] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append((message["type"], message.get("status"), dict(message.get("headers", []))))

        scope = {**_scope(path, method), "query_string": b"", "headers": [], "scheme": "http",
                 "server": ("127.0.0.1", 80)}  # fmt: skip
        await app(scope, receive, send)
        return tuple(picked), tuple(sent)

    paths = set(index.by_path)
    for route in table:
        path = getattr(route, "path", "")
        paths |= {path + "/", path.rstrip("/"), _example(path), path + "x", "/api/gateway/nope"}
    compared = 0
    for path in sorted(p for p in paths if p.startswith("/")):
        for method in ("GET", "POST", "DELETE", "PUT"):
            expected = asyncio.run(outcome(router.app, path, method))
            assert asyncio.run(outcome(index, path, method)) == expected, (path, method)
            compared += 1
    assert compared > 400
