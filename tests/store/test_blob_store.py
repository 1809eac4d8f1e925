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
import threading
import time
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


_DANGLING = "SELECT count(*) FROM artifacts a WHERE NOT EXISTS (SELECT 1 FROM artifact_blobs b WHERE b.blob_id = a.blob_id)"


def test_deletes_racing_stores_of_the_same_bytes_never_leave_a_row_without_bytes(
    db, backend: str, tmp_path: Path
) -> None:
    """PostgreSQL, READ COMMITTED, two hosts: one keeps storing artifacts of the same bytes (as every
    run of a workflow stores its snapshot) while the other deletes them as fast as it can, the bytes
    starting past the grace window so deletion is possible. Every row left points at its bytes."""
    if backend != "postgresql":
        pytest.skip("SQLite: one machine's files and no grace window (its behaviour is unchanged)")
    from shared_store.postgres.database import PgDatabase

    content = b"{the shared workflow snapshot}"
    store = SqliteArtifactStore(db, tmp_path / "artifacts")
    first = store.store(content, run_id="r0")
    stop = threading.Event()
    errors: list[BaseException] = []
    stored: list[str] = []
    dangling: list[int] = []  # rows seen without their bytes, each look (one statement: one snapshot)
    deleted_blobs = [0]

    def storer() -> None:
        other = PgDatabase(db.url, data_dir=tmp_path)
        mine = SqliteArtifactStore(other, tmp_path / "artifacts")
        put, touch = mine.blobs.put, mine.blobs.touch

        # The lag between a put and its row's commit (the runner's unit commits the row with the
        # run's next save), widened so the deleter gets in between.
        def slow_put(blob_id: str, data: bytes) -> None:
            put(blob_id, data)
            time.sleep(0.003)

        def slow_touch(blob_id: str) -> bool:
            there = touch(blob_id)
            time.sleep(0.003)
            return there

        mine.blobs.put, mine.blobs.touch = slow_put, slow_touch  # type: ignore[method-assign]
        try:
            for i in range(150):
                # Past the window again: the deleter may take the bytes from here on.
                other.execute_write("UPDATE artifact_blobs SET put_at = put_at - ?", (GRACE_S,))
                meta = (
                    mine.store_copy(first, content, run_id=f"run-{i}")
                    if i % 2
                    else mine.store(content, run_id=f"run-{i}")
                )
                stored.append(meta.artifact_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()
            other.close()

    def deleter() -> None:
        other = PgDatabase(db.url, data_dir=tmp_path)
        mine = SqliteArtifactStore(other, tmp_path / "artifacts")
        try:
            delete_unreferenced = mine.blobs.delete_unreferenced

            def counted(blob_id: str) -> bool:
                gone = delete_unreferenced(blob_id)
                deleted_blobs[0] += gone
                return gone

            mine.blobs.delete_unreferenced = counted  # type: ignore[method-assign]
            while not stop.is_set():
                for (artifact_id,) in other.query("SELECT artifact_id FROM artifacts LIMIT 5"):
                    mine.delete(str(artifact_id))
                dangling.append(int(other.query_one(_DANGLING)[0]))
        except BaseException as exc:
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=storer), threading.Thread(target=deleter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == [] and len(stored) == 150
    assert deleted_blobs[0] > 0, "the bytes were deleted (and put again) during the race"
    assert max(dangling) == 0, f"rows without their bytes seen {sum(map(bool, dangling))} times"
    rows = db.query(
        "SELECT a.artifact_id, b.blob_id FROM artifacts a LEFT JOIN artifact_blobs b USING (blob_id)"
    )
    assert all(blob is not None for _, blob in rows), "a committed row without its bytes"
    for artifact_id, _ in rows:
        assert store.load(str(artifact_id)).content == content
