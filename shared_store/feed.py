"""The change feed: which runs got new ledger records (or a new state) since a cursor.

One poller per API process calls `poll` once per interval for all its SSE subscribers, and may block in
`wait(timeout_s)` between polls until something commits. The cursor is one int on either backend (0 is
the feed's start; `head()` is "from now on").

- SQLite: the feed keeps its own connection so `PRAGMA data_version` (which changes only when another
  connection commits) can answer "nothing happened" without running the query; `wait` sleeps in short
  slices until the data version moves.
- PostgreSQL: the commit-order feed of postgres/feed.py (cursor (xid, seq), so a transaction that
  commits late is not skipped), woken by LISTEN/NOTIFY with polling as the fallback.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import apsw

from . import queries as q
from .db import Database, translate_errors
from .postgres.feed import RECHECK_S, PgChangeFeed  # imports psycopg only when a server is used

if TYPE_CHECKING:
    from .postgres.database import PgDatabase

# How often a waiting SQLite feed looks at data_version (a pragma read, no query).
_SQLITE_WAIT_SLICE_S = 0.005


@dataclass(frozen=True)
class FeedEntry:
    feed_seq: int  # the entry's position: the cursor to poll from for what comes after it
    run_id: str
    ledger_len: int
    status: str


class ChangeFeed:
    def __init__(self, db: Database, *, listen: bool = True, recheck_s: float = RECHECK_S) -> None:
        """`listen` / `recheck_s` matter on PostgreSQL only: LISTEN off behind a transaction-pooling
        proxy (every poll queries), and the longest a caught-up poll trusts LISTEN's silence."""
        self.db = db
        self._pg: PgChangeFeed | None = None
        if db.backend == "postgresql":
            self._pg_db = cast("PgDatabase", db)
            self._pg = PgChangeFeed(self._pg_db.url, listen=listen, recheck_s=recheck_s)
        self._conn: apsw.Connection | None = None
        self._lock = threading.Lock()
        self._caught_up: tuple[int, int] | None = None  # (data_version, cursor) with nothing newer
        self._queries = 0  # polls that ran the query (the others were skipped by data_version)

    @property
    def queries(self) -> int:
        """Polls that ran the feed's query (the others knew nothing had committed)."""
        return self._pg.queries if self._pg is not None else self._queries

    def _connection(self) -> apsw.Connection:
        if self._conn is None:
            conn = apsw.Connection(str(self.db.path))
            conn.set_busy_handler(self.db.busy.handler())
            self._conn = conn
        return self._conn

    def _data_version(self) -> int:
        row = self._connection().execute("PRAGMA data_version").fetchone()
        return int(cast(int, row[0])) if row else -1

    def head(self) -> int:
        """The current feed position: start a subscription here to see only what comes next."""
        if self._pg is not None:
            with self._pg_db.translate():
                return self._pg.head()
        with self._lock, translate_errors(self.db.path):
            row = self._connection().execute(q.FEED_HEAD).fetchone()
        return int(row[0]) if row else 0

    def poll(self, cursor: int, *, limit: int = 10_000) -> tuple[list[FeedEntry], int]:
        """Entries after cursor (one per run, its latest) and the next cursor; no query when nothing
        committed."""
        if self._pg is not None:
            with self._pg_db.translate():
                found, next_cursor = self._pg.poll(cursor, limit=limit)
            entries = [FeedEntry(e.cursor.packed(), e.run_id, e.ledger_len, e.status) for e in found]
            return entries, next_cursor
        with self._lock, translate_errors(self.db.path):
            version = self._data_version()
            if self._caught_up == (version, cursor):
                return [], cursor
            rows = self._connection().execute(q.FEED_SINCE, (cursor, limit)).fetchall()
            self._queries += 1
            entries = [
                FeedEntry(int(cast(int, s)), str(r), int(cast(int, n)), str(st)) for s, r, n, st in rows
            ]
            next_cursor = entries[-1].feed_seq if entries else cursor
            # Caught up: until another connection commits, nothing newer than next_cursor exists.
            self._caught_up = (version, next_cursor) if len(rows) < limit else None
        return entries, next_cursor

    def wait(self, timeout_s: float) -> bool:
        """Block until something may have committed since the last poll (True) or `timeout_s` passes
        (False); poll after it either way. PostgreSQL: a LISTEN wake-up. SQLite: the data version
        moved (read every few ms; no query)."""
        if self._pg is not None:
            return self._pg.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock, translate_errors(self.db.path):
                caught_up = self._caught_up
                if caught_up is None or self._data_version() != caught_up[0]:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_SQLITE_WAIT_SLICE_S, left))

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
