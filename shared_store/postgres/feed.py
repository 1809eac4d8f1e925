"""The change feed on PostgreSQL, in commit order: the cursor is (feed_xid, feed_seq) and a poll reads
only rows written by transactions older than every transaction still running, so a transaction that
commits late is delivered after the ones that committed before it instead of being skipped
(statements.FEED_SINCE). An open transaction holds the feed back until it ends: the server's
idle_in_transaction_session_timeout bounds that for a cut-off client.

This is the truth a poller reads; LISTEN/NOTIFY (a later step) only says when to poll."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import statements as s

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True, order=True)
class FeedCursor:
    xid: int
    seq: int


@dataclass(frozen=True)
class PgFeedEntry:
    cursor: FeedCursor
    run_id: str
    ledger_len: int
    status: str


def feed_head(conn: psycopg.Connection) -> FeedCursor:
    """The position to subscribe from: only what commits from now on comes after it."""
    row = conn.execute(s.FEED_HEAD).fetchone()
    assert row is not None
    return FeedCursor(int(row[0]), 0)


def feed_since(
    conn: psycopg.Connection, cursor: FeedCursor, *, limit: int = 10_000
) -> tuple[list[PgFeedEntry], FeedCursor]:
    """Entries after `cursor` in commit order, and the next cursor."""
    rows = conn.execute(s.FEED_SINCE, {"xid": str(cursor.xid), "seq": cursor.seq, "n": limit}).fetchall()
    entries = [PgFeedEntry(FeedCursor(int(x), int(q)), str(r), int(n), str(st)) for x, q, r, n, st in rows]
    return entries, (entries[-1].cursor if entries else cursor)
