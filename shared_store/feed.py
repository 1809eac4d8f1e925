"""The change feed: which runs got new ledger records (or a new state) since a cursor.

One poller per API process calls `poll` once per interval for all its SSE subscribers. The feed
keeps its own connection so `PRAGMA data_version` (which changes only when another connection
commits) can answer "nothing happened" without running the query.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import cast

import apsw

from . import queries as q
from .db import Database, translate_errors


@dataclass(frozen=True)
class FeedEntry:
    feed_seq: int
    run_id: str
    ledger_len: int
    status: str


class ChangeFeed:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: apsw.Connection | None = None
        self._lock = threading.Lock()
        self._caught_up: tuple[int, int] | None = None  # (data_version, cursor) with nothing newer
        self.queries = 0  # polls that ran the query (the others were skipped by data_version)

    def _connection(self) -> apsw.Connection:
        if self._conn is None:
            conn = apsw.Connection(str(self.db.path))
            conn.set_busy_handler(self.db.busy.handler())
            self._conn = conn
        return self._conn

    def head(self) -> int:
        """The current feed position: start a subscription here to see only what comes next."""
        with self._lock, translate_errors(self.db.path):
            row = self._connection().execute(q.FEED_HEAD).fetchone()
        return int(row[0]) if row else 0

    def poll(self, cursor: int, *, limit: int = 10_000) -> tuple[list[FeedEntry], int]:
        """Entries with feed_seq > cursor and the next cursor; no query when nothing committed."""
        with self._lock, translate_errors(self.db.path):
            conn = self._connection()
            version_row = conn.execute("PRAGMA data_version").fetchone()
            version = int(cast(int, version_row[0])) if version_row else -1
            if self._caught_up == (version, cursor):
                return [], cursor
            rows = conn.execute(q.FEED_SINCE, (cursor, limit)).fetchall()
            self.queries += 1
            entries = [
                FeedEntry(int(cast(int, s)), str(r), int(cast(int, n)), str(st)) for s, r, n, st in rows
            ]
            next_cursor = entries[-1].feed_seq if entries else cursor
            # Caught up: until another connection commits, nothing newer than next_cursor exists.
            self._caught_up = (version, next_cursor) if len(rows) < limit else None
        return entries, next_cursor

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
