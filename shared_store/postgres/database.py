"""The shared PostgreSQL behind the same interface as the SQLite file (shared_store/db.py): `write()`
(a transaction; nested, a savepoint), `query`, `query_one`, `execute_write`, `connection()`. The store's
modules run the same named statements on either; dialect.to_pg gives each its PostgreSQL text.

Each thread that touches the store opens its own connection and keeps it (as SQLite's are kept): a
transaction and the statements inside it run on one connection, and a thread's next call waits for
nothing; at most ABSTRACTGATEWAY_PG_POOL_MAX at once per process (a slot per connection). A connection
that broke (a cut link, a restarted server) is closed and the thread opens a fresh one on its next
call; the failed call raises StoreUnavailable (callers map it to 503 or ride it out). Writers never NOTIFY inside their transaction: after a commit that changed rows
they poke a coalescing notifier (wakeup.FeedNotifier), which readers wait on."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..backend import redact
from ..db import Database
from ..errors import StoreBusy, StoreError, StoreUnavailable
from .connect import connect_kwargs
from .dialect import binary_results, follow_up, to_pg
from .retry import RETRIED_SQLSTATES

if TYPE_CHECKING:
    import apsw
    import psycopg

    from .wakeup import FeedNotifier

# Connections per process (ABSTRACTGATEWAY_PG_POOL_MAX). The API's read threads and the runner's
# workers each keep one; more wait for a slot (StoreBusy after SLOT_WAIT_S) rather than letting one
# process take the server's max_connections.
DEFAULT_POOL_MAX = 40
# How long a thread waits for a free connection slot before its call fails (503 / ridden out).
SLOT_WAIT_S = 30.0
_RETRY_ATTEMPTS = 8


class PgCursor:
    """apsw's cursor surface over a psycopg cursor: a statement without rows fetches None / []."""

    __slots__ = ("_cur",)

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cur.description is None:
            return None
        return cast("tuple[Any, ...] | None", self._cur.fetchone())

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cur.description is None:
            return []
        return cast("list[tuple[Any, ...]]", self._cur.fetchall())

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class PgConnection:
    """apsw.Connection's surface over one psycopg connection (what the store's modules call)."""

    def __init__(self, raw: psycopg.Connection[Any], db: PgDatabase) -> None:
        self.raw = raw
        self._db = db
        self._changes = 0

    def execute(self, sql: str, params: Any = None) -> PgCursor:
        text, numbered = to_pg(sql)
        if numbered and params is not None and not isinstance(params, dict):
            params = {f"p{i + 1}": value for i, value in enumerate(params)}
        with self._db.translate():
            cur = self.raw.execute(text, params if params is not None else (), binary=binary_results(sql))
            changes = max(cur.rowcount, 0)
            after = follow_up(sql) if changes else None
            if after is not None:
                self.raw.execute(after, params)
        self._changes = changes
        if self._changes and self.raw.info.transaction_status == 0:  # IDLE: autocommitted a change
            self._db.poke()
        return PgCursor(cur)

    def changes(self) -> int:
        return self._changes

    def get_autocommit(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.raw.info.transaction_status == TransactionStatus.IDLE)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Values the SQLite side stores as integers and reads back as Python numbers: a bool is sent as
    0/1 (the schema's flags are integers), numeric (sum, avg) comes back as int or float, not Decimal."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.postgres import types

    int4 = types["int4"].oid

    class BoolAsInt(Dumper):
        oid = int4

        def dump(self, obj: bool) -> bytes:
            return b"1" if obj else b"0"

    class NumericAsNumber(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            return int(text) if text.lstrip("-").isdigit() else float(text)

    conn.adapters.register_dumper(bool, BoolAsInt)
    conn.adapters.register_loader("numeric", NumericAsNumber)


class PgDatabase(Database):
    """The gateway's store on a PostgreSQL server (`ABSTRACTGATEWAY_DB_URL`)."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        pool_max: int = DEFAULT_POOL_MAX,
        application_name: str = "abstractgateway",
        notify: bool = True,
        pooler: bool = False,
    ) -> None:
        # Not Database.__init__: no file to open. `path` stays a place on this host (the data dir's
        # secret, local artifacts): the db itself is `url`.
        self.url = url
        self.location = redact(url)
        root = Path(data_dir).expanduser().resolve() if data_dir else Path.cwd()
        self.path = root / "postgresql"
        self._local = threading.local()
        self._closed = False
        self._notifier: FeedNotifier | None = None
        self._notify = notify
        self._kwargs = connect_kwargs(application_name, direct=not pooler)
        # At most pool_max connections at once: a thread takes a slot with its connection and gives
        # it back when it drops the connection or ends. Connections are opened by the thread that
        # needs one, not by psycopg_pool's background workers: after a network cut those retried on a
        # growing backoff, and a runner whose link had come back still waited out 30 s timeouts (its
        # leases were taken over meanwhile; measured in tests/netns).
        self._slots = threading.BoundedSemaphore(pool_max)
        self.pool_max = pool_max
        with self.translate():
            self.query_one("SELECT 1")

    # --- connections -----------------------------------------------------------------------------
    def connection(self) -> apsw.Connection:
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is not None and not (conn.raw.closed or conn.raw.broken):
            return cast("apsw.Connection", conn)
        if self._closed:
            raise StoreUnavailable(f"database {self.location} is closed")
        if conn is not None:
            self._drop(conn)
        if not self._slots.acquire(timeout=SLOT_WAIT_S):
            raise StoreBusy(
                f"all {self.pool_max} connections to {self.location} stayed in use for {SLOT_WAIT_S:.0f} s "
                "(ABSTRACTGATEWAY_PG_POOL_MAX)"
            )
        import psycopg

        try:
            raw = psycopg.connect(self.url, **self._kwargs)
            _configure(raw)
        except Exception as exc:
            self._slots.release()
            raise StoreUnavailable(f"cannot connect to {self.location}: {exc}") from exc
        conn = PgConnection(raw, self)
        self._local.conn = conn
        # A thread that ends (the API's worker threads may) gives its connection back when its
        # thread-local data goes: the slot would otherwise count as taken forever.
        self._local.holder = _Holder()
        weakref.finalize(self._local.holder, _give_back, self._slots, raw)
        return cast("apsw.Connection", conn)

    def release_connection(self) -> None:
        """This thread is done with the store: its connection is closed and its pool slot freed (a
        PostgreSQL connection is a server process; the thread that needs one next connects)."""
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)

    def _drop(self, conn: PgConnection) -> None:
        self._local.conn = None
        holder = getattr(self._local, "holder", None)
        self._local.holder = None
        if holder is None:
            _give_back(self._slots, conn.raw)
        # else: dropping the holder runs its finalizer, which closes the connection and frees its slot

    def _mine(self) -> PgConnection:
        return cast(PgConnection, self.connection())

    @contextmanager
    def translate(self) -> Iterator[None]:
        """psycopg's failures as the store's errors: a broken link or a server going away is
        StoreUnavailable (and the thread's connection is replaced); a deadlock or serialization
        failure that outlived its retries is StoreBusy (503, try again)."""
        import psycopg

        try:
            yield
        except StoreError:
            raise
        except psycopg.errors.OperationalError as exc:
            if getattr(exc, "sqlstate", None) in RETRIED_SQLSTATES:
                raise StoreBusy(f"{self.location}: {exc}") from exc
            conn = getattr(self._local, "conn", None)
            if conn is not None and (conn.raw.closed or conn.raw.broken):
                self._drop(conn)
            raise StoreUnavailable(f"database {self.location} is unavailable: {exc}") from exc
        except psycopg.errors.DiskFull as exc:
            raise StoreUnavailable(f"database {self.location} is full: {exc}") from exc
        except psycopg.InterfaceError as exc:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                self._drop(conn)
            raise StoreUnavailable(f"database {self.location} is unavailable: {exc}") from exc

    # --- transactions ----------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """A transaction (BEGIN ... COMMIT), rolled back on any exception; inside one, a savepoint.
        When this returns, it is committed."""
        conn = self._mine()
        nested = not conn.get_autocommit()
        with self.translate(), conn.raw.transaction():
            yield cast("apsw.Connection", conn)
        if not nested:
            self.poke()

    def execute_write(self, sql: str, params: Any = ()) -> int:
        """One statement as its own transaction, run again on a deadlock or serialization failure."""
        conn = self._mine()
        for attempt in range(_RETRY_ATTEMPTS):
            try:
                conn.execute(sql, params)
                return conn.changes()
            except StoreBusy:
                if attempt == _RETRY_ATTEMPTS - 1 or not conn.get_autocommit():
                    raise
                time.sleep(0.002 * 2**attempt)
        raise AssertionError("unreachable")

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self._mine().execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        return self._mine().execute(sql, params).fetchone()

    def query_many(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.query(sql, params)

    # --- change-feed wake-ups --------------------------------------------------------------------
    def poke(self) -> None:
        """A commit changed rows: wake the feed's readers (coalesced, off this thread)."""
        if not self._notify or self._closed:
            return
        notifier = self._notifier
        if notifier is None:
            from .wakeup import FeedNotifier

            with _notifier_lock:
                if self._notifier is None:
                    self._notifier = FeedNotifier(self.url)
                notifier = self._notifier
        notifier.poke()

    def checkpoint(self) -> None:
        """Nothing to do: the server checkpoints its own WAL."""

    def close(self) -> None:
        self._closed = True
        if self._notifier is not None:
            self._notifier.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)
        self._local = threading.local()


_notifier_lock = threading.Lock()


class _Holder:
    """Lives in a thread's local data as long as the thread keeps its connection."""


def _give_back(slots: threading.BoundedSemaphore, raw: psycopg.Connection[Any]) -> None:
    with suppress(Exception):
        raw.close()
    with suppress(ValueError):
        slots.release()
