"""Per-connection memory sizes: the page cache and map a Database gives its connections, and the
smaller map of a connection once it writes (the API's writer thread)."""

from __future__ import annotations

import threading
from pathlib import Path

from shared_store.backend import connect_store
from shared_store.db import DEFAULT_SIZES, ConnectionSizes, Database


def _pragmas(db: Database) -> tuple[int, int]:
    conn = db.connection()
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    mmap = conn.execute("PRAGMA mmap_size").fetchone()[0]
    return cache, mmap


def test_default_sizes_are_the_stores_defaults(tmp_path: Path) -> None:
    db = Database(tmp_path / "g.sqlite3")
    try:
        assert _pragmas(db) == (-DEFAULT_SIZES.cache_kib, DEFAULT_SIZES.mmap_bytes)
        with db.write() as conn:
            conn.execute("CREATE TABLE t (x)")
        assert _pragmas(db) == (-DEFAULT_SIZES.cache_kib, DEFAULT_SIZES.mmap_bytes), "writing changes nothing"
    finally:
        db.close()


def test_a_writing_connection_drops_its_map_and_readers_keep_theirs(tmp_path: Path) -> None:
    sizes = ConnectionSizes(cache_kib=1_024, mmap_bytes=8 * 1024 * 1024, write_mmap_bytes=0)
    db = connect_store(tmp_path / "g.sqlite3", sizes=sizes)
    try:
        assert _pragmas(db) == (-1_024, 8 * 1024 * 1024)
        with db.write() as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES (1)")
        assert _pragmas(db) == (-1_024, 0), "the connection that wrote maps no pages"
        with db.group(), db.write() as conn:  # later writes (and a group of them) keep it so
            conn.execute("INSERT INTO t VALUES (2)")
        assert _pragmas(db) == (-1_024, 0)

        seen: list[tuple[int, int]] = []
        rows: list[list[tuple[int]]] = []
        reader = threading.Thread(
            target=lambda: (seen.append(_pragmas(db)), rows.append(db.query("SELECT x FROM t")))
        )
        reader.start()
        reader.join()
        assert seen == [(-1_024, 8 * 1024 * 1024)], "a thread that only reads keeps the map"
        assert rows == [[(1,), (2,)]]
    finally:
        db.close()
