"""The change feed on PostgreSQL, in commit order: the cursor is (feed_xid, feed_seq) and a poll reads
only rows written by transactions older than every transaction still running, so a transaction that
commits late is delivered after the ones that committed before it instead of being skipped
(statements.FEED_SINCE). An open transaction holds the feed back until it ends: the server's
idle_in_transaction_session_timeout bounds that for a cut-off client.

The feed query is the truth; LISTEN/NOTIFY (wakeup.py) only says when to run it. `PgChangeFeed` is what
shared_store.feed.ChangeFeed uses on PostgreSQL: the same head()/poll(cursor)/wait()/close() surface,
with the cursor packed into one int (xid << 64 | seq) so callers keep one orderable number on either
backend (0 is the feed's start)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import statements as s

if TYPE_CHECKING:
    import psycopg

    from .wakeup import FeedWaiter

# The longest a caught-up poll trusts LISTEN's silence: behind a transaction-pooling proxy LISTEN hears
# nothing, and this is the latency of the polling fallback there (the SSE hub waits as long).
RECHECK_S = 0.25
_SEQ_BITS = 64
_SEQ_MASK = (1 << _SEQ_BITS) - 1


@dataclass(frozen=True, order=True)
class FeedCursor:
    xid: int
    seq: int

    def packed(self) -> int:
        """One int in the same order as (xid, seq): feed_seq is a bigint, so it fits in 64 bits."""
        return (self.xid << _SEQ_BITS) | self.seq

    @classmethod
    def unpack(cls, cursor: int) -> FeedCursor:
        return cls(cursor >> _SEQ_BITS, cursor & _SEQ_MASK)


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
    entries, _ = _since(conn, cursor, limit)
    return entries, (entries[-1].cursor if entries else cursor)


def _since(conn: psycopg.Connection, cursor: FeedCursor, limit: int) -> tuple[list[PgFeedEntry], bool]:
    """(entries, settled): settled when no transaction was running as the query read, so nothing
    committed is held back behind the cursor (the next commit is the next thing to read)."""
    rows = conn.execute(s.FEED_SINCE, {"xid": str(cursor.xid), "seq": cursor.seq, "n": limit}).fetchall()
    settled = bool(rows[0][5]) if rows else _settled(conn)
    entries = [PgFeedEntry(FeedCursor(int(x), int(q)), str(r), int(n), str(st)) for x, q, r, n, st, _ in rows]
    return entries, settled


def _settled(conn: psycopg.Connection) -> bool:
    row = conn.execute(s.FEED_SETTLED).fetchone()
    return bool(row and row[0])


class PgChangeFeed:
    """One API process's feed reader: its own autocommit connection for the query and, unless `listen`
    is off (a transaction-pooling proxy, where LISTEN hears nothing), a LISTEN connection.

    A poll skips the query when the last one was caught up and settled (no transaction running, so
    nothing committed hides behind the cursor) and no wake-up arrived since. Every writer's commit
    pokes a NOTIFY (database.PgDatabase.poke), which arrives after that commit; a notification lost
    anyway (a writer's link dropped between its commit and its NOTIFY) costs at most `recheck_s`, after
    which a caught-up feed queries again."""

    def __init__(self, url: str, *, listen: bool = True, recheck_s: float = RECHECK_S) -> None:
        self.url = url
        self.listen = listen
        self.recheck_s = recheck_s
        self.queries = 0  # polls that ran the query (the others were skipped: nothing committed)
        self._lock = threading.Lock()
        self._waiter_lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._waiter: FeedWaiter | None = None
        self._woken = True  # a wake-up not yet answered by a query
        self._caught_up: int | None = None  # the cursor the last settled, complete query ended at
        self._queried_at = 0.0

    # --- connections -------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            from .connect import connect

            self._conn = connect(self.url, "gw-feed")
        return self._conn

    def _listening(self) -> FeedWaiter | None:
        """The LISTEN connection (opened before the first query, so no commit falls between)."""
        if not self.listen:
            return None
        if self._waiter is None:
            from .wakeup import FeedWaiter

            try:
                self._waiter = FeedWaiter(self.url)
            except Exception:
                return None  # the server is away: polls query (and fail) until it is back
            self._woken = True
        return self._waiter

    def _drop_waiter(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._woken = True  # notifications are not replayed after a reconnect: query again
        if waiter is not None:
            waiter.close()

    def _drain(self) -> None:
        """Take in wake-ups that arrived (never blocks); a waiter busy in wait() counts as one."""
        if not self._waiter_lock.acquire(blocking=False):
            self._woken = True
            return
        try:
            waiter = self._listening()
            if waiter is None:
                self._woken = True
                return
            try:
                if waiter.wait(0):
                    self._woken = True
            except Exception:
                self._drop_waiter()
        finally:
            self._waiter_lock.release()

    # --- the feed's surface ------------------------------------------------------------------------
    def head(self) -> int:
        with self._lock:
            self._listening()
            return feed_head(self._connection()).packed()

    def poll(self, cursor: int, *, limit: int = 10_000) -> tuple[list[PgFeedEntry], int]:
        with self._lock:
            self._drain()
            fresh = time.monotonic() - self._queried_at < self.recheck_s
            if not self._woken and self._caught_up == cursor and fresh:
                return [], cursor
            self._woken = False
            self._queried_at = time.monotonic()
            entries, settled = _since(self._connection(), FeedCursor.unpack(cursor), limit)
            self.queries += 1
            next_cursor = entries[-1].cursor.packed() if entries else cursor
            self._caught_up = next_cursor if settled and len(entries) < limit else None
        return entries, next_cursor

    def wait(self, timeout_s: float) -> bool:
        """Block until a commit's wake-up arrives (True) or `timeout_s` passes (False). Without LISTEN
        (or while the server is away) it sleeps the timeout: the caller polls either way."""
        with self._waiter_lock:
            waiter = self._listening()
            if waiter is not None:
                try:
                    woken = waiter.wait(timeout_s)
                except Exception:
                    self._drop_waiter()
                else:
                    if woken:
                        self._woken = True
                    return woken
        time.sleep(timeout_s)
        return False

    def close(self) -> None:
        with self._lock, self._waiter_lock:
            self._drop_waiter()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
