"""The change feed: one cheap poll tells which runs changed since a cursor."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from abstractruntime.core.models import RunState, StepRecord

from shared_store import ChangeFeed
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore


def _append(db, run: RunState, n: int) -> None:
    ledger = SqliteLedgerStore(db)
    for _ in range(n):
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))


def test_poll_reports_runs_with_new_records(db) -> None:
    runs = SqliteRunStore(db)
    a = RunState.new(workflow_id="w", entry_node="n", run_id="a")
    b = RunState.new(workflow_id="w", entry_node="n", run_id="b")
    runs.save(a)
    runs.save(b)
    feed = ChangeFeed(db)
    cursor = feed.head()
    _append(db, a, 3)
    entries, cursor = feed.poll(cursor)
    assert [(e.run_id, e.ledger_len) for e in entries] == [("a", 3)], "one entry per run, latest length"
    _append(db, b, 1)
    _append(db, a, 1)
    entries, cursor = feed.poll(cursor)
    assert [(e.run_id, e.ledger_len) for e in entries] == [("b", 1), ("a", 4)]
    assert feed.poll(cursor) == ([], cursor)
    feed.close()


def test_idle_polls_skip_the_query(db, db_path: Path) -> None:
    runs = SqliteRunStore(db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id="a")
    runs.save(run)
    # recheck_s (PostgreSQL): a caught-up feed trusts LISTEN's silence this long; long enough here
    # that only a commit can make a poll query.
    feed = ChangeFeed(db, recheck_s=600)
    cursor = feed.head()
    feed.poll(cursor)
    # Wake-ups for commits made before the feed existed (the save's NOTIFY) may still be on their way.
    while feed.wait(0.3):
        feed.poll(cursor)
    ran = feed.queries
    for _ in range(50):
        assert feed.poll(cursor) == ([], cursor)
    assert feed.queries == ran, "no commit, no query"
    # A commit from another process is seen on the next poll (after its wake-up).
    target = getattr(db, "url", str(db_path))
    script = textwrap.dedent(
        f"""
        from abstractruntime.core.models import RunState, StepRecord
        from shared_store import open_database
        from shared_store.ledger_store import SqliteLedgerStore
        db = open_database({target!r})
        run = RunState.new(workflow_id="w", entry_node="n", run_id="a")
        SqliteLedgerStore(db).append(StepRecord.start(run=run, node_id="n", effect=None))
        db.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert feed.wait(60) is True, "the other process's commit wakes a waiting feed"
    entries, cursor = feed.poll(cursor)
    assert [(e.run_id, e.ledger_len) for e in entries] == [("a", 1)]
    assert feed.queries == ran + 1
    feed.close()


def test_state_changes_show_in_the_feed(db) -> None:
    runs = SqliteRunStore(db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id="a")
    runs.save(run)
    feed = ChangeFeed(db)
    cursor = feed.head()
    run.status = run.status.COMPLETED
    runs.save(run)
    entries, _ = feed.poll(cursor)
    assert [(e.run_id, e.status) for e in entries] == [("a", "completed")]
    feed.close()


def test_poll_pages_through_a_backlog(db) -> None:
    runs = SqliteRunStore(db)
    for i in range(25):
        runs.save(RunState.new(workflow_id="w", entry_node="n", run_id=f"r{i:02d}"))
    feed = ChangeFeed(db)
    seen: list[str] = []
    cursor = 0
    while True:
        entries, cursor = feed.poll(cursor, limit=10)
        if not entries:
            break
        seen.extend(e.run_id for e in entries)
    assert seen == [f"r{i:02d}" for i in range(25)]
    feed.close()
