"""Origin allowlist (globs) for browsers, and CORS preflight answered for allowed origins only.

A request without an Origin header is not from a browser page: it passes (the bearer token guards
it). A same-origin page (the Swagger UI at /docs) is allowed whatever the list says.

A pattern is matched part by part — scheme exactly, host against the host glob, port against the port
glob — never as one string: `http://localhost:*` must not match `http://localhost:3000.evil.com`
(whose "port" is not a number, so it is no origin at all).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import header, protected, send_error

ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = b"Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
EXPOSE_HEADERS = b"Retry-After, WWW-Authenticate, Content-Disposition"


class OriginParts(NamedTuple):
    scheme: str
    host: str
    port: str  # "" for the scheme's default


def split_origin(origin: str, *, pattern: bool = False) -> OriginParts | None:
    """`scheme://host[:port]` in parts; None when it is not an origin (a pattern may glob host/port)."""
    scheme, sep, rest = origin.lower().partition("://")
    if not sep or not scheme or "/" in rest or "@" in rest or not rest:
        return None
    if rest.startswith("["):  # an IPv6 literal
        end = rest.find("]")
        if end < 0:
            return None
        host, tail = rest[: end + 1], rest[end + 1 :]
        if tail and not tail.startswith(":"):
            return None
        port = tail[1:] if tail else ""
    else:
        host, _, port = rest.partition(":")
        if ":" in port:
            return None
    if not host or (port and not (port.isdigit() or (pattern and set(port) <= set("0123456789*?")))):
        return None
    return OriginParts(scheme, host, port)


def origin_matches(origin: OriginParts, pattern: OriginParts) -> bool:
    return (
        origin.scheme == pattern.scheme
        and fnmatchcase(origin.host, pattern.host)
        and (origin.port == pattern.port or (bool(origin.port) and fnmatchcase(origin.port, pattern.port)))
    )


class CorsMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.any = "*" in allowed_origins
        self.patterns = tuple(
            p for p in (split_origin(o.strip(), pattern=True) for o in allowed_origins) if p is not None
        )

    def allowed(self, origin: str, scope: Scope) -> bool:
        parts = split_origin(origin)
        if parts is None:
            return False
        host = header(scope, b"host")
        if host and origin.lower() == f"{scope.get('scheme', 'http')}://{host.lower()}":
            return True
        return self.any or any(origin_matches(parts, pattern) for pattern in self.patterns)

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
