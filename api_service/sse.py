"""Live ledger delivery: one poller per API process fans new records out to every SSE subscriber.

The poller asks the store's change feed what changed since its cursor (no query at all while nothing
committed), reads each watched run's new records once and builds each SSE frame once, all in a read
thread (sse_reads: no store read runs on the event loop), then puts the same bytes in every
subscriber's bounded queue; with nobody subscribed it reads nothing at all. It never waits on a
subscriber: a client whose queue is full is closed (it resumes with Last-Event-ID), so a slow client
cannot slow the others.

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
from shared_store.feed import ChangeFeed
from shared_store.reads import ledger_page
from shared_store.run_views import RunProgress

from . import metrics
from .read_pool import pool as read_pool
from .sse_reads import PAGE, PollRead, RunRead, Watch, read_changes, step_frame

log = logging.getLogger("abstractgateway.sse")

STEP, DONE = 0, 1
# PostgreSQL: the longest the hub waits for a NOTIFY before polling anyway (the fallback's latency).
PG_RECHECK_S = 0.25
# How long stop() lets the poller finish a read in flight before cancelling it.
STOP_WAIT_S = 5.0
# After a failed poll (the db unreachable, a bug): not a retry every poll_s, each one logged.
FAILED_POLL_WAIT_S = 0.25
FELL_BEHIND = "client fell behind; reconnect with Last-Event-ID to resume"


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


@dataclass(eq=False)
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
        # Tracks not polled since they were made: the next poll reads their runs' rows again.
        self._fresh: dict[str, RunTrack] = {}
        self.subscribers = 0
        self.closed = False
        # The feed position polled from; None: not known (at start, and whenever nobody watches, so
        # an idle hub reads nothing at all); the next poll starts at the head, every track fresh.
        self._cursor: int | None = None
        self._last_poll = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # PostgreSQL with LISTEN: wait for a wake-up between polls; without (a pooling proxy): poll.
        self._listens = listen and db.backend == "postgresql"
        self._found = False

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
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
            # The poller ends at its next turn; a read in flight finishes first, so the feed's
            # connection is not closed under it (nor reopened by it after close).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.feed.close()

    # --- subscriptions ---------------------------------------------------------------------------------
    def subscribe(
        self, run_id: str, progress: RunProgress, complete: bool = False
    ) -> tuple[Subscriber, RunTrack]:
        """Watch a run; `progress` is the run's row as the stream read it and `complete` whether its
        ledger ended with the closing status record then (sse_reads.stream_start)."""
        track = self.runs.get(run_id)
        if track is None:
            track = RunTrack(progress.ledger_len, progress.status, progress.terminal)
            if progress.terminal and (complete or _older_than(progress.updated_at, self.done_grace_s)):
                self._finish(track)  # complete: nothing can follow, no poll needs to read it again
            else:
                self._fresh[run_id] = track
            self.runs[run_id] = track
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
            if self._fresh.get(sub.run_id) is track:
                del self._fresh[sub.run_id]

    # --- polling ---------------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while not self.closed:
            if not self.runs:
                # Nobody watches: no reads until someone does (the feed position is then read anew).
                self._cursor = None
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                snapshot = self._snapshot()
                self._apply(snapshot, await read_pool.submit(functools.partial(self._read, snapshot)))
            except StoreError as exc:  # the db may come back; streams keep their cursors meanwhile
                log.warning("change feed poll failed: %s", exc)
                await asyncio.sleep(FAILED_POLL_WAIT_S)
            except Exception:
                log.exception("change feed poll crashed; polling on")
                await asyncio.sleep(FAILED_POLL_WAIT_S)
            if self._fresh:
                await asyncio.sleep(0)  # subscribed during the poll: read them at once
            elif self._listens:
                # PostgreSQL: a poll is a round trip to the server; wait (in a thread) for a NOTIFY
                # that something committed, polling every PG_RECHECK_S when none comes (a
                # transaction-pooling proxy passes no LISTEN). A wake-up that brought nothing
                # for our runs waits poll_s before the next one (no spinning on others' commits).
                woken = await anyio.to_thread.run_sync(self.feed.wait, PG_RECHECK_S, abandon_on_cancel=True)
                if woken and not self._found:
                    await asyncio.sleep(self.poll_s)
            else:
                await asyncio.sleep(self.poll_s)

    def poll_once(self) -> None:
        """One poll with its reads in the calling thread (the poller reads in a read thread)."""
        snapshot = self._snapshot()
        self._apply(snapshot, self._read(snapshot))

    def _snapshot(self) -> _Snapshot:
        return self._cursor, dict(self.runs), [_watch(r, t, fresh=True) for r, t in self._fresh.items()]

    def _read(self, snapshot: _Snapshot) -> PollRead:
        cursor, tracks, fresh = snapshot
        return read_changes(
            self.db,
            self.feed,
            cursor,
            watched=tracks,
            watch_of=lambda run_id: _watch(run_id, tracks[run_id], fresh=False),
            fresh=fresh,
            max_records=self.buffer,
        )

    def _apply(self, snapshot: _Snapshot, result: PollRead) -> None:
        """Broadcast what the poll read (on the loop; no store access). A track unsubscribed meanwhile
        (or replaced by a new one, which is fresh) is left alone."""
        _, tracks, _ = snapshot
        self._cursor = result.cursor
        now = time.monotonic()
        if result.entries:  # a change read now committed at most this long ago (metrics)
            metrics.FEED_LAG.set(now - self._last_poll)
        self._last_poll = now
        self._found = False
        for read in result.runs:
            track = self.runs.get(read.run_id)
            if track is None or track is not tracks[read.run_id]:
                continue
            self._found = self._found or read.changed
            if read.fresh and self._fresh.get(read.run_id) is track:
                del self._fresh[read.run_id]
            self._advance(track, read)
        for track in list(self.runs.values()):
            since = track.terminal_since
            if since is not None and not track.final and now - since >= self.done_grace_s:
                self._finish(track)

    def _advance(self, track: RunTrack, read: RunRead) -> None:
        if read.overflow and read.to_len > track.ledger_len:
            for sub in track.subscribers:  # each would overflow its queue anyway: end them now
                sub.close(FELL_BEHIND)
        for seq, frame in read.frames:
            if seq > track.ledger_len:
                self._broadcast(track, (STEP, seq, frame))
        track.ledger_len = max(track.ledger_len, read.to_len)
        if read.terminal:
            if not track.terminal:
                track.status = read.status or track.status
                track.terminal = True
            if track.final:
                return
            if read.complete or _older_than(read.ended_at, self.done_grace_s):
                self._finish(track)
            elif track.terminal_since is None:
                track.terminal_since = time.monotonic()
        elif read.status is not None:
            track.status = read.status

    def _finish(self, track: RunTrack) -> None:
        track.final = True
        self._broadcast(track, (DONE, track.status, track.ledger_len))

    def _broadcast(self, track: RunTrack, item: tuple) -> None:
        for sub in track.subscribers:
            if sub.end is not None:
                continue
            if not sub.put(item):
                sub.close(FELL_BEHIND)


# A poll's view when it began: the feed position, the tracks, and the fresh ones as the read sees them.
_Snapshot = tuple[int | None, dict[str, RunTrack], list[Watch]]


def _watch(run_id: str, track: RunTrack, *, fresh: bool) -> Watch:
    return Watch(run_id, track.ledger_len, track.terminal, track.final, fresh)


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
        start: tuple[RunProgress, bool],
        *,
        after: int,
        heartbeat_s: float,
        retry_ms: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.run_id = run_id
        self.start = start  # the run's row, and whether its ledger was complete (read off the loop)
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
        # The row was read in a thread before: what committed since reaches the subscription
        # anyway, as a new track's first poll reads its row again (sse_reads).
        sub, track = self.hub.subscribe(self.run_id, *self.start)
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
