"""A file at the db path that is not a usable SQLite database: clear error, file untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared_store import Database, NotADatabase, StoreCorrupt, migrate


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_non_sqlite_file_is_refused_untouched(db_path: Path) -> None:
    db_path.write_text("these are my notes, not a database\n" * 100)
    before = _digest(db_path)
    with pytest.raises(NotADatabase, match="not an SQLite database"):
        Database(db_path)
    assert _digest(db_path) == before
    assert not db_path.with_name(db_path.name + "-wal").exists()


def test_corrupt_sqlite_file_is_refused_untouched(db_path: Path) -> None:
    db = Database(db_path)
    migrate(db)
    db.close()
    data = bytearray(db_path.read_bytes())
    # Keep the header, wreck page 1's b-tree (the schema table).
    data[100:4096] = b"\xff" * (4096 - 100)
    db_path.write_bytes(bytes(data))
    for sidecar in ("-wal", "-shm"):
        db_path.with_name(db_path.name + sidecar).unlink(missing_ok=True)
    before = _digest(db_path)
    with pytest.raises(StoreCorrupt, match="damaged"):
        Database(db_path)
    assert _digest(db_path) == before


def test_directory_at_db_path_is_refused(db_path: Path) -> None:
    db_path.mkdir()
    with pytest.raises(NotADatabase, match="is a directory"):
        Database(db_path)
    assert db_path.is_dir()


def test_empty_file_becomes_a_database(db_path: Path) -> None:
    db_path.touch()
    db = Database(db_path)
    assert migrate(db)
