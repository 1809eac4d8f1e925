"""One SQLite file in WAL mode through apsw: connections, pragmas, busy handling, transactions.

Write transactions start with BEGIN IMMEDIATE so a writer waits for the lock up front (a deferred
read that later upgrades fails with SQLITE_BUSY_SNAPSHOT, which no retry can fix). Waiting is done
by a busy handler that sleeps a jittered, growing slice and retries: SQLite's own busy_timeout sleeps
a fixed schedule, so under contention the same process keeps losing and starves for seconds.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from .errors import NotADatabase, StoreBusy, StoreCorrupt, StoreUnavailable
from .private import private_dir, private_file

SQLITE_HEADER = b"SQLite format 3\x00"
# Pages the WAL may reach before a committing writer checkpoints itself (the background
# checkpointer normally keeps it far below).
AUTOCHECKPOINT_CAP = 4_000
# The WAL file never shrinks by itself: after a burst (200 starts of 1 MiB while a slow reader held
# snapshots: bench/bench_wal.py) it stayed at 211 MiB for good. With this limit SQLite truncates it
# back when the WAL restarts after a complete checkpoint (measured: 211 MiB peak -> 64 MiB after).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class ConnectionSizes:
    """Memory each connection may hold: its page cache (PRAGMA cache_size, KiB) and its memory-mapped
    read window (PRAGMA mmap_size, bytes). Pages a connection touches through the map count in the
    process's RSS, each map apiece. `write_mmap_bytes`: the window of a connection once it has opened
    a write transaction (None: the same); a writer's reads are B-tree descents to the rows it
    inserts, which its page cache holds anyway."""

    cache_kib: int = 32_768
    mmap_bytes: int = 256 * 1024 * 1024
    write_mmap_bytes: int | None = None


DEFAULT_SIZES = ConnectionSizes()  # the runner's and the tools'; the API's: api_service/startup.py

# apsw errors that mean "the database cannot be used right now", not "the caller did wrong".
_UNAVAILABLE = (
    apsw.FullError,
    apsw.ReadOnlyError,
    apsw.IOError,
    apsw.CantOpenError,
    apsw.LockedError,
    apsw.ProtocolError,
)


class BusyPolicy:
    """Jittered exponential backoff for SQLITE_BUSY, bounded by a deadline per wait."""

    def __init__(self, deadline_s: float = 30.0, first_sleep_s: float = 0.0001, max_sleep_s: float = 0.002):
        self.deadline_s = deadline_s
        self.first_sleep_s = first_sleep_s
        self.max_sleep_s = max_sleep_s

    def handler(self) -> Callable[[int], bool]:
        """A fresh busy handler for one connection (it keeps that connection's wait start)."""
        started = [0.0]

        def on_busy(prior_calls: int) -> bool:
            now = time.monotonic()
            if prior_calls == 0:
                started[0] = now
            elif now - started[0] > self.deadline_s:
                return False
            ceiling = min(self.max_sleep_s, self.first_sleep_s * (2 ** min(prior_calls, 20)))
            time.sleep(random.uniform(0.0, ceiling))
            return True

        return on_busy


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that exists but is not SQLite, before anything opens (and could write) it."""
    if path.is_dir():
        raise NotADatabase(f"{path} is a directory, not an SQLite database file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise NotADatabase(
            f"{path} exists but is not an SQLite database (bad header); it was left untouched. "
            "Point ABSTRACTGATEWAY_DATA_DIR (or --db) at another location or move the file away."
        )


class Database:
    """The gateway's SQLite file. Connections are per thread; all share the same WAL file."""

    # Which dialect the store speaks (postgres/database.PgDatabase says "postgresql").
    backend = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy: BusyPolicy | None = None,
        synchronous: str = "NORMAL",
        checkpoint_every_s: float | None = 0.5,
        sizes: ConnectionSizes = DEFAULT_SIZES,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.sizes = sizes
        self._write_mmap = sizes.write_mmap_bytes
        if self._write_mmap == sizes.mmap_bytes:
            self._write_mmap = None
        self.busy = busy or BusyPolicy()
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._all: list[apsw.Connection] = []
        self._released: list[apsw.Connection] = []  # no thread's any more: the next one to ask takes it
        self._all_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_every_s = checkpoint_every_s
        private_dir(self.path.parent)
        check_sqlite_file(self.path)
        private_file(self.path)
        self._probe_readable()
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        conn = self.connection()
        if new_file:
            # Retention returns freed pages to the OS in small steps (incremental vacuum); the mode
            # is chosen before the file's first page is written (WAL writes it), never later.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreUnavailable(f"could not put {self.path} in WAL mode (got {mode!r})")
        if checkpoint_every_s is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_every_s,), name="wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _probe_readable(self) -> None:
        """Read the schema through a read-only connection: a damaged file fails here, unchanged."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        probe = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except (apsw.NotADBError, apsw.CorruptError) as exc:
            raise StoreCorrupt(
                f"{self.path} is a damaged SQLite database ({exc}); it was left untouched. "
                "Restore it from a backup or move it away."
            ) from exc
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot read {self.path}: {exc}") from exc
        finally:
            probe.close()

    def connection(self) -> apsw.Connection:
        """This thread's connection: one another thread released, else one opened on first use."""
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailable(f"database {self.path} is closed")
        if self._released:
            with self._all_lock:
                conn = self._released.pop() if self._released else None
            if conn is not None:
                self._local.conn = conn
                return conn
        try:
            conn = apsw.Connection(str(self.path))
            conn.set_busy_handler(self.busy.handler())
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(f"PRAGMA cache_size=-{int(self.sizes.cache_kib)}")
            conn.execute(f"PRAGMA mmap_size={int(self.sizes.mmap_bytes)}")
            # With the background checkpointer, a commit copies no pages back (that fsyncs the
            # db file on the writer's time, ~15% of tick throughput measured); the cap still bounds
            # the WAL if the checkpointer falls behind.
            conn.execute(
                f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_CAP if self._checkpoint_every_s else 1000}"
            )
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """A write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception.

        When this returns, the transaction is committed (durable against a killed process). Inside
        an open transaction of this thread (a group commit) it is a savepoint instead: rolled back
        alone on an exception, committed with the enclosing transaction."""
        conn = self.connection()
        if not conn.get_autocommit():
            with self._savepoint(conn):
                yield conn
            return
        if self._write_mmap is not None and not getattr(self._local, "writes", False):
            conn.execute(f"PRAGMA mmap_size={int(self._write_mmap)}")  # once per connection
            self._local.writes = True
        with translate_errors(self.path):
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            with translate_errors(self.path):
                conn.execute("COMMIT")
        except BaseException:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _savepoint(self, conn: apsw.Connection) -> Iterator[None]:
        with translate_errors(self.path):
            conn.execute("SAVEPOINT nested_write")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO nested_write")
            conn.execute("RELEASE nested_write")
            raise
        with translate_errors(self.path):
            conn.execute("RELEASE nested_write")

    @contextmanager
    def group(self) -> Iterator[None]:
        """One transaction around several writes (group commit): each `write()` inside is a savepoint,
        so one failing write leaves the others; nothing is durable until this block commits."""
        with self.write():
            yield

    def execute_write(self, sql: str, params: Any = ()) -> int:
        """One write statement as its own transaction; returns the rows it changed.

        A writing statement takes the write lock before it reads (busy handler applies), so this is
        as safe as BEGIN IMMEDIATE for one statement, with two fewer round trips."""
        conn = self.connection()
        with translate_errors(self.path):
            conn.execute(sql, params)
        return conn.changes()

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """One read statement, all rows."""
        with translate_errors(self.path):
            return self.connection().execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        """One read statement, first row or None."""
        with translate_errors(self.path):
            return self.connection().execute(sql, params).fetchone()

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the db file without blocking writers (PASSIVE)."""
        with translate_errors(self.path):
            self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.checkpoint()
            except StoreUnavailable:
                continue  # a busy or full disk now may clear later; writers report it meanwhile

    def release_connection(self) -> None:
        """This thread is done with the store: its connection goes, as it is, to the next thread that
        needs one. serve's start-up (migrations, the flows dir) runs on the thread that then runs the
        event loop, which reads nothing itself: its first read thread takes that connection (schema
        parsed, pages mapped) instead of opening another (~0.7 MB of serve's RSS, measured)."""
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        del self._local.conn
        if getattr(self._local, "writes", False):  # narrowed for writing here: a reader's window again
            with translate_errors(self.path):
                conn.execute(f"PRAGMA mmap_size={int(self.sizes.mmap_bytes)}")
            self._local.writes = False
        with self._all_lock:
            self._released.append(conn)  # still in self._all: close() closes it

    def close(self) -> None:
        """Close every connection this Database opened (call once, at shutdown)."""
        self._closed = True
        self._stop.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(timeout=5)
        with self._all_lock:
            conns, self._all, self._released = self._all, [], []
        for conn in conns:
            with suppress(apsw.Error):
                conn.close()
        self._local = threading.local()


@contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn apsw's environment failures into the store's errors (callers map them to 503)."""
    try:
        yield
    except apsw.BusyError as exc:
        raise StoreBusy(f"database {path} stayed locked past the busy deadline: {exc}") from exc
    except (apsw.NotADBError, apsw.CorruptError) as exc:
        raise StoreCorrupt(f"database {path} is damaged: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"database {path} is unavailable: {exc}") from exc
