"""Retention at the store: big trees go deepest first in bounded batches; old dbs switch vacuum mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import apsw

from shared_store import Database, migrate
from shared_store.retention import Retention, enable_incremental_vacuum
from shared_store.run_seed import SeedRun, seed_runs

OLD = datetime.now(UTC) - timedelta(days=100)


def _run(run_id: str, parent: str | None = None) -> SeedRun:
    return SeedRun(
        run_id, "b@1:f", "completed", OLD.isoformat(), OLD.isoformat(), parent_run_id=parent, ledger=2
    )


def test_a_tree_larger_than_a_batch_goes_deepest_first_and_never_orphans(
    db: Database, tmp_path: Path
) -> None:
    runs = [_run("root")] + [_run(f"c{i}", "root") for i in range(30)]
    runs += [_run(f"g{i}", f"c{i % 30}") for i in range(60)]
    seed_runs(db, runs)
    retention = Retention(db, tmp_path / "artifacts", retention_days=30, batch=25, yield_s=0)
    steps = 0
    while retention.step():
        steps += 1
        orphans = db.query(
            "SELECT count(*) FROM runs c WHERE c.parent_run_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM runs p WHERE p.run_id = c.parent_run_id)"
        )
        assert orphans == [(0,)], "a batch removed a parent before its children"
    assert steps == 4  # 91 runs, 25 per batch
    assert db.query_one("SELECT count(*) FROM runs") == (0,)
    assert db.query_one("SELECT count(*) FROM ledger") == (0,)
    assert retention.stats.runs_deleted == 91


def test_an_old_db_switches_to_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE kept (x)")
    conn.execute("INSERT INTO kept VALUES (1)")
    conn.close()
    db = Database(path)
    try:
        migrate(db)
        assert db.query_one("PRAGMA auto_vacuum") == (0,), "an existing file keeps its mode"
        enable_incremental_vacuum(db)
        assert db.query_one("PRAGMA auto_vacuum") == (2,)
        assert db.query_one("SELECT x FROM kept") == (1,)
        assert db.query_one("PRAGMA integrity_check") == ("ok",)
    finally:
        db.close()
