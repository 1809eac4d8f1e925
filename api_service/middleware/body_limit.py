"""Request bodies over the cap are refused with 413: by Content-Length up front, and by counting the
bytes as they arrive (a chunked body, or a Content-Length that lies). A body must also arrive within
`timeout_s` of the request's headers: one trickled a byte every 5 s once held a concurrency slot for a
minute; now it gets 408 and its connection is closed."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BodyTimeout, BodyTooLarge
from . import header, protected, send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not protected(scope):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await send_error(
                scope,
                send,
                413,
                f"request body exceeds the {self.max_bytes} byte limit",
                [(b"connection", b"close")],
            )
            return
        seen = 0
        complete = False
        deadline = time.monotonic() + self.timeout_s

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:  # after the body only a disconnect can come: an SSE stream waits for it
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, counted, send)
