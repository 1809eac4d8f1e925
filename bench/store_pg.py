"""bench_store on PostgreSQL (`--backend postgresql`): the cases the report's PostgreSQL column shows.

- claims, 16 per claim, by 1 and 2 claimer processes (LeaseHolder.claim: the FOR UPDATE SKIP LOCKED
  twin), every run claimed exactly once;
- the per-step RunState save (~130 KB, bench/state_saves.py) with run_states compressed by lz4 (what
  migrations/postgresql/0001 sets) and by pglz (PostgreSQL's default), each on a fresh database: saves/s,
  the bytes stored and the WAL written per save.

Setup rows go in with plain psycopg (executemany in one transaction): setup, not the measured path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.pg_server import BenchPostgres
from bench.state_saves import big_state, pg_column_facts, set_compression, timed_saves, wal_lsn
from shared_store.backend import connect_store
from shared_store.codec import encode


def report(line: str) -> None:
    print(line, flush=True)


def pg_claimable_runs(url: str, run_ids: list[str]) -> None:
    """`run_ids` as running runs, unleased and due one after another (in run_id order)."""
    import psycopg

    now = time.time()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at, due_at) "
            "VALUES (%s, 'bench', 'running', '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00', %s)",
            [(run_id, now - 60 + i * 1e-3) for i, run_id in enumerate(run_ids)],
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE runs")


def pg_reset_claimable(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, due_at = x.due "
            "FROM (SELECT run_id, extract(epoch FROM now()) - 60 + row_number() OVER (ORDER BY run_id) "
            "* 1e-3 AS due FROM runs) x WHERE runs.run_id = x.run_id"
        )
        # The update left a dead version of every row: without a vacuum the first case's claims would
        # step over them and the second case's less (the order of cases would bias the numbers).
        conn.execute("VACUUM ANALYZE runs")


def pg_claims(pg: BenchPostgres, claim_runs: int) -> list[dict[str, Any]]:
    from bench.bench_store import claim_case

    url = pg.fresh("bench_claims")
    run_ids = [f"claim-run-{i:06d}" for i in range(claim_runs)]
    pg_claimable_runs(url, run_ids)
    out = []
    for processes in (1, 2):
        pg_reset_claimable(url)
        out.append(claim_case(url, processes, 16, len(run_ids), "claims (PostgreSQL)"))
    pg.drop("bench_claims")
    return out


def pg_state_saves(pg: BenchPostgres, flows_dir: Path, saves: int) -> dict[str, Any]:
    state = big_state(flows_dir)
    out: dict[str, Any] = {"state_bytes": float(len(encode(state)))}
    for method in ("lz4", "pglz"):
        name = f"bench_saves_{method}"
        url = pg.fresh(name)
        set_compression(url, method)
        db = connect_store(url)
        try:
            wal0 = wal_lsn(url)
            case = timed_saves(db, state, saves, f"saves-{method}")
            case["wal_bytes_per_save"] = (wal_lsn(url) - wal0) / (saves + 6)  # +1 create, +5 warm-up
            case.update(pg_column_facts(url, f"saves-{method}"))
        finally:
            db.close()
            pg.drop(name)
        out[method] = case
        report(
            f"RunState save, {out['state_bytes'] / 1e3:.0f} KB state, PostgreSQL run_states {method}: "
            f"{case['saves_per_s']:,.0f} saves/s ({case['ms_per_save']:.2f} ms each; stored "
            f"{case['stored_bytes'] / 1e3:.0f} KB as {case['compression']}, "
            f"{case['wal_bytes_per_save'] / 1e3:.0f} KB of WAL per save)"
        )
    return out


def sqlite_state_saves(tmp: Path, flows_dir: Path, saves: int) -> dict[str, Any]:
    from bench.bench_store import fresh_db

    state = big_state(flows_dir)
    db = fresh_db(tmp, "state_saves.db")
    try:
        case = timed_saves(db, state, saves, "saves-sqlite")
    finally:
        db.close()
    report(
        f"RunState save, {len(encode(state)) / 1e3:.0f} KB state, SQLite: {case['saves_per_s']:,.0f} saves/s "
        f"({case['ms_per_save']:.2f} ms each)"
    )
    return {"state_bytes": float(len(encode(state))), "sqlite": case}
