"""The API's one writer thread, committing the writes that queue up meanwhile as one transaction.

SQLite commits one writer at a time and a commit costs a WAL write + sync: under concurrent requests,
one transaction for every write queued meanwhile (group commit) turns N commits into one. Each write
runs in its own savepoint, so a failing one is rolled back alone; a request is answered only after
the group committed (a 2xx still means durable).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared_store.db import Database

MAX_GROUP = 64


@dataclass
class _Write:
    db: Database
    call: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class GroupWriter:
    def __init__(self, max_group: int = MAX_GROUP) -> None:
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.groups = 0  # transactions committed (writes / groups = the batching achieved)
        self.writes = 0

    def submit(self, db: Database, call: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_thread()
        self._queue.put(_Write(db, call, loop, future))
        return future

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return  # the usual case, without taking the lock on every write
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="api-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_group:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_db: dict[int, list[_Write]] = {}
            for write in batch:
                by_db.setdefault(id(write.db), []).append(write)
            for writes in by_db.values():
                self._commit(writes)

    def _commit(self, writes: list[_Write]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        db = writes[0].db
        if len(writes) == 1:
            # Alone in its group (every write at concurrency 1): its own transaction, rolled back
            # alone anyway; a savepoint would be one SAVEPOINT and one RELEASE more.
            try:
                with db.write():
                    value = writes[0].call()
                outcome: tuple[bool, Any] = (True, value)
            except BaseException as exc:  # the write or its commit failed: not durable
                outcome = (False, exc)
            self._settle(writes, [outcome])
            return
        try:
            with db.group():
                for write in writes:
                    try:
                        with db.write():  # a savepoint: this write alone rolls back if it raises
                            outcomes.append((True, write.call()))
                    except Exception as exc:
                        outcomes.append((False, exc))
        except BaseException as exc:  # the commit itself failed: no write of the group is durable
            outcomes = [(False, exc)] * len(writes)
        self._settle(writes, outcomes)

    def _settle(self, writes: list[_Write], outcomes: list[tuple[bool, Any]]) -> None:
        self.groups += 1
        self.writes += len(writes)
        for write, (ok, value) in zip(writes, outcomes, strict=True):
            write.loop.call_soon_threadsafe(_settle, write.future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
