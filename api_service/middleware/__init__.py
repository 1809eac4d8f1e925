"""Pure ASGI middleware guarding /api/gateway/* (one concern per module).

Order, outermost first: front (one layer for the client address a request comes from, with
X-Forwarded-For from trusted proxies only; its request id; the Host allowlist, loopback names only
without auth; the audit line of every write, even refused ones; its metrics and log line: client,
hosts, audit and observe hold those), cors (origin allowlist and preflight), auth (lockout, bearer
token, scopes' caller), concurrency (429, per process and per client), body_limit (413, and 408 for a
body read too slowly).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from starlette.types import Scope, Send

PROTECTED = "/api/gateway"


def protected(scope: Scope) -> bool:
    """An HTTP request under /api/gateway/ (health, /openapi.json and /docs are open)."""
    if scope["type"] != "http":
        return False
    path: str = scope["path"]
    return path == PROTECTED or path.startswith(PROTECTED + "/")


HEADERS_KEY = "gateway.headers"


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (names are lower case in ASGI). The layers ask ~7 times a
    request: the header list is made a dict once (first value wins), not scanned each time."""
    headers: dict[bytes, bytes] | None = scope.get(HEADERS_KEY)
    if headers is None:
        headers = scope[HEADERS_KEY] = dict(reversed(scope["headers"]))
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


CLIENT_KEY = "gateway.client_ip"


def client_ip(scope: Scope) -> str:
    """The client's address: the peer, or what a trusted proxy forwarded (middleware.client)."""
    resolved = scope.get(CLIENT_KEY)
    if resolved:
        return str(resolved)
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def send_error(
    scope: Scope, send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON error answered before the app ran. A request body left unread would be parsed as the
    next request on a kept-alive connection: such a connection is closed after the answer."""
    body = msgspec.json.encode({"detail": detail})
    has_body = (
        header(scope, b"transfer-encoding") is not None or (header(scope, b"content-length") or "0") != "0"
    )
    if has_body and not any(name == b"connection" for name, _ in headers):
        headers = [*headers, (b"connection", b"close")]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
