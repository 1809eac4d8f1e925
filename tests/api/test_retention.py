"""Retention over a real Hypercorn and runner process: exactly the expired runs go (with ledgers,
commands, children, labels, artifacts and their bytes: files on SQLite, artifact_blobs rows on
PostgreSQL); live, held and recent runs stay; the SQLite db passes integrity_check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared_store.artifact_store import SqliteArtifactStore
from shared_store.blob_store import GRACE_S
from shared_store.run_seed import SeedRun, seed_runs
from tests.backends import on_postgres, store_args

from .conftest import TERMINAL, Gateway, make_gateway, stop_process


def _seed(status: str, ended_days_ago: float, **extra: object) -> SeedRun:
    ended = datetime.now(UTC) - timedelta(days=ended_days_ago)
    run_id = f"seed-{status}-{time.monotonic_ns()}"
    return SeedRun(
        run_id=run_id,
        workflow_id="bench-echo@1.0.0:echo",
        status=status,
        created_at=(ended - timedelta(minutes=1)).isoformat(),
        updated_at=ended.isoformat(),
        tags=("retained",),
        metadata={"k": "v"},
        ledger=3,
        commands=2,
        **extra,  # type: ignore[arg-type]
    )


def _count(gw: Gateway, table: str, ids: list[str]) -> int:
    marks = ",".join("?" * len(ids))
    return int(gw.db.query_one(f"SELECT count(*) FROM {table} WHERE run_id IN ({marks})", ids)[0])  # type: ignore[index]


def test_retention_deletes_exactly_the_expired_runs(tmp_path: Path, flows: Path) -> None:
    with make_gateway(tmp_path, flows) as gw:
        old = [_seed("completed", 60), _seed("failed", 45), _seed("cancelled", 31)]
        child = _seed("completed", 61, parent_run_id=old[0].run_id)
        grandchild = _seed("completed", 61, parent_run_id=child.run_id)
        waiting = _seed("waiting", 60)
        held = _seed("completed", 60)
        live_root = _seed("completed", 60)
        live_child = _seed("running", 60, parent_run_id=live_root.run_id)
        recent = [_seed("completed", 1), _seed("failed", 29)]
        seed_runs(gw.db, [*old, child, grandchild, waiting, held, live_root, live_child, *recent])
        gw.db.execute_write(
            "UPDATE runs SET lease_owner = 'another-runner', lease_expires_at = ? WHERE run_id = ?",
            (time.time() + 3_600, held.run_id),
        )
        artifacts = SqliteArtifactStore(gw.db, tmp_path / "artifacts")
        own_blob = artifacts.store(b"only the old run's bytes", run_id=old[0].run_id)
        deep_blob = artifacts.store(b"the grandchild's bytes", run_id=grandchild.run_id)
        shared = b"bytes two runs share"
        artifacts.store(shared, run_id=old[1].run_id)
        kept_artifact = artifacts.store(shared, run_id=recent[0].run_id)
        if on_postgres():  # database blobs go only once their last put is past the grace window
            gw.db.execute_write("UPDATE artifact_blobs SET put_at = put_at - ?", (GRACE_S + 60,))

        # Through the API: runs with a ttl expire a second after they end; others stay.
        ttl_runs = [gw.start("bench-echo", {"message": "t"}, ttl_s=1) for _ in range(2)]
        plain = gw.start("bench-echo", {"message": "p"})

        env = {
            **os.environ,
            "ABSTRACTGATEWAY_RETENTION_DAYS": "30",
            "ABSTRACTGATEWAY_DATA_DIR": str(gw.db_path.parent),  # on PostgreSQL too: the test's dir
        }
        args = [
            sys.executable,
            "-m",
            "abstractgateway",
            "runner",
            *store_args(gw.db_path),
            "--flows-dir",
            str(flows),
        ]
        with (tmp_path / "runner.log").open("ab") as log:
            runner = subprocess.Popen(
                [*args, "--poll-s", "0.02"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            gw.wait_for(plain, lambda v: v["status"] in TERMINAL)
            expired = [r.run_id for r in (*old, child, grandchild)] + ttl_runs
            for _ in range(1_500):
                if _count(gw, "runs", expired) == 0:
                    break
                time.sleep(0.02)
        finally:
            stop_process(runner)

        kept = [r.run_id for r in (waiting, held, live_root, live_child, *recent)] + [plain]
        assert _count(gw, "runs", expired) == 0
        assert _count(gw, "runs", kept) == len(kept)
        for table in ("ledger", "commands", "run_states", "run_tags", "run_metadata", "artifacts"):
            assert _count(gw, table, expired) == 0, table
        assert _count(gw, "ledger", kept) >= 3 * 6 and _count(gw, "run_tags", kept) == 6
        for run_id in expired:
            assert gw.client.get(f"/api/gateway/runs/{run_id}").status_code == 404
        assert gw.run(recent[0].run_id)["tags"] == ["retained"]

        # Bytes: gone when no artifact references them, kept when a kept run shares them.
        assert not artifacts.blobs.exists(own_blob.blob_id)
        assert not artifacts.blobs.exists(deep_blob.blob_id)
        assert artifacts.blobs.exists(kept_artifact.blob_id)
        assert artifacts.load(kept_artifact.artifact_id) is not None
        if not on_postgres():
            assert artifacts.blob_path(kept_artifact.blob_id).exists(), "SQLite: bytes are files, as ever"
            assert gw.db.query_one("PRAGMA integrity_check") == ("ok",)
            assert gw.db.query_one("PRAGMA auto_vacuum") == (2,)
