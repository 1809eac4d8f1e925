"""Change-feed wake-ups over LISTEN/NOTIFY: a hint that the feed moved, never the feed itself.

NOTIFY is delivered only after commit and never replayed after a disconnect, and notifying
transactions serialise on a global lock at commit (measured: one pg_notify per ledger append cut 4
writers' appends from ~3.2k/s to ~1.5k/s). So writers never notify in their own transaction: they
`poke()` a FeedNotifier after committing, whose thread sends one payload-free NOTIFY for any number of
pokes since its last one (coalesced). A reader waits on a FeedWaiter with a timeout and polls the feed
(feed.feed_since, the truth) either way: a lost or late notification costs one poll interval at most.
Behind a transaction-pooling proxy LISTEN does not work (a listener received 0 of 10): there the
timeout alone paces the polls."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .connect import connect

if TYPE_CHECKING:
    import psycopg

CHANNEL = "gw_feed"


class FeedNotifier:
    """One per process that writes: `poke()` after a commit; a thread sends the coalesced NOTIFYs."""

    def __init__(self, url: str, *, channel: str = CHANNEL, min_interval_s: float = 0.002) -> None:
        self._url = url
        self._channel = channel
        self._min_interval_s = min_interval_s
        self._poked = threading.Event()
        self._pending = False  # poked since the last NOTIFY
        self._stop = threading.Event()
        self.sent = 0  # NOTIFYs sent (a burst of pokes is one)
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="feed-notifier", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """The feed moved (call after the commit). Never blocks, never touches the database."""
        self._pending = True
        self._poked.set()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            self._poked.wait(0.5)
            self._poked.clear()
            if self._pending:
                self._pending = False
                conn = self._send(conn)
            if self._stop.is_set():
                break
            self._stop.wait(self._min_interval_s)  # pokes meanwhile make one more NOTIFY
        if self._pending:  # a commit poked just before close(): its readers still hear of it
            self._pending = False
            conn = self._send(conn)
        if conn is not None:
            conn.close()

    def _send(self, conn: psycopg.Connection | None) -> psycopg.Connection | None:
        try:
            if conn is None or conn.closed:
                conn = connect(self._url, "gw-feed-notifier")
            conn.execute("SELECT pg_notify(%s, '')", (self._channel,))
            self.sent += 1
        except Exception:
            # A dropped connection: readers poll anyway; reconnect on the next poke.
            self.errors += 1
            if conn is not None:
                conn.close()
            conn = None
        return conn

    def close(self) -> None:
        """Stop the thread, after sending the NOTIFY for a poke not yet answered."""
        self._stop.set()
        self._poked.set()
        self._thread.join(10)


class FeedWaiter:
    """A LISTEN connection: `wait(timeout_s)` returns True when a wake-up arrived, False on timeout."""

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self._conn = connect(url, "gw-feed-waiter")
        self._conn.execute(f"LISTEN {channel}")

    def wait(self, timeout_s: float) -> bool:
        woken = False
        for _ in self._conn.notifies(timeout=timeout_s, stop_after=1):
            woken = True
        if woken:
            # Drain what queued meanwhile: one poll answers them all.
            for _ in self._conn.notifies(timeout=0):
                pass
        return woken

    def close(self) -> None:
        self._conn.close()
