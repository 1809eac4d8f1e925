"""Artifact bytes follow the backend: files under the data dir on SQLite (as always), rows of
artifact_blobs in the shared database on PostgreSQL (no host's disk holds a blob). Both backends:
store / load / delete, bytes deleted only when no artifact names them (and, on PostgreSQL, only past
the grace window that protects a store between its put and its row), and a store that dies between
its put and its row leaves nothing a read can trip on."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared_store.artifact_store import SqliteArtifactStore
from shared_store.blob_store import CHUNK, GRACE_S, DbBlobs, FileBlobs
from shared_store.retention import Retention
from shared_store.run_seed import SeedRun, seed_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(db, tmp_path: Path) -> SqliteArtifactStore:
    return SqliteArtifactStore(db, tmp_path / "artifacts")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _blob_rows(db) -> int:
    return int(db.query_one("SELECT count(*) FROM artifact_blobs")[0])


def _age_blobs(db, backend: str) -> None:
    """Make every database blob's last put older than the grace window (SQLite keeps files: no-op)."""
    if backend == "postgresql":
        db.execute_write("UPDATE artifact_blobs SET put_at = put_at - ?", (GRACE_S + 60,))


def test_the_bytes_live_where_the_backend_says(
    store: SqliteArtifactStore, db, backend: str, tmp_path: Path
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
    meta = store.store(png, content_type="image/png", run_id="r1")
    assert store.load(meta.artifact_id).content == png
    if backend == "postgresql":
        assert isinstance(store.blobs, DbBlobs)
        assert _files(tmp_path / "artifacts") == [], "no blob on this host's disk"
        assert db.query_one(
            "SELECT size_bytes, content FROM artifact_blobs WHERE blob_id = ?", (meta.blob_id,)
        ) == (len(png), png)
        assert store.content_path(meta.artifact_id) is None, "no local file to hand out"
    else:
        assert isinstance(store.blobs, FileBlobs)
        assert _files(tmp_path / "artifacts") == [store.blob_path(meta.blob_id)]
        assert store.blob_path(meta.blob_id).read_bytes() == png
        assert store.content_path(meta.artifact_id) == store.blob_path(meta.blob_id)
        assert _blob_rows(db) == 0, "SQLite keeps its bytes in files, as before"


def test_large_blobs_read_back_in_pieces_and_empty_ones_are_there(store: SqliteArtifactStore) -> None:
    video = os.urandom(2 * CHUNK + 12345)
    meta = store.store(video, content_type="video/mp4", run_id="r1")
    pieces = list(store.blobs.chunks(meta.blob_id))
    assert [len(p) for p in pieces] == [CHUNK, CHUNK, 12345] and b"".join(pieces) == video
    assert store.blobs.size(meta.blob_id) == len(video)
    empty = store.store(b"", run_id="r1")
    assert list(store.blobs.chunks(empty.blob_id)) == [b""] and store.load(empty.artifact_id).content == b""
    assert list(store.blobs.chunks("0" * 64)) == [] and store.blobs.get("0" * 64) is None


def test_delete_drops_the_bytes_only_when_no_artifact_names_them(
    store: SqliteArtifactStore, db, backend: str
) -> None:
    a = store.store(b"same bytes", run_id="r1")
    b = store.store(b"same bytes", run_id="r2")
    assert a.blob_id == b.blob_id
    _age_blobs(db, backend)
    assert store.delete(a.artifact_id) is True
    assert store.load(b.artifact_id).content == b"same bytes", "a blob still named is kept"
    assert store.blobs.exists(b.blob_id)
    assert store.delete(b.artifact_id) is True
    assert not store.blobs.exists(b.blob_id) and store.load(b.artifact_id) is None
    assert store.delete(b.artifact_id) is False


def test_bytes_put_again_within_the_grace_window_survive_a_delete(
    store: SqliteArtifactStore, db, backend: str
) -> None:
    """PostgreSQL, many hosts: a store that re-puts bytes already there and has not committed its row
    yet is invisible to a deleter's reference check — the refreshed put_at is what keeps its bytes."""
    if backend != "postgresql":
        pytest.skip("SQLite: one machine, files, no grace window (the behaviour it always had)")
    a = store.store(b"shared", run_id="r1")
    _age_blobs(db, backend)
    store.blobs.put(a.blob_id, b"shared")  # another host's store, its row not committed yet
    assert store.delete(a.artifact_id) is True
    assert store.blobs.get(a.blob_id) == b"shared", "bytes put within the window are kept"
    # Nobody names them and the window passes: the sweep collects them.
    assert store.blobs.sweep_orphans() == 0
    _age_blobs(db, backend)
    assert store.blobs.sweep_orphans() == 1 and not store.blobs.exists(a.blob_id)


def test_a_fresh_blob_is_not_rewritten_by_every_store(store: SqliteArtifactStore, db, backend: str) -> None:
    """Every run of a workflow stores the same snapshot bytes: within half the window that is one read,
    no write to their row; an older put is refreshed (database clock)."""
    if backend != "postgresql":
        pytest.skip("SQLite: files, no put time")
    first = store.store(b"{snapshot}", run_id="r1")

    def put_at() -> float:
        return float(db.query_one("SELECT put_at FROM artifact_blobs WHERE blob_id = ?", (first.blob_id,))[0])

    before = put_at()
    store.store(b"{snapshot}", run_id="r2")
    store.store_copy(first, b"{snapshot}", run_id="r3")
    assert put_at() == before
    db.execute_write("UPDATE artifact_blobs SET put_at = put_at - ?", (GRACE_S * 0.6,))
    store.store_copy(first, b"{snapshot}", run_id="r4")
    assert put_at() > before - 1, "an older put is refreshed to now"
    assert db.query_one("SELECT count(*) FROM artifacts") == (4,)


def test_store_copy_refreshes_or_restores_the_bytes(store: SqliteArtifactStore, db, backend: str) -> None:
    first = store.store(b"{workflow}", content_type="application/json", run_id="r1")
    copy = store.store_copy(first, b"{workflow}", run_id="r2")
    assert copy.blob_id == first.blob_id and store.load(copy.artifact_id).content == b"{workflow}"
    # Retention removed the blob with the last row using it: store_copy stores the bytes again.
    _age_blobs(db, backend)
    store.delete(first.artifact_id)
    store.delete(copy.artifact_id)
    assert not store.blobs.exists(first.blob_id)
    again = store.store_copy(first, b"{workflow}", run_id="r3")
    assert store.load(again.artifact_id).content == b"{workflow}"


def _old_run(run_id: str) -> SeedRun:
    old = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    return SeedRun(run_id, "b@1:f", "completed", old, old, ledger=1)


def test_retention_removes_bytes_only_when_unreferenced(db, backend: str, tmp_path: Path) -> None:
    recent = datetime.now(UTC).isoformat()
    seed_runs(
        db, [_old_run("old-1"), _old_run("old-2"), SeedRun("new", "b@1:f", "completed", recent, recent)]
    )
    store = SqliteArtifactStore(db, tmp_path / "artifacts")
    own = store.store(b"only old-1's bytes", run_id="old-1")
    shared_old = store.store(b"bytes two runs share", run_id="old-2")
    shared_new = store.store(b"bytes two runs share", run_id="new")
    _age_blobs(db, backend)
    retention = Retention(db, tmp_path / "artifacts", retention_days=30, yield_s=0)
    while retention.step():
        pass
    assert db.query_one("SELECT count(*) FROM runs") == (1,)
    assert retention.stats.artifacts_deleted == 2 and retention.stats.blobs_deleted == 1
    assert not store.blobs.exists(own.blob_id)
    assert store.load(shared_new.artifact_id).content == b"bytes two runs share"
    assert store.load(shared_old.artifact_id) is None
    if backend == "postgresql":
        assert _blob_rows(db) == 1 and _files(tmp_path / "artifacts") == []
    else:
        assert len(_files(tmp_path / "artifacts")) == 1


def _die_between_put_and_row(db, backend: str, tmp_path: Path, content: bytes) -> None:
    """A real process stores an artifact and is killed (os._exit) after its blob is put, before the
    row: what the unit of work does when a runner dies mid-step."""
    target = db.url if backend == "postgresql" else str(db.path)
    script = (
        "import os, sys\n"
        "from shared_store.backend import connect_store\n"
        "from shared_store.artifact_store import SqliteArtifactStore\n"
        "store = SqliteArtifactStore(connect_store(sys.argv[1]), sys.argv[2])\n"
        "def put_then_die(blob_id, content, _put=store.blobs.put):\n"
        "    _put(blob_id, content)\n"
        "    os._exit(9)\n"
        "store.blobs.put = put_then_die\n"
        "store.store(sys.stdin.buffer.read(), run_id='r1', content_type='image/png')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    died = subprocess.run(
        [sys.executable, "-c", script, target, str(tmp_path / "artifacts")],
        input=content,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == 9, died.stderr.decode()


def test_a_store_killed_between_its_put_and_its_row_leaves_nothing_to_trip_on(
    store: SqliteArtifactStore, db, backend: str, tmp_path: Path
) -> None:
    content = b"\x89PNG" + os.urandom(3000)
    blob_id = hashlib.sha256(content).hexdigest()
    _die_between_put_and_row(db, backend, tmp_path, content)
    assert store.blobs.get(blob_id) == content, "the bytes are complete (put before any row)"
    assert db.query_one("SELECT count(*) FROM artifacts") == (0,), "no row without its bytes, no row at all"
    assert store.list_by_run("r1") == [] and store.list_all() == []
    # Storing the same bytes again works and reads back whole; then the artifact goes cleanly.
    meta = store.store(content, run_id="r1", content_type="image/png")
    assert store.load(meta.artifact_id).content == content
    _age_blobs(db, backend)
    assert store.delete(meta.artifact_id) is True and not store.blobs.exists(blob_id)


def test_the_orphan_a_dead_store_left_is_swept_past_the_grace_window(
    store: SqliteArtifactStore, db, backend: str, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite: an unreferenced file is left on disk, as it always was (files are not swept)")
    kept = store.store(b"named by a row", run_id="r1")
    content = os.urandom(2000)
    _die_between_put_and_row(db, backend, tmp_path, content)
    orphan = hashlib.sha256(content).hexdigest()
    retention = Retention(db, tmp_path / "artifacts", retention_days=30, yield_s=0)
    assert retention.step() == 0 and store.blobs.exists(orphan), "within the window: maybe a row is coming"
    _age_blobs(db, backend)
    retention._next_look = retention._next_sweep = 0.0
    assert retention.step() == 0
    assert retention.stats.blobs_deleted == 1 and not store.blobs.exists(orphan)
    assert store.load(kept.artifact_id).content == b"named by a row", "a named blob is never swept"
