"""A per-process cap on in-flight /api/gateway requests (429 beyond it); SSE streams have their own."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from . import protected, send_error

RETRY = [(b"retry-after", b"1")]


def is_stream(scope: Scope) -> bool:
    return scope["path"].endswith("/ledger/stream")


class ConcurrencyMiddleware:
    def __init__(self, app: ASGIApp, max_requests: int) -> None:
        self.app = app
        self.max_requests = max_requests
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not protected(scope) or is_stream(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            await send_error(
                scope, send, 429, f"too many concurrent requests (max {self.max_requests}); retry", RETRY
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
