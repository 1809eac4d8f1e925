"""A per-process cap on in-flight /api/gateway requests (429 beyond it), and a smaller one per client
address, so one client cannot take every slot; SSE streams have their own caps (routes/ledger.py)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..quotas import Quota
from . import client_ip, protected, send_error

RETRY = [(b"retry-after", b"1")]


def is_stream(scope: Scope) -> bool:
    return scope["path"].endswith("/ledger/stream")


class ConcurrencyMiddleware:
    def __init__(self, app: ASGIApp, max_requests: int, max_per_client: int | None = None) -> None:
        self.app = app
        self.max_requests = max_requests
        self.in_flight = 0
        self.per_client = Quota(max_per_client or max_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not protected(scope) or is_stream(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            await send_error(
                scope, send, 429, f"too many concurrent requests (max {self.max_requests}); retry", RETRY
            )
            return
        client = client_ip(scope)
        if not self.per_client.try_acquire(client):
            await send_error(
                scope,
                send,
                429,
                f"too many concurrent requests from this client (max {self.per_client.cap}); retry",
                RETRY,
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.per_client.release(client)
