"""The db, its WAL/SHM, artifact blobs and the folders holding them are created private."""

from __future__ import annotations

import os
from pathlib import Path

from shared_store import Database, migrate
from shared_store.artifact_store import SqliteArtifactStore


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_db_wal_shm_and_artifacts_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: what was created 0644 / 0755 before
    try:
        db = Database(tmp_path / "new" / "deep" / "gateway.sqlite3")
        migrate(db)
        store = SqliteArtifactStore(db, tmp_path / "new" / "deep" / "artifacts")
        meta = store.store(b"<html>", content_type="text/html")
        blob = next(p for p in (tmp_path / "new" / "deep" / "artifacts").rglob("*") if p.is_file())
        data = tmp_path / "new" / "deep"
        for name in ("gateway.sqlite3", "gateway.sqlite3-wal", "gateway.sqlite3-shm"):
            assert _mode(data / name) == 0o600, name
        assert _mode(blob) == 0o600 and _mode(blob.parent) == 0o700
        assert _mode(data) == 0o700 and _mode(tmp_path / "new") == 0o700
        assert store.load(meta.artifact_id) is not None
        db.close()
    finally:
        os.umask(old)


def test_an_existing_wide_db_is_tightened_and_a_read_only_one_stays_read_only(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    Database(path).close()
    path.chmod(0o644)
    Database(path).close()
    assert _mode(path) == 0o600
    path.chmod(0o444)
    Database(path).close()
    assert _mode(path) == 0o400
