"""Store benchmark: command and ledger appends, ledger page reads, claims across processes (plain, and
over 1,000 concurrency keys with priorities), ticks.

Run from the repo root: `python -m bench.bench_store [--quick] [--flows-dir DIR]` (or
`python bench/bench_store.py`). Everything lives in a temp dir. Prints one human-readable line per
measurement, then one JSON line `{"bench": "store", ...}` with every number. Targets are reported as
MET/MISSED; a missed target never changes the exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # `python bench/bench_store.py`: make the repo root importable like `python -m` does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abstractruntime import Runtime
from abstractruntime.core.models import RunState, StepRecord, StepStatus
from abstractruntime.storage.sqlite import SqliteDatabase
from abstractruntime.storage.sqlite import SqliteLedgerStore as ArLedgerStore
from abstractruntime.storage.sqlite import SqliteRunStore as ArRunStore
from abstractruntime.visualflow_compiler import compile_visualflow
from abstractruntime.workflow_bundle import open_workflow_bundle

from bench.options import bench_parser
from bench.pg_server import add_backend_options, bench_postgres, unavailable_line, unavailable_reason
from bench.store_pg import pg_claims, pg_state_saves, sqlite_state_saves
from shared_store import Database, LeaseHolder, migrate
from shared_store.backend import connect_store
from shared_store.flow_control import FAIR_STEP_S
from shared_store.inbox import append_command
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.reads import joined_ledger_page, ledger_page
from shared_store.run_store import SqliteRunStore

REPO = Path(__file__).resolve().parent.parent
TICK_FLOW = "chain-effects-200@0.1.0.flow"
TICK_STEPS_PER_RUN = 200

# Targets (printed as MET/MISSED).
PAGE_P50_TARGET_MS = 1.0
CLAIMS_TARGET_PER_S = 10_000.0
STARVED_TARGET_MS = 100.0
TICK_RATIO_TARGET = 2.0
CLAIM_KEYS = 1_000


@dataclass(frozen=True)
class Sizes:
    command_appends: int
    ledger_appends: int
    page_runs: int
    page_records_per_run: int
    page_reads: int
    claim_runs: int
    tick_rounds: int
    tick_runs_per_round: int
    state_saves: int  # of a ~130 KB RunState, per store (bench/state_saves.py)


FULL = Sizes(5_000, 20_000, 1_000, 1_000, 500, 20_000, 3, 5, 300)
QUICK = Sizes(2_000, 5_000, 200, 1_000, 300, 10_000, 3, 3, 60)


# --- helpers ----------------------------------------------------------------------------------------
def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency that really happened)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def timed_calls(calls: int, call: Callable[[int], object]) -> tuple[float, list[float]]:
    """Total seconds and per-call seconds of call(0..calls-1)."""
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies


def fresh_db(tmp: Path, name: str) -> Database:
    db = Database(tmp / name)
    migrate(db)
    return db


def save_runs(db: Database, count: int, prefix: str, fence: LeaseHolder | None = None) -> list[str]:
    """Runs created through the store itself: targets for appends (born leased to `fence` if given)."""
    store = SqliteRunStore(db, fence=fence)
    run_ids = [f"{prefix}-{i}" for i in range(count)]
    for run_id in run_ids:
        store.save(RunState.new(workflow_id="bench", entry_node="start", run_id=run_id))
    return run_ids


def bulk_runs(
    db: Database, run_ids: list[str], *, status: str, due_at: Callable[[int], float | None]
) -> None:
    """Runs rows by plain SQL in one transaction: setup for benches that need many of them."""
    now_iso = "2025-01-01T00:00:00+00:00"
    rows = ((run_id, status, now_iso, now_iso, due_at(i)) for i, run_id in enumerate(run_ids))
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at, due_at) "
            "VALUES (?, 'bench', ?, ?, ?, ?)",
            rows,
        )


def checkpoint(db: Database) -> None:
    """Fold setup writes into the db file, so the first timed commit does not pay their checkpoint."""
    db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")


def report(line: str) -> None:
    print(line, flush=True)


# --- 1. command appends -------------------------------------------------------------------------------
def bench_command_appends(tmp: Path, sizes: Sizes) -> dict[str, float]:
    db = fresh_db(tmp, "commands.db")
    run_ids = save_runs(db, 8, "cmd-run")

    def one(i: int) -> None:
        append_command(db, command_id=f"cmd-{i}", run_id=run_ids[i % len(run_ids)], type="pause", payload={})

    total, lat = timed_calls(sizes.command_appends, one)
    db.close()
    out = {
        "per_s": sizes.command_appends / total,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
    }
    report(
        f"command appends: {out['per_s']:,.0f}/s ({sizes.command_appends} single-row commits; "
        f"p50 {out['p50_ms']:.3f} ms, p99 {out['p99_ms']:.3f} ms)"
    )
    return out


# --- 2. ledger appends --------------------------------------------------------------------------------
def step_record(run_id: str, i: int) -> StepRecord:
    """A completed answer_user step, about the size the runtime writes for a short effect."""
    record = StepRecord(
        run_id=run_id,
        step_id=str(uuid.uuid4()),
        node_id=f"answer_{i}",
        status=StepStatus.COMPLETED,
        effect={"type": "answer_user", "payload": {"message": f"step {i}"}, "result_key": None},
        result={"message": f"step {i}"},
        idempotency_key=f"{run_id}:answer_{i}:1",
    )
    record.ended_at = record.started_at
    return record


def ledger_append_rate(db: Database, label: str, fenced: bool, count: int) -> dict[str, float]:
    fence = LeaseHolder(db, f"bench-{label}", lease_s=600) if fenced else None
    run_ids = save_runs(db, 8, f"ledger-{label}", fence)
    store = SqliteLedgerStore(db, fence=fence)
    records = [step_record(run_ids[i % len(run_ids)], i) for i in range(count)]
    total, lat = timed_calls(count, lambda i: store.append(records[i]))
    out = {f"{label}_per_s": count / total, f"{label}_p99_ms": percentile(lat, 99) * 1e3}
    report(
        f"ledger appends ({label}): {out[f'{label}_per_s']:,.0f}/s "
        f"({count} single-record commits; p99 {out[f'{label}_p99_ms']:.3f} ms)"
    )
    return out


def bench_ledger_appends(tmp: Path, sizes: Sizes) -> dict[str, float]:
    """Single-record appends, unfenced (tools) and fenced (what a runner does)."""
    db = fresh_db(tmp, "ledger_appends.db")
    out = ledger_append_rate(db, "unfenced", False, sizes.ledger_appends)
    out.update(ledger_append_rate(db, "fenced", True, sizes.ledger_appends))
    db.close()
    return out


# --- 3. ledger page reads -----------------------------------------------------------------------------
def record_bytes(run_id: str, seq: int) -> bytes:
    """~300 bytes of StepRecord-shaped JSON (what a page read hands back unparsed)."""
    return (
        f'{{"run_id":"{run_id}","step_id":"{uuid.UUID(int=seq).hex}","node_id":"answer_{seq}",'
        f'"status":"completed","effect":{{"type":"answer_user","payload":{{"message":"step {seq}"}},'
        f'"result_key":null}},"result":{{"message":"step {seq}"}},"error":null,'
        f'"started_at":"2025-01-01T00:00:00.000000+00:00","ended_at":"2025-01-01T00:00:00.000100+00:00",'
        f'"attempt":1,"idempotency_key":"{run_id}:answer_{seq}:1"}}'
    ).encode()


def ledger_rows(run_ids: list[str], per_run: int) -> Iterator[tuple[str, int, str, str, bytes]]:
    """Round-robin across runs (runs interleave, as concurrent runners write them), seq order per run."""
    for seq in range(1, per_run + 1):
        for run_id in run_ids:
            yield run_id, seq, "completed", f"{run_id}:answer_{seq}:1", record_bytes(run_id, seq)


def build_big_ledger(tmp: Path, sizes: Sizes) -> tuple[Database, list[str], float]:
    db = fresh_db(tmp, "ledger_pages.db")
    run_ids = [f"page-run-{i:05d}" for i in range(sizes.page_runs)]
    started = time.perf_counter()
    bulk_runs(db, run_ids, status="completed", due_at=lambda _i: None)
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO ledger (run_id, seq, step_status, idempotency_key, record) VALUES (?, ?, ?, ?, ?)",
            ledger_rows(run_ids, sizes.page_records_per_run),
        )
    build_s = time.perf_counter() - started
    checkpoint(db)
    return db, run_ids, build_s


def bench_ledger_pages(tmp: Path, sizes: Sizes) -> dict[str, float]:
    db, run_ids, build_s = build_big_ledger(tmp, sizes)
    total_records = len(run_ids) * sizes.page_records_per_run
    size_mb = (tmp / "ledger_pages.db").stat().st_size / 2**20
    report(
        f"ledger build: {total_records:,} records over {len(run_ids)} runs in {build_s:.1f} s ({size_mb:.0f} MiB)"
    )
    rng = random.Random(7)
    limit = 1000
    per_run = sizes.page_records_per_run

    def read(after_of: Callable[[], int], joined: bool = False) -> list[float]:
        picks = [(rng.choice(run_ids), after_of()) for _ in range(sizes.page_reads)]
        for run_id, after in picks[:20]:  # warm the page cache and statement cache
            ledger_page(db, run_id, after=after, limit=limit)
        lat: list[float] = []
        for run_id, after in picks:
            t0 = time.perf_counter()
            if joined:
                count = joined_ledger_page(db, run_id, after=after, limit=limit)[2]
            else:
                count = len(ledger_page(db, run_id, after=after, limit=limit).records)
            lat.append(time.perf_counter() - t0)
            assert count == min(limit, per_run - after), "page returned the wrong count"
        return lat

    head = read(lambda: 0)
    offset = read(lambda: rng.randrange(per_run))
    joined = read(lambda: 0, joined=True)
    db.close()
    out = {
        "records": float(total_records),
        "build_s": build_s,
        "db_mib": size_mb,
        "head_p50_ms": percentile(head, 50) * 1e3,
        "head_p99_ms": percentile(head, 99) * 1e3,
        "offset_p50_ms": percentile(offset, 50) * 1e3,
        "offset_p99_ms": percentile(offset, 99) * 1e3,
        "joined_p50_ms": percentile(joined, 50) * 1e3,
        "joined_p99_ms": percentile(joined, 99) * 1e3,
    }
    report(
        f"ledger page (after=0, {limit} records): p50 {out['head_p50_ms']:.3f} ms, p99 {out['head_p99_ms']:.3f} ms "
        f"[target p50 <= {PAGE_P50_TARGET_MS:g} ms: {verdict(out['head_p50_ms'] <= PAGE_P50_TARGET_MS)}]"
    )
    report(
        f"ledger page (after=random): p50 {out['offset_p50_ms']:.3f} ms, p99 {out['offset_p99_ms']:.3f} ms "
        f"({sizes.page_reads} reads each)"
    )
    report(
        f"ledger page (after=0, as one joined value): p50 {out['joined_p50_ms']:.3f} ms, "
        f"p99 {out['joined_p99_ms']:.3f} ms"
    )
    return out


# --- 4. claims across runner processes ----------------------------------------------------------------
@dataclass
class ClaimerResult:
    owner: str
    run_ids: list[str]
    latencies: list[float]
    started: float
    finished: float


def claimer(target: str, owner: str, batch: int, barrier: Any, results: Any) -> None:
    """One runner process: claim until nothing is left (no release: each run is claimed once).
    `target`: the SQLite file, or a postgresql:// URL."""
    db = connect_store(target)
    holder = LeaseHolder(db, owner, lease_s=600)
    db.query_one("SELECT 1")  # the connection is open before the clock starts: not timed
    claimed: list[str] = []
    latencies: list[float] = []
    barrier.wait()
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        leases = holder.claim(batch)
        latencies.append(time.perf_counter() - t0)
        if not leases:
            break
        claimed.extend(lease.run_id for lease in leases)
    finished = time.perf_counter()
    db.close()
    results.put(asdict(ClaimerResult(owner, claimed, latencies, started, finished)))


def reset_claimable(db: Database, count: int) -> None:
    """Make every bench run due and unleased again (bulk SQL: setup, not the measured path)."""
    now = time.time()
    with db.write() as conn:
        conn.execute(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, due_at = ? - (? - rowid) * 1e-3",
            (now - 60, count),
        )
    checkpoint(db)


def tenth_rate(out: ClaimerResult, batch: int, *, first: bool) -> float | None:
    """Runs/s of one claimer over its first (or last) tenth of full claims (the final empty one left out)."""
    full = out.latencies[:-1]
    k = len(full) // 10
    if k == 0:
        return None
    part = full[:k] if first else full[-k:]
    return batch * k / sum(part)


def run_claimers(target: Path | str, processes: int, batch: int, expected: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=claimer, args=(str(target), f"runner-{k}", batch, barrier, results))
        for k in range(processes)
    ]
    for proc in procs:
        proc.start()
    outs = [ClaimerResult(**results.get(timeout=300)) for _ in procs]
    for proc in procs:
        proc.join()
    all_ids = [run_id for out in outs for run_id in out.run_ids]
    elapsed = max(o.finished for o in outs) - min(o.started for o in outs)
    return {
        "processes": processes,
        "batch": batch,
        "claims_per_s": len(all_ids) / elapsed,
        "elapsed_s": elapsed,
        "claimed": len(all_ids),
        "exactly_once": len(all_ids) == expected and len(set(all_ids)) == expected,
        # One claimer's rate over its first and its last tenth of claims: whether claiming slows as
        # the queue drains (on PostgreSQL the claim's index scan steps over entries of leased rows).
        "first_tenth_per_s": tenth_rate(min(outs, key=lambda o: o.owner), batch, first=True),
        "last_tenth_per_s": tenth_rate(min(outs, key=lambda o: o.owner), batch, first=False),
        "per_runner": [
            {
                "owner": o.owner,
                "claimed": len(o.run_ids),
                "p99_ms": percentile(o.latencies, 99) * 1e3,
                "worst_ms": max(o.latencies) * 1e3,
            }
            for o in sorted(outs, key=lambda o: o.owner)
        ],
    }


def claim_case(target: Path | str, processes: int, batch: int, expected: int, what: str) -> dict[str, Any]:
    """One claims case (every run claimed once, by `processes` claimers), reported as it ends."""
    res = run_claimers(target, processes, batch, expected)
    worst = max(r["worst_ms"] for r in res["per_runner"])
    res["met"] = bool(
        res["claims_per_s"] >= CLAIMS_TARGET_PER_S and worst <= STARVED_TARGET_MS and res["exactly_once"]
    )
    runners = ", ".join(
        f"{r['owner']}: {r['claimed']} claimed, p99 {r['p99_ms']:.2f} ms, worst {r['worst_ms']:.1f} ms"
        for r in res["per_runner"]
    )
    report(
        f"{what} (n={batch}, {processes} proc): {res['claims_per_s']:,.0f} runs/s; {runners}; "
        f"each run claimed exactly once: {'yes' if res['exactly_once'] else 'NO'} "
        f"({res['claimed']}/{expected}) "
        f"[target >= {CLAIMS_TARGET_PER_S:,.0f}/s, worst <= {STARVED_TARGET_MS:g} ms: {verdict(res['met'])}]"
    )
    return res


def keyed_runs(db: Database, run_ids: list[str]) -> None:
    """Queued starts spread over CLAIM_KEYS concurrency keys and all five priorities, with the fair
    tags their enqueues would have given them (a key's n-th run FAIR_STEP_S after its (n-1)-th)."""
    now = time.time()
    now_iso = "2025-01-01T00:00:00+00:00"
    rows = (
        (
            run_id,
            now_iso,
            f"tenant:{i % CLAIM_KEYS}",
            1 + (i * 7) % 5,
            now - 60 + (i // CLAIM_KEYS) * FAIR_STEP_S,
        )
        for i, run_id in enumerate(run_ids)
    )
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO runs (run_id, workflow_id, status, created_at, updated_at, concurrency_key, priority, "
            "fair_tag) VALUES (?, 'bench', 'queued', ?2, ?2, ?, ?, ?)",
            rows,
        )


def bench_claims(tmp: Path, sizes: Sizes, *, keys: bool = False) -> list[dict[str, Any]]:
    """Claims of plain runs, or (keys) of queued starts over 1,000 concurrency keys and 5 priorities:
    the claim then walks runs_claim_order by priority and fair tag instead of due time alone."""
    name = "claims_keys.db" if keys else "claims.db"
    db = fresh_db(tmp, name)
    run_ids = [f"claim-run-{i:06d}" for i in range(sizes.claim_runs)]
    if keys:
        keyed_runs(db, run_ids)
    else:
        bulk_runs(db, run_ids, status="running", due_at=lambda _i: None)
    what = f"claims, {CLAIM_KEYS:,} keys" if keys else "claims"
    out: list[dict[str, Any]] = []
    for batch in (1, 16):
        for processes in (1, 2):
            reset_claimable(db, len(run_ids))
            out.append(claim_case(tmp / name, processes, batch, len(run_ids), what))
    db.close()
    return out


# --- 5. abstractruntime ticks -------------------------------------------------------------------------
def tick_runs(rt: Runtime, spec: Any, runs: int) -> float:
    """Steps/s of start + tick-to-completion for `runs` runs of the chain flow."""
    started = time.perf_counter()
    for _ in range(runs):
        run_id = rt.start(workflow=spec, vars={})
        state = rt.tick(workflow=spec, run_id=run_id, max_steps=10_000)
        assert state.status.value == "completed", f"tick ended {state.status} ({state.error})"
    return runs * TICK_STEPS_PER_RUN / (time.perf_counter() - started)


def bench_ticks(tmp: Path, sizes: Sizes, flows_dir: Path) -> dict[str, Any]:
    bundle = open_workflow_bundle(str(flows_dir / TICK_FLOW))
    manifest = bundle.manifest
    spec = compile_visualflow(bundle.read_json(manifest.flows[manifest.default_entrypoint]))

    db = fresh_db(tmp, "tick_ours.db")
    fence = LeaseHolder(db, "bench")
    ours = Runtime(run_store=SqliteRunStore(db, fence=fence), ledger_store=SqliteLedgerStore(db, fence=fence))
    adb = SqliteDatabase(tmp / "tick_ar.db")
    theirs = Runtime(run_store=ArRunStore(adb), ledger_store=ArLedgerStore(adb))
    runtimes = {"ours": ours, "abstractruntime": theirs}

    for rt in runtimes.values():
        tick_runs(rt, spec, 1)  # warm-up: imports, statement caches, first pages
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for rnd in range(sizes.tick_rounds):
        # Alternate who goes first so drift (thermal, page cache) does not favour one side.
        order = list(runtimes) if rnd % 2 == 0 else list(reversed(runtimes))
        for name in order:
            rates[name].append(tick_runs(runtimes[name], spec, sizes.tick_runs_per_round))
    db.close()
    adb.close()

    out: dict[str, Any] = {
        "ours_steps_per_s": statistics.median(rates["ours"]),
        "abstractruntime_steps_per_s": statistics.median(rates["abstractruntime"]),
        "rounds": rates,
    }
    out["ratio"] = out["ours_steps_per_s"] / out["abstractruntime_steps_per_s"]
    report(
        f"tick {TICK_FLOW} ({sizes.tick_rounds} rounds x {sizes.tick_runs_per_round} runs): "
        f"ours {out['ours_steps_per_s']:,.0f} steps/s, abstractruntime sqlite "
        f"{out['abstractruntime_steps_per_s']:,.0f} steps/s, ratio {out['ratio']:.2f}x "
        f"[target >= {TICK_RATIO_TARGET:g}x: {verdict(out['ratio'] >= TICK_RATIO_TARGET)}]"
    )
    return out


# --- main ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, quick_help="small sizes: a ~20 s smoke run")
    add_backend_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    results: dict[str, Any] = {"bench": "store", "quick": args.quick, "sizes": asdict(sizes)}
    if args.backend == "postgresql":
        return main_postgres(args, sizes, results, started)
    results["backend"] = "sqlite"
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp_name:
        tmp = Path(tmp_name)
        results["command_appends"] = bench_command_appends(tmp, sizes)
        results["ledger_appends"] = bench_ledger_appends(tmp, sizes)
        results["ledger_pages"] = bench_ledger_pages(tmp, sizes)
        results["claims"] = bench_claims(tmp, sizes)
        results["claims_keys"] = bench_claims(tmp, sizes, keys=True)
        results["tick"] = bench_ticks(tmp, sizes, args.flows_dir)
        results["state_saves"] = sqlite_state_saves(tmp, args.flows_dir, sizes.state_saves)
    results["total_s"] = time.perf_counter() - started
    report(f"total: {results['total_s']:.1f} s")
    print(json.dumps(results), flush=True)
    return 0


def main_postgres(args: argparse.Namespace, sizes: Sizes, results: dict[str, Any], started: float) -> int:
    """The PostgreSQL column's store cases: batched claims and the RunState save (bench/store_pg.py)."""
    reason = None if args.db_url else unavailable_reason()
    if reason is not None:
        report(f"PostgreSQL store bench not run: {reason}")
        print(json.dumps({**unavailable_line("store", reason), "quick": args.quick}), flush=True)
        return 0
    with bench_postgres(args.db_url) as pg:
        results.update(backend="postgresql", available=True, postgres=pg.info())
        report(f"PostgreSQL {pg.settings.get('server_version')}: {pg.settings}")
        # A quarter of the SQLite bench's runs, half its saves: PostgreSQL claims at a few thousand per
        # second and saves ~130 KB states at a few hundred per second here (the report's time budget).
        results["claims"] = pg_claims(pg, sizes.claim_runs // 4)
        results["state_saves"] = pg_state_saves(pg, args.flows_dir, sizes.state_saves // 2)
    results["total_s"] = time.perf_counter() - started
    results["ok"] = all(case["exactly_once"] for case in results["claims"])
    report(f"total: {results['total_s']:.1f} s")
    print(json.dumps(results), flush=True)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
