"""Origin allowlist (globs) for browsers, and CORS preflight answered for allowed origins only.

A request without an Origin header is not from a browser page: it passes (the bearer token guards
it). A same-origin page (the Swagger UI at /docs) is allowed whatever the list says.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import header, protected, send_error

ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = b"Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
EXPOSE_HEADERS = b"Retry-After, WWW-Authenticate, Content-Disposition"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.patterns = tuple(p.lower() for p in allowed_origins)

    def allowed(self, origin: str, scope: Scope) -> bool:
        origin = origin.lower()
        host = header(scope, b"host")
        if host and origin == f"{scope.get('scheme', 'http')}://{host.lower()}":
            return True
        return any(fnmatchcase(origin, pattern) for pattern in self.patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = header(scope, b"origin") if protected(scope) else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not self.allowed(origin, scope):
            await send_error(scope, send, 403, "origin not allowed (see ABSTRACTGATEWAY_ALLOWED_ORIGINS)")
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        *cors,
                        (b"access-control-allow-methods", ALLOW_METHODS),
                        (b"access-control-allow-headers", ALLOW_HEADERS),
                        (b"access-control-max-age", b"600"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *cors,
                    (b"access-control-expose-headers", EXPOSE_HEADERS),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)
