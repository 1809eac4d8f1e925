"""The app factory: routes, security middleware, error handlers, the SSE hub's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware

from shared_store.db import Database

from .access import load_secret
from .errors import EXCEPTION_HANDLERS
from .http import ApiRoute
from .middleware.audit import AuditLog
from .middleware.auth import AuthMiddleware, Lockout
from .middleware.body_limit import BodyLimitMiddleware
from .middleware.concurrency import ConcurrencyMiddleware
from .middleware.cors import CorsMiddleware
from .middleware.front import FrontMiddleware
from .openapi import doc_routes, openapi_spec
from .quotas import StreamQuotas
from .route_index import index_routes
from .routes import (
    Gateway,
    bulk,
    bundles,
    commands,
    discovery,
    health,
    kg,
    ledger,
    media,
    prompt_cache,
    reruns,
    runs,
    schedules,
    tokens,
    webhooks,
)
from .routes.operator import operator_routes
from .settings import ApiSettings
from .sse import SseHub

TITLE = "AbstractGateway"


def api_routes() -> list:
    """Every route of the API, in matching order: the app and its OpenAPI document both come from it."""
    return [
        *health.routes,
        *bundles.routes,
        *schedules.routes,
        *runs.routes,
        *reruns.routes,
        *bulk.routes,
        *commands.routes,
        *ledger.routes,
        *media.routes,
        *discovery.routes,
        *kg.routes,
        *prompt_cache.routes,
        *tokens.routes,
        *webhooks.routes,
    ]


def check_scopes(routes: list) -> None:
    """Every /api/gateway route must declare the scope it needs: a route added without one would
    otherwise be open to every token. Refused here, at app build, naming the route."""
    for route in routes:
        path = getattr(route, "path", "")
        if not path.startswith("/api/gateway"):
            continue
        if not isinstance(route, ApiRoute) or route.needs is None:
            raise RuntimeError(f"route {path} declares no scope (ApiRoute(needs=read|run|admin))")


def openapi_document() -> dict:
    return openapi_spec(api_routes(), title=TITLE, version=health.VERSION)


def create_app(db: Database, settings: ApiSettings, *, artifacts_dir: Path | None = None) -> Starlette:
    """The API over an open, migrated db. The caller owns the db (and closes it after the app stops)."""
    hub = SseHub(
        db,
        poll_s=settings.sse_poll_s,
        buffer=settings.sse_buffer,
        done_grace_s=settings.done_grace_s,
        listen=not settings.pg_transaction_pooler,
    )
    audit = AuditLog(settings.audit_log) if settings.audit_log else None
    routes = api_routes()
    check_scopes(routes)
    secret = settings.token_secret
    if secret is None and settings.auth_required:
        secret = load_secret(db.path.parent)
    pages = operator_routes()
    check_scopes(pages)
    middleware = [
        Middleware(
            FrontMiddleware,
            routes=[*routes, *pages],
            trusted_proxies=settings.trusted_proxies,
            allowed_hosts=settings.allowed_hosts,
            auth_required=settings.auth_required,
            audit_log=audit,
        ),
        Middleware(CorsMiddleware, allowed_origins=settings.allowed_origins),
        Middleware(
            AuthMiddleware,
            tokens=settings.tokens,
            lockout=Lockout(settings.lockout_after, settings.lockout_window_s, settings.lockout_s),
            secret=secret,
            db=db,
            also=() if settings.metrics_public else ("/metrics",),
        ),
        Middleware(
            ConcurrencyMiddleware,
            max_requests=settings.max_concurrency,
            max_per_client=settings.max_client_concurrency,
        ),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s),
    ]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            if audit is not None:
                audit.close()

    app = Starlette(
        routes=[*routes, *doc_routes(lambda: msgspec.json.encode(openapi_document())), *pages],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    index_routes(app.router)
    streams = StreamQuotas(settings.max_streams_per_client, settings.max_streams_per_token)
    app.state.gateway = Gateway(
        db, hub, settings, artifacts_dir or db.path.parent / "artifacts", streams, secret
    )
    return app
