"""Live ledger delivery: one poller per API process fans new records out to every SSE subscriber.

The poller asks the store's change feed what changed since its cursor (no query at all while nothing
committed), reads each watched run's new records once, builds each SSE frame once, and puts the same
bytes in every subscriber's bounded queue. It never waits on a subscriber: a client whose queue is
full is closed (it resumes with Last-Event-ID), so a slow client cannot slow the others.

`done` is sent once a run is terminal and its ledger is complete: abstractruntime saves the terminal
state and then appends a closing `abstract.status` record, so the hub waits for that record (or for
`done_grace_s`, for a run that ended without one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from shared_store.db import Database
from shared_store.errors import StoreError
from shared_store.feed import ChangeFeed, FeedEntry
from shared_store.reads import ledger_page
from shared_store.run_views import RunProgress, client_status, ends_with_status_record, run_progress

from . import metrics
from .middleware import send_error
from .read_pool import pool as read_pool

log = logging.getLogger("abstractgateway.sse")

STEP, DONE = 0, 1
PAGE = 500
# PostgreSQL: the longest the hub waits for a NOTIFY before polling anyway (the fallback's latency).
PG_RECHECK_S = 0.25


def step_frame(seq: int, record: bytes) -> bytes:
    cursor = str(seq).encode()
    return b'id: %s\nevent: step\ndata: {"cursor":%s,"record":%s}\n\n' % (cursor, cursor, record)


def done_frame(status: str, cursor: int, run_id: str) -> bytes:
    # run_id as the original sends it (a client multiplexing streams reads which one ended).
    data = msgspec.json.encode({"status": status, "cursor": cursor, "run_id": run_id})
    return b"id: %d\nevent: done\ndata: %s\n\n" % (cursor, data)


class Subscriber:
    """One SSE client: the items (kind, ...) not yet written to it, at most `buffer`, and why it must
    end (`end`, a comment).

    A list and one future while its stream waits, not an asyncio.Queue: a Queue holds three deques
    and an Event's (~760 bytes each, empty), ~3.2 KB per stream, 16 MB at 5,000 streams (bench_api
    fan-out); this holds ~0.2 KB. The stream takes every item at once (one write), which a list
    does in one swap."""

    __slots__ = ("buffer", "end", "items", "run_id", "waiter")

    def __init__(self, run_id: str, buffer: int) -> None:
        self.run_id = run_id
        self.buffer = buffer
        self.items: list[tuple] = []
        self.waiter: asyncio.Future[bool] | None = None
        self.end: bytes | None = None

    def put(self, item: tuple) -> bool:
        """Queue an item for the stream; False (and nothing queued) when `buffer` items wait already."""
        if len(self.items) >= self.buffer:
            return False
        self.items.append(item)
        _wake(self.waiter, True)
        return True

    def take(self) -> list[tuple]:
        """Every queued item, oldest first; the queue is empty after."""
        items, self.items = self.items, []
        return items

    async def wait(self, timeout: float) -> bool:
        """Until an item is queued or `end` is set (True), or `timeout` seconds pass (False)."""
        if self.items or self.end is not None:
            return True
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def close(self, comment: str) -> None:
        if self.end is None:
            self.end = f": {comment}\n\n".encode()
        _wake(self.waiter, True)  # a stream waiting on an empty queue sees `end` at once


def _wake(waiter: asyncio.Future[bool] | None, value: bool) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(value)


@dataclass
class RunTrack:
    """What the hub has broadcast for one watched run."""

    ledger_len: int
    status: str
    terminal: bool
    final: bool = False
    terminal_since: float | None = None
    subscribers: set[Subscriber] = field(default_factory=set)


class SseHub:
    def __init__(
        self,
        db: Database,
        *,
        poll_s: float = 0.01,
        buffer: int = 1_000,
        done_grace_s: float = 1.0,
        listen: bool = True,
    ) -> None:
        self.db = db
        self.feed = ChangeFeed(db, listen=listen)
        self.poll_s = poll_s
        self.buffer = buffer
        self.done_grace_s = done_grace_s
        self.runs: dict[str, RunTrack] = {}
        self.subscribers = 0
        self.closed = False
        self._cursor = 0
        self._last_poll = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # PostgreSQL with LISTEN: wait for a wake-up between polls; without (a pooling proxy): poll.
        self._listens = listen and db.backend == "postgresql"
        self._found = False

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._cursor = self.feed.head()
        self._task = asyncio.get_running_loop().create_task(self._poll_loop(), name="sse-poller")

    def close(self, comment: str = "server shutting down; reconnect with Last-Event-ID") -> None:
        """End every stream with a final comment and stop polling (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for track in self.runs.values():
            for sub in track.subscribers:
                sub.close(comment)
        self._wake.set()

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.feed.close()

    # --- subscriptions ---------------------------------------------------------------------------------
    def subscribe(self, run_id: str, progress: RunProgress) -> tuple[Subscriber, RunTrack]:
        """Watch a run; `progress` is the run's row read just before (no await in between)."""
        track = self.runs.get(run_id)
        if track is None:
            track = RunTrack(progress.ledger_len, progress.status, progress.terminal)
            self.runs[run_id] = track
            if progress.terminal:
                self._check_final(run_id, track, ended_at=progress.updated_at)
        sub = Subscriber(run_id, self.buffer)
        track.subscribers.add(sub)
        self.subscribers += 1
        metrics.SSE_SUBSCRIBERS.inc()
        self._wake.set()
        if self.closed:
            sub.close("server shutting down")
        return sub, track

    def unsubscribe(self, sub: Subscriber) -> None:
        track = self.runs.get(sub.run_id)
        if track is None or sub not in track.subscribers:
            return
        track.subscribers.discard(sub)
        self.subscribers -= 1
        metrics.SSE_SUBSCRIBERS.dec()
        if not track.subscribers:
            del self.runs[sub.run_id]

    # --- polling ---------------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while not self.closed:
            try:
                self.poll_once()
            except StoreError as exc:  # the db may come back; streams keep their cursors meanwhile
                log.warning("change feed poll failed: %s", exc)
            except Exception:
                log.exception("change feed poll crashed; polling on")
            if self.runs and self._listens:
                # PostgreSQL: a poll is a round trip to the server; wait (in a thread) for a NOTIFY
                # that something committed, polling every PG_RECHECK_S when none comes (a
                # transaction-pooling proxy passes no LISTEN). A wake-up that brought nothing
                # for our runs waits poll_s before the next one (no spinning on others' commits).
                woken = await anyio.to_thread.run_sync(self.feed.wait, PG_RECHECK_S, abandon_on_cancel=True)
                if woken and not self._found:
                    await asyncio.sleep(self.poll_s)
            elif self.runs:
                await asyncio.sleep(self.poll_s)
            else:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(self.poll_s, 0.25))

    def poll_once(self) -> None:
        """Read what changed since the cursor and broadcast it to the watched runs."""
        self._found = False
        while True:
            entries, self._cursor = self.feed.poll(self._cursor)
            if entries:  # a change read now committed at most this long ago (metrics)
                metrics.FEED_LAG.set(time.monotonic() - self._last_poll)
            for entry in entries:
                track = self.runs.get(entry.run_id)
                if track is not None:
                    self._found = True
                    self._advance(entry, track)
            if len(entries) < 10_000:
                break
        now = self._last_poll = time.monotonic()
        for track in list(self.runs.values()):
            since = track.terminal_since
            if since is not None and not track.final and now - since >= self.done_grace_s:
                self._finish(track)

    def _advance(self, entry: FeedEntry, track: RunTrack) -> None:
        while entry.ledger_len > track.ledger_len:
            page = ledger_page(self.db, entry.run_id, after=track.ledger_len, limit=PAGE)
            if not page.records:
                break
            first = track.ledger_len + 1
            for offset, record in enumerate(page.records):
                self._broadcast(track, (STEP, first + offset, step_frame(first + offset, record)))
            track.ledger_len = page.next_after
        if entry.status in ("completed", "failed", "cancelled"):
            if not track.terminal:
                progress = run_progress(self.db, entry.run_id)
                track.status = progress.status if progress else entry.status
                track.terminal = True
            self._check_final(entry.run_id, track)
        else:
            track.status = client_status(entry.status, False)

    def _check_final(self, run_id: str, track: RunTrack, *, ended_at: str | None = None) -> None:
        if track.final:
            return
        if ends_with_status_record(self.db, run_id, track.ledger_len) or _older_than(
            ended_at, self.done_grace_s
        ):
            self._finish(track)
        elif track.terminal_since is None:
            track.terminal_since = time.monotonic()

    def _finish(self, track: RunTrack) -> None:
        track.final = True
        self._broadcast(track, (DONE, track.status, track.ledger_len))

    def _broadcast(self, track: RunTrack, item: tuple) -> None:
        for sub in track.subscribers:
            if sub.end is not None:
                continue
            if not sub.put(item):
                sub.close("client fell behind; reconnect with Last-Event-ID to resume")


def _older_than(iso: str | None, seconds: float) -> bool:
    if not iso:
        return False
    try:
        stamp = datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return True
    return time.time() - stamp >= seconds


class EventStream:
    """The ASGI response of one SSE subscription: catch up from the db, then follow the hub."""

    def __init__(
        self,
        hub: SseHub,
        run_id: str,
        *,
        after: int,
        heartbeat_s: float,
        retry_ms: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.run_id = run_id
        self.cursor = after
        self.heartbeat_s = heartbeat_s
        self.retry_ms = retry_ms
        self.on_close = on_close  # gives back the stream's quota (reserved by the route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read the run's row and subscribe with no await in between: the poller cannot run in the
        # gap, so every change after this read reaches the subscription.
        progress = run_progress(self.hub.db, self.run_id)
        if progress is None:
            await send_error(scope, send, 404, f"Run '{self.run_id}' not found")
            return
        sub, track = self.hub.subscribe(self.run_id, progress)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
            await send(
                {"type": "http.response.body", "body": b"retry: %d\n\n" % self.retry_ms, "more_body": True}
            )
            # The client's disconnect cancels the pump: the watcher raises ClientGone, and the task
            # group cancels its body. asyncio's TaskGroup, not anyio's: anyio's group and cancel
            # scope held ~2.4 KB more per stream (12 MB at 5,000 streams, bench_api fan-out).
            try:
                async with asyncio.TaskGroup() as group:
                    watcher = group.create_task(_raise_on_disconnect(receive))
                    await self._pump(send, sub, track)
                    watcher.cancel()
            except* ClientGone:
                pass
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.hub.unsubscribe(sub)

    async def _pump(self, send: Send, sub: Subscriber, track: RunTrack) -> None:
        await self._fill(send, track.ledger_len)
        if track.final and self.cursor >= track.ledger_len:
            await _body(send, done_frame(track.status, track.ledger_len, self.run_id))
            return
        while True:
            if sub.end is not None:
                await _body(send, sub.end)
                return
            if not sub.items and not await sub.wait(self.heartbeat_s):
                await _body(send, b": keepalive\n\n")
                continue
            if await self._send_items(send, sub.take()):  # everything queued goes out in one write
                return

    async def _send_items(self, send: Send, items: list[tuple]) -> bool:
        """Write queued items in order; True once `done` was sent."""
        out: list[bytes] = []
        for item in items:
            kind = item[0]
            if kind == STEP:
                seq = item[1]
                if seq <= self.cursor:
                    continue  # already sent while catching up
                if seq > self.cursor + 1:  # a gap the queue did not carry: read it from the db
                    await _flush(send, out)
                    await self._fill(send, seq - 1)
                out.append(item[2])
                self.cursor = seq
            elif kind == DONE:
                await _flush(send, out)
                await self._fill(send, item[2])
                await _body(send, done_frame(item[1], max(self.cursor, item[2]), self.run_id))
                return True
        await _flush(send, out)
        return False

    async def _fill(self, send: Send, upto: int) -> None:
        """Send records (cursor, upto] from the db: the backlog, or a gap the queue did not carry."""
        while self.cursor < upto:
            # Off the event loop: a backlog page of large records must not stall every other stream.
            page = await read_pool.submit(
                functools.partial(
                    ledger_page,
                    self.hub.db,
                    self.run_id,
                    after=self.cursor,
                    limit=min(PAGE, upto - self.cursor),
                )
            )
            if not page.records:
                return
            first = self.cursor + 1
            await _body(send, b"".join(step_frame(first + i, r) for i, r in enumerate(page.records)))
            self.cursor = page.next_after


STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _flush(send: Send, frames: list[bytes]) -> None:
    if frames:
        await _body(send, b"".join(frames))
        frames.clear()


class ClientGone(Exception):
    """The SSE client disconnected (ends its stream's task group)."""


async def _raise_on_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
