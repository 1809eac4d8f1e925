"""Artifacts: bytes content-addressed (files on SQLite, the database on PostgreSQL: see
test_blob_store.py), metadata in the store, fenced for runners."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from abstractruntime.core.models import RunState

from shared_store import LeaseHolder, LeaseLost
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.run_store import SqliteRunStore


@pytest.fixture
def store(db, tmp_path: Path) -> SqliteArtifactStore:
    return SqliteArtifactStore(db, tmp_path / "artifacts")


def test_store_load_list_delete(store: SqliteArtifactStore) -> None:
    wav = b"RIFF" + b"\x00" * 100
    meta = store.store(wav, content_type="audio/wav", run_id="r1", tags={"kind": "tts"})
    assert meta.blob_id == hashlib.sha256(wav).hexdigest() and meta.size_bytes == len(wav)
    assert store.exists(meta.artifact_id)
    loaded = store.load(meta.artifact_id)
    assert loaded.content == wav and loaded.content_type == "audio/wav"
    assert loaded.metadata.tags == {"kind": "tts"}
    assert store.content_path(meta.artifact_id) == store.blobs.path(meta.blob_id)
    assert [m.artifact_id for m in store.list_by_run("r1")] == [meta.artifact_id]
    assert [m.artifact_id for m in store.list_all()] == [meta.artifact_id]
    assert store.delete(meta.artifact_id) is True
    assert store.load(meta.artifact_id) is None
    assert store.delete(meta.artifact_id) is False


def test_same_bytes_share_one_blob(store: SqliteArtifactStore, db) -> None:
    a = store.store(b"same", run_id="r1")
    b = store.store(b"same", run_id="r2")
    assert a.artifact_id != b.artifact_id and a.blob_id == b.blob_id
    files = [p for p in store.blob_dir.rglob("*") if p.is_file()] if store.blob_dir.exists() else []
    rows = db.query_one("SELECT count(*) FROM artifact_blobs")
    assert len(files) + rows[0] == 1, "one blob: a file (SQLite) or a row (PostgreSQL)"
    store.delete(a.artifact_id)
    assert store.load(b.artifact_id).content == b"same", "a blob still referenced is kept"


def test_invalid_artifact_id_is_refused(store: SqliteArtifactStore, db) -> None:
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.store(b"x", artifact_id="../../etc/passwd")
    assert db.query_one("SELECT count(*) FROM artifacts") == (0,)


def test_runner_artifacts_are_fenced(db, tmp_path: Path) -> None:
    SqliteRunStore(db).save(RunState.new(workflow_id="w", entry_node="n", run_id="r1"))
    holder = LeaseHolder(db, "a")
    fenced = SqliteArtifactStore(db, tmp_path / "artifacts", fence=holder)
    with pytest.raises(LeaseLost):
        fenced.store(b"x", run_id="r1")
    holder.claim(1)
    assert fenced.store(b"x", run_id="r1").run_id == "r1"
    assert db.query_one("SELECT count(*) FROM artifacts") == (1,)
