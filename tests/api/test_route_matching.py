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
