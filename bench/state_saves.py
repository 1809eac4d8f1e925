"""The per-step RunState save: a runner saves a run's whole state after every step, so a large state
is written (and on PostgreSQL TOAST-compressed and WAL-logged) over and over.

The state is real: chain-effects-200 ticked to completion in memory (~109 KB of msgspec JSON: 200
node traces and outputs), plus a chat transcript of pseudo-random words in vars to bring it to
~130 KB, the size the issue names. Each save bumps `updated_at` (so no two saves write the same
bytes) and is its own fenced commit through shared_store.run_store, the path a runner's save takes
when it cannot be staged."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from abstractruntime import Runtime
from abstractruntime.core.models import RunState
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from abstractruntime.visualflow_compiler import compile_visualflow
from abstractruntime.workflow_bundle import open_workflow_bundle

from shared_store import LeaseHolder
from shared_store.codec import encode, utc_now_iso
from shared_store.db import Database
from shared_store.run_store import SqliteRunStore

STATE_FLOW = "chain-effects-200@0.1.0.flow"
STATE_TARGET_BYTES = 130_000
# A chat transcript's words: text that compresses like prose, not like the repeated trace records.
WORDS = ("the", "run", "step", "node", "tool", "call", "answer", "user", "model", "token", "output", "input",
         "flow", "ledger", "state", "lease", "runner", "gateway", "store", "commit", "page", "cursor")  # fmt: skip


def big_state(flows_dir: Path) -> RunState:
    """A completed chain-effects-200 RunState grown to ~STATE_TARGET_BYTES with a transcript."""
    bundle = open_workflow_bundle(str(flows_dir / STATE_FLOW))
    manifest = bundle.manifest
    spec = compile_visualflow(bundle.read_json(manifest.flows[manifest.default_entrypoint]))
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    run_id = runtime.start(workflow=spec, vars={})
    state = runtime.tick(workflow=spec, run_id=run_id, max_steps=10_000)
    rng = random.Random(7)
    messages: list[dict[str, str]] = []
    state.vars["transcript"] = messages
    while len(encode(state)) < STATE_TARGET_BYTES:
        text = " ".join(rng.choice(WORDS) for _ in range(60))
        messages.append({"role": rng.choice(("user", "assistant")), "content": text})
    return state


def timed_saves(db: Database, state: RunState, saves: int, run_id: str) -> dict[str, float]:
    """Saves/s of `state` as run `run_id` (created, then claimed by the bench's fence first)."""
    state.run_id = run_id
    SqliteRunStore(db).save(state)  # the run exists unleased ...
    fence = LeaseHolder(db, f"bench-saves-{run_id}", lease_s=600)
    db.execute_write("UPDATE runs SET due_at = 0 WHERE run_id = ?", (run_id,))
    if not fence.claim(1):  # ... and this holder leases it, as a runner would
        raise RuntimeError(f"the bench could not claim {run_id} for its saves")
    store = SqliteRunStore(db, fence=fence)
    for _ in range(5):  # warm-up: statement caches, the first TOAST pages
        state.updated_at = utc_now_iso()
        store.save(state)
    started = time.perf_counter()
    for _ in range(saves):
        state.updated_at = utc_now_iso()
        store.save(state)
    seconds = time.perf_counter() - started
    return {"saves": float(saves), "saves_per_s": saves / seconds, "ms_per_save": seconds / saves * 1e3}


def pg_column_facts(url: str, run_id: str) -> dict[str, Any]:
    """How PostgreSQL stored the state: bytes on disk and the compression method of the value."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_column_size(run_json), octet_length(run_json), pg_column_compression(run_json) "
            "FROM run_states WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert row is not None, f"no run_states row for {run_id}"
    return {"stored_bytes": float(row[0]), "json_bytes": float(row[1]), "compression": row[2] or "none"}


def wal_lsn(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def set_compression(url: str, method: str) -> None:
    """run_states' TOAST compression (migrations/postgresql/0001 sets lz4): the bench compares both."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE run_states ALTER COLUMN run_json SET COMPRESSION {method}, "
            f"ALTER COLUMN start_json SET COMPRESSION {method}"
        )
