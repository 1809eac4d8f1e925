"""Routing a request with a fixed path (`/api/gateway/runs/start`, `/api/gateway/commands`) through
the few routes that can match it, instead of every route in turn.

Starlette's router asks each route in order whether it matches (`matches`: a prefix test here, then
its regex and method), and takes the first full match, else the first partial one (a 405). Every
route that can match a fixed path is known when the app is built: the index keeps, for each fixed
path of the table, those routes in their order (mounts included, whatever their prefix), so the first
full or partial match among them is the one the whole scan would find. Any other path (one with a
run id in it) and anything unmatched go through Starlette's own router, with its slash redirects
and 404. Measured (bytecodes a start executes, its event-loop thread): route matching ~730 -> ~250.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


def _may_match(route: BaseRoute, path: str) -> bool:
    if isinstance(route, Route):
        return route.path_regex.match(path) is not None
    return True  # a mount or anything else: kept, in its place, to be asked at request time


class RouteIndex:
    """The router's innermost app: a fixed path goes to its candidates, the rest to the router."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.scan = router.app
        self.by_path: dict[str, tuple[BaseRoute, ...]] = {}
        for route in router.routes:
            if isinstance(route, Route) and "{" not in route.path and route.path not in self.by_path:
                self.by_path[route.path] = tuple(r for r in router.routes if _may_match(r, route.path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        candidates = self.by_path.get(scope["path"]) if scope["type"] == "http" else None
        if candidates is None or scope.get("root_path"):
            await self.scan(scope, receive, send)
            return
        scope.setdefault("router", self.router)
        partial: tuple[BaseRoute, Scope] | None = None
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        if partial is None:  # no candidate took it after all: the router decides (redirect, 404)
            await self.scan(scope, receive, send)
            return
        scope["route"] = partial[0]
        scope.update(partial[1])
        await partial[0].handle(scope, receive, send)


def index_routes(router: Router) -> None:
    """Route fixed paths through their candidates. Called once the route table is complete (create_app
    adds no route afterwards): the index is built here, not checked again per request."""
    router.middleware_stack = RouteIndex(router)
