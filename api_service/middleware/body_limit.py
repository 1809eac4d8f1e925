"""Request bodies over the cap are refused with 413: by Content-Length up front, and by counting the
bytes as they arrive (a chunked body, or a Content-Length that lies). A body must also arrive within
`timeout_s` of the request's headers: one trickled a byte every 5 s once held a concurrency slot for a
minute; now it gets 408 and its connection is closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BodyTimeout, BodyTooLarge
from . import header, protected, send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.deadlines = Deadlines(timeout_s)

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
            message = await self.deadlines.receive(receive, deadline)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, counted, send)


class Deadlines:
    """Body reads waiting past their deadline are cancelled by one sweep every `tick` seconds.

    An `asyncio.timeout` around every body read armed and cancelled a loop timer per request (~7 us
    here); registering the waiting task in a dict costs well under 1 us. A read is cut off between
    its deadline and one tick later (tick = a quarter of the timeout, at most 1 s)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick = min(1.0, max(timeout_s / 4, 0.01))
        self.waiting: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def receive(self, receive: Receive, deadline: float) -> Message:
        task = asyncio.current_task()
        if task is None:  # not in a task (never under an ASGI server): no deadline to enforce
            return await receive()
        if time.monotonic() >= deadline:
            raise BodyTimeout(self.timeout_s)
        self.waiting[task] = deadline
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._loop is not loop:  # (an app served again on a new loop)
            self._loop = loop
            self._sweeper = loop.call_later(self.tick, self._sweep)
        try:
            return await receive()
        except asyncio.CancelledError:
            if task not in self.expired:
                raise  # cancelled by someone else (a disconnect, shutdown): not ours to turn into a 408
            self.expired.discard(task)
            task.uncancel()
            raise BodyTimeout(self.timeout_s) from None
        finally:
            self.waiting.pop(task, None)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for task, deadline in list(self.waiting.items()):
            if deadline <= now and task not in self.expired:
                self.expired.add(task)
                task.cancel()
        if self.waiting and self._loop is not None:
            self._sweeper = self._loop.call_later(self.tick, self._sweep)
