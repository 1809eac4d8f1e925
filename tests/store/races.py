"""What the race tests on both backends share: real threads started together, a takeover made to
overlap another writer (`db.group()` holds the taker's transaction open), and, on PostgreSQL, seeing
that writer wait on a lock (pg_locks, read fresh on every call). Counts, never durations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from abstractruntime.core.models import RunState

from shared_store import LeaseHolder
from shared_store.run_store import SqliteRunStore

TIMEOUT_S = 120  # a bound for a stuck thread, never a measure


def due_runs(db, n: int, prefix: str = "run") -> list[str]:
    store = SqliteRunStore(db)
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for run_id in ids:
        store.save(RunState.new(workflow_id="w@1:f", entry_node="start", run_id=run_id))  # due now
    return ids


def together(targets: list[Callable[[], Any]]) -> list[Any]:
    """Run the targets in threads started together; their results (an exception is re-raised)."""
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(i: int, target: Callable[[], Any]) -> None:
        try:
            barrier.wait(TIMEOUT_S)
            results[i] = target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    if errors:
        raise errors[0]
    return results


def take_over(holder: LeaseHolder, run_id: str) -> int:
    """Claim `run_id` once its previous (1 ms) lease has expired on the backend's clock; its epoch."""
    for _ in range(2_000):
        leases = [lease for lease in holder.claim(1) if lease.run_id == run_id]
        if leases:
            return leases[0].epoch
        time.sleep(0.005)
    raise AssertionError(f"{holder.owner} never took {run_id} over")


def lock_waiters(db) -> int | None:
    """Sessions waiting for a lock right now (PostgreSQL; None on SQLite, whose writers wait in a
    busy handler). pg_locks is read fresh on every call, also inside a transaction."""
    if db.backend != "postgresql":
        return None
    row = db.query_one("SELECT count(*) FROM pg_locks WHERE NOT granted")
    return int(row[0]) if row else 0


def until_blocked(db, thread: threading.Thread) -> None:
    """With the takeover still uncommitted: the stale writer cannot have finished (it waits for the
    taker's lock); on PostgreSQL, wait until it is seen waiting on that lock."""
    if lock_waiters(db) is not None:
        for _ in range(3_000):
            if lock_waiters(db):
                break
            time.sleep(0.01)
        assert lock_waiters(db), "the second writer waits on the first one's lock"
    thread.join(0.2)
    assert thread.is_alive(), "the stale write did not go through while the takeover was open"
