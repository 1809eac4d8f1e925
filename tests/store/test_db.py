"""Connections, busy handling and the runners table."""

from __future__ import annotations

import threading
from pathlib import Path

import apsw
import pytest

from shared_store import Database, StoreBusy, migrate
from shared_store.db import BusyPolicy
from shared_store.runners import live_runners, register_runner, runner_heartbeat, runner_stopped


def _hold_write_lock(path: Path) -> apsw.Connection:
    other = apsw.Connection(str(path))
    other.execute("BEGIN IMMEDIATE")
    return other


def test_writer_waits_for_the_lock_then_proceeds(db_path: Path) -> None:
    db = Database(db_path)
    migrate(db)
    blocker = _hold_write_lock(db_path)
    calls: list[int] = []
    handler = db.busy.handler()

    def counting(prior: int) -> bool:
        calls.append(prior)
        if prior == 5:
            blocker.execute("COMMIT")  # the other writer finishes while we wait
        return handler(prior)

    db.connection().set_busy_handler(counting)
    with db.write() as conn:
        conn.execute(
            "INSERT INTO runners (runner_id, host, pid, version, started_at, heartbeat_at) VALUES ('r', 'h', 1, 'v', 'now', 0)"
        )
    assert calls[:6] == [0, 1, 2, 3, 4, 5], "retried, then got the lock"
    assert db.query_one("SELECT count(*) FROM runners") == (1,)


def test_writer_gives_up_with_store_busy_past_the_deadline(db_path: Path) -> None:
    db = Database(db_path, busy=BusyPolicy(deadline_s=0.05))
    migrate(db)
    blocker = _hold_write_lock(db_path)
    with pytest.raises(StoreBusy, match="stayed locked"), db.write() as conn:
        conn.execute("DELETE FROM runners")
    blocker.execute("ROLLBACK")
    with db.write() as conn:  # usable again once the lock is free
        conn.execute("DELETE FROM runners")


def test_connections_are_per_thread(db) -> None:
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(db.connection()))
    thread.start()
    thread.join()
    assert seen[0] is not db.connection()


def test_a_released_connection_serves_the_next_thread_that_asks(db) -> None:
    """serve's start-up thread releases its connection when it turns to the event loop. SQLite hands
    it, as it is, to the next thread that asks (no other connection opened for it); PostgreSQL
    closes it and frees its pool slot. Either way the store keeps working for every thread."""
    db.release_connection()  # none yet: nothing to release
    mine = db.connection()
    db.query_one("SELECT 1")
    db.release_connection()
    seen: list[object] = []

    def reader() -> None:
        seen.append(db.connection())
        seen.append(db.query_one("SELECT count(*) FROM runs"))

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    if db.backend == "sqlite":
        assert seen[0] is mine
    else:
        assert seen[0] is not mine and mine.raw.closed
    assert tuple(seen[1]) == (0,)
    again = db.connection()  # this thread asks again: a connection of its own, not the reader's
    assert again is not seen[0] and again is not mine
    assert tuple(db.query_one("SELECT count(*) FROM runs")) == (0,)


def test_a_released_writer_connection_reads_through_the_map_again(db_path: Path) -> None:
    """The API's connections write with no memory map (write_mmap_bytes=0) and read through one:
    start-up writes (migrations, the flows dir), so the connection it releases gets the read window
    back before a read thread takes it."""
    from shared_store.db import ConnectionSizes

    db = Database(db_path, sizes=ConnectionSizes(cache_kib=1_024, mmap_bytes=64 << 20, write_mmap_bytes=0))
    migrate(db)
    assert db.query_one("PRAGMA mmap_size") == (0,)  # this thread wrote: its window is the writer's
    db.release_connection()
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(db.query_one("PRAGMA mmap_size")))
    thread.start()
    thread.join()
    assert seen == [(64 << 20,)]
    with db.write() as conn:  # this thread's new connection writes: narrowed again
        conn.execute("DELETE FROM runners")
    assert db.query_one("PRAGMA mmap_size") == (0,)
    db.close()


def test_bad_synchronous_mode_is_refused(db_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Database(db_path, synchronous="SOMETIMES")


def test_runner_registry(db) -> None:
    register_runner(db, "runner-a", version="0.1.0", capabilities={"voice": {"tts": True}})
    register_runner(db, "runner-b", version="0.1.0")
    runner_heartbeat(db, "runner-a")
    runner_stopped(db, "runner-b")
    (live,) = live_runners(db)
    assert (live.runner_id, live.version, live.capabilities) == (
        "runner-a",
        "0.1.0",
        {"voice": {"tts": True}},
    )
    assert live_runners(db, within_s=-10) == [], "a stale heartbeat is not live"
