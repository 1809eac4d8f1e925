"""Feed wake-ups over LISTEN/NOTIFY against a real server: a poke after a commit wakes a waiter, a
burst of pokes is coalesced into few NOTIFYs, and a waiter with nothing to hear times out (the
caller then polls: the feed query stays the truth)."""

from __future__ import annotations

import psycopg

from shared_store.postgres.feed import feed_head, feed_since
from shared_store.postgres.fence import append_unleased
from shared_store.postgres.wakeup import FeedNotifier, FeedWaiter
from tests.pg.fixtures import PgDatabase


def test_a_poke_after_a_commit_wakes_the_waiter(pg_db: PgDatabase) -> None:
    notifier = FeedNotifier(pg_db.url)
    waiter = FeedWaiter(pg_db.url)
    try:
        assert waiter.wait(0.2) is False, "nothing happened: the waiter times out (then polls)"
        with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at) "
                "VALUES ('r1', 'w', 'running', 'now', 'now')"
            )
            cursor = feed_head(conn)
            assert append_unleased(conn, "r1", b"x") == 1
            notifier.poke()
            assert waiter.wait(60) is True
            entries, _ = feed_since(conn, cursor)
            assert [(e.run_id, e.ledger_len) for e in entries] == [("r1", 1)]
    finally:
        waiter.close()
        notifier.close()
    assert notifier.errors == 0


def test_a_burst_of_pokes_is_a_few_notifies(pg_db: PgDatabase) -> None:
    notifier = FeedNotifier(pg_db.url)
    waiter = FeedWaiter(pg_db.url)
    try:
        for _ in range(2_000):
            notifier.poke()
        assert waiter.wait(60) is True
        # Let the sender finish what the burst asked for, then count (no timing asserted).
        while waiter.wait(0.5):
            pass
        assert 1 <= notifier.sent <= 100, notifier.sent
    finally:
        waiter.close()
        notifier.close()
