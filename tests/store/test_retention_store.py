"""Retention at the store: big trees go deepest first in bounded batches; old dbs switch vacuum mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import apsw
import pytest

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


@pytest.mark.sqlite_only("SQLite's query plans (EXPLAIN QUERY PLAN)")
def test_retention_and_list_statements_stay_on_their_indexes(db: Database) -> None:
    from shared_store import retention as r
    from shared_store.bulk_ops import BULK_OUTCOMES, NEXT_EXPANDING
    from shared_store.webhooks import CLAIM_DUE, DELIVERIES_OF

    ids = {"ids": '["a"]'}
    statements = [(s, ids) for s in (*r._DELETE, r._DELETE_ARTIFACTS, r.DELETE_RUNS)]
    statements += [
        (r._EXPIRED_BY_AGE, {"status": "completed", "cutoff": "x", "n": 3}),
        (r._EXPIRED_BY_TTL, {"now": 1.0, "n": 3}),
        (r._TREE, {"root": "x"}),
        (BULK_OUTCOMES, {"lo": "bulk:x:", "hi": "bulk:x;"}),
        (NEXT_EXPANDING, ()),
        (CLAIM_DUE, {"until": 1.0, "now": 1.0, "n": 3, "iso": "x"}),
        (DELIVERIES_OF, {"webhook_id": "w", "limit": 3}),
    ]
    for sql, params in statements:
        plan = " | ".join(str(row[-1]) for row in db.query(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "SCAN r" not in plan and "SCAN runs" not in plan and "SCAN commands" not in plan, (sql, plan)
        assert "SCAN webhook_deliveries" not in plan and "SCAN ledger" not in plan, (sql, plan)
        assert "USING INDEX runs_status_updated (status=?) |" not in plan + " |", (sql, plan)


@pytest.mark.sqlite_only("SQLite's query plans (EXPLAIN QUERY PLAN)")
def test_runs_list_pages_walk_an_index_in_page_order(db: Database) -> None:
    """Every filter the benchmark times reads its page in index order: no sort of all matches."""
    from bench.bench_ops import filter_cases
    from shared_store.run_filter import RunFilter
    from shared_store.run_list import page_sql

    for name, query in filter_cases(1_000).items():
        for cursor in (None, ("2026-01-01T00:00:00+00:00", "x")):
            params: dict = {"limit": 50}
            sql = page_sql(RunFilter.parse(query), params, cursor=cursor, offset=0)
            steps = [str(row[-1]) for row in db.query(f"EXPLAIN QUERY PLAN {sql}", params)]
            plan = " | ".join(steps)
            # Only a status arm's own output (at most limit + offset rows) may be sorted, for the merge.
            for i, step in enumerate(steps):
                if step == "USE TEMP B-TREE FOR ORDER BY":
                    assert steps[i - 1].startswith("SCAN arm"), (name, plan)  # an arm: arm0, arm1, ...
            assert "SCAN r |" not in plan + " |" and "SCAN runs |" not in plan + " |", (name, plan)
