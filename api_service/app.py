"""The app factory: routes, security middleware, error handlers, the SSE hub's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware

from shared_store.db import Database

from .errors import EXCEPTION_HANDLERS
from .middleware.audit import AuditLog, AuditMiddleware
from .middleware.auth import AuthMiddleware, Lockout
from .middleware.body_limit import BodyLimitMiddleware
from .middleware.concurrency import ConcurrencyMiddleware
from .middleware.cors import CorsMiddleware
from .middleware.observe import ObserveMiddleware
from .openapi import doc_routes, openapi_spec
from .routes import (
    Gateway,
    bundles,
    commands,
    discovery,
    health,
    kg,
    ledger,
    media,
    prompt_cache,
    runs,
    schedules,
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
        *commands.routes,
        *ledger.routes,
        *media.routes,
        *discovery.routes,
        *kg.routes,
        *prompt_cache.routes,
    ]


def openapi_document() -> dict:
    return openapi_spec(api_routes(), title=TITLE, version=health.VERSION)


def create_app(db: Database, settings: ApiSettings, *, artifacts_dir: Path | None = None) -> Starlette:
    """The API over an open, migrated db. The caller owns the db (and closes it after the app stops)."""
    hub = SseHub(
        db, poll_s=settings.sse_poll_s, buffer=settings.sse_buffer, done_grace_s=settings.done_grace_s
    )
    audit = AuditLog(settings.audit_log) if settings.audit_log else None
    routes = api_routes()
    spec = msgspec.json.encode(openapi_document())
    pages = operator_routes()
    middleware = [
        Middleware(ObserveMiddleware, routes=[*routes, *pages]),
        *([Middleware(AuditMiddleware, audit_log=audit)] if audit else []),
        Middleware(CorsMiddleware, allowed_origins=settings.allowed_origins),
        Middleware(
            AuthMiddleware,
            tokens=settings.tokens,
            lockout=Lockout(settings.lockout_after, settings.lockout_window_s, settings.lockout_s),
            also=() if settings.metrics_public else ("/metrics",),
        ),
        Middleware(ConcurrencyMiddleware, max_requests=settings.max_concurrency),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
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
        routes=[*routes, *doc_routes(spec), *pages],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.gateway = Gateway(db, hub, settings, artifacts_dir or db.path.parent / "artifacts")
    return app
