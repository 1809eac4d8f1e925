"""The threads that run the API's store reads, so no read ever runs on the event loop.

Every read leaves the loop (a slow one must not stall every stream and request on it), so the hop is
paid by every read request: through `anyio.to_thread.run_sync` it cost ~86 us a call here (a capacity
limiter, a cancel scope and a run-var lookup per call), ~51 us through `loop.run_in_executor`, ~18 us
through this pool (one queue put, one `call_soon_threadsafe`; measured with a no-op call on uvloop).

Threads start as reads need them (a new one only when none is idle), up to `max_threads`; beyond that
reads queue. A read runs in a copy of the caller's context (the request id of its log lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
# Each thread holds its own SQLite connection (schema, page cache, a malloc arena): ~0.5-1 MB of RSS
# apiece once used. At 32, bursts of concurrent reads (16 clients, SSE subscribers catching up) grew
# the pool to as many threads, and serve's peak RSS with them (bench_api: 69 -> 96 MB during writes).
# Reads are short and the process has one GIL: 4 threads keep a slow read from stalling the others
# without paying for threads that cannot run at once anyway.
MAX_THREADS = 4

_Item = tuple[contextvars.Context, Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class ReadPool:
    def __init__(self, max_threads: int = MAX_THREADS, *, name: str = "api-read") -> None:
        self.max_threads = max_threads
        self.name = name
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by a thread each time it waits for work
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Run `call()` in a pool thread; the returned future settles on the caller's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((contextvars.copy_context(), call, loop, future))
        if not self._idle.acquire(blocking=False):
            self._grow()
        return future

    def _grow(self) -> None:
        with self._lock:
            if self._threads >= self.max_threads:
                return
            self._threads += 1
        threading.Thread(target=self._run, name=f"{self.name}-{self._threads}", daemon=True).start()

    def _run(self) -> None:
        while True:
            context, call, loop, future = self._queue.get()
            try:
                outcome: tuple[bool, Any] = (True, context.run(call))
            except BaseException as exc:  # handed to the awaiting request, never lost with the thread
                outcome = (False, exc)
            # RuntimeError: the loop closed meanwhile (a server stopped), nobody awaits this read.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, outcome)
            del context, call, future, outcome  # no reference kept while waiting for the next read
            self._idle.release()


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.cancelled():  # the request went away (client disconnect, deadline)
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


pool = ReadPool()
