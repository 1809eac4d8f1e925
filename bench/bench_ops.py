"""Operations benchmark: the runs list's filters over 100,000 runs, and retention.

Retention: 20,000 expired runs (2,000 with --quick), 5 ledger records and a command each, deleted by
shared_store.retention while a thread commits small writes; runs deleted per second and the longest
commit meanwhile (the writer stall).

Run from the repo root: `python -m bench.bench_ops [--quick]`. Seeds a fresh db with synthetic runs
(shared_store.run_seed: 90% completed, 5% failed, 3% waiting, 2% running; 5 workflows; every run
tagged `env:prod` or `env:dev`, one of 20 `team:` tags, 0.5% tagged `rare`; metadata `customer` one of
1,000 values), then times one page (limit 50) of each filter through shared_store.run_list — the query
the API runs — and reports p50 / p99 per filter. Prints one JSON line last (bench/report.py reads it).
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.options import bench_parser
from shared_store import Database, migrate
from shared_store.run_filter import RunFilter
from shared_store.run_list import list_runs
from shared_store.run_seed import SeedRun, seed_runs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    runs: int
    reps: int


FULL = Sizes(runs=100_000, reps=60)
QUICK = Sizes(runs=10_000, reps=20)


def report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_id(i: int) -> str:
    """Random-looking like the uuid4s runs get (a prefix's runs are spread over time), repeatable."""
    return f"{(i * 2654435761) % 2**32:08x}-{i:08x}"


def synthetic(n: int) -> list[SeedRun]:
    runs = []
    for i in range(n):
        roll = i % 100
        status = (
            "completed" if roll < 90 else "failed" if roll < 95 else "waiting" if roll < 98 else "running"
        )
        created = T0 + timedelta(seconds=i)
        tags = ("env:prod" if i % 2 else "env:dev", f"team:{i % 20}", *(("rare",) if i % 200 == 7 else ()))
        runs.append(
            SeedRun(
                run_id=run_id(i),
                workflow_id=f"bundle{i % 5}@1.0.0:main",
                status=status,
                created_at=created.isoformat(),
                updated_at=(created + timedelta(seconds=3)).isoformat(),
                tags=tags,
                metadata={"customer": f"c{i % 1000}", "attempt": i % 3},
                output={"result": "x" * 200},
            )
        )
    return runs


def filter_cases(n: int) -> dict[str, dict[str, Any]]:
    mid = T0 + timedelta(seconds=n // 2)
    end = T0 + timedelta(seconds=n)
    return {
        "no filter": {},
        "status=failed": {"status": ["failed"]},
        "status=waiting|running": {"status": ["waiting", "running"]},
        "tag=team:3": {"tag": ["team:3"]},
        "tag=rare": {"tag": ["rare"]},
        "tag=env:prod & status=failed": {"tag": ["env:prod"], "status": ["failed"]},
        "tag=env:prod & tag=team:3": {"tag": ["env:prod", "team:3"]},
        "metadata.customer=c42": {"metadata.customer": "c42"},
        "metadata.customer & status=completed": {"metadata.customer": "c42", "status": ["completed"]},
        "created in one hour": {
            "created_after": mid.isoformat(),
            "created_before": (mid + timedelta(hours=1)).isoformat(),
        },
        "ended in the last hour": {"ended_after": (end - timedelta(hours=1)).isoformat()},
        "q=workflow prefix": {"q": "bundle3@"},
        "q=run id prefix (one run)": {"q": run_id(n // 3)[:8]},
        "q=run id prefix (1/256 of runs)": {"q": run_id(n // 3)[:2]},
        "q=run id prefix (1/16 of runs)": {"q": run_id(n // 3)[:1]},
        "q=no match": {"q": "zz"},
        "workflow_id & status=waiting": {"workflow_id": "bundle2@1.0.0:main", "status": ["waiting"]},
    }


def time_case(db: Database, f: RunFilter, reps: int) -> dict[str, float]:
    samples = []
    rows = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        page = list_runs(db, f, limit=50)
        samples.append((time.perf_counter() - t0) * 1000)
        rows = len(page.items)
    # Deep keyset page: the cursor of the page after 100 pages (what `next_cursor` walking reaches).
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "rows": rows,
    }


def bench_filters(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    db = Database(tmp / "filters.sqlite3", checkpoint_every_s=None)
    migrate(db)
    t0 = time.perf_counter()
    seed_runs(db, synthetic(sizes.runs))
    seeded_s = time.perf_counter() - t0
    report(f"seeded {sizes.runs} runs in {seeded_s:.1f} s")
    cases = []
    for name, query in filter_cases(sizes.runs).items():
        result = time_case(db, RunFilter.parse(query), sizes.reps)
        cases.append({"filter": name, **result})
        report(
            f"  {name:40s} p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  rows {result['rows']}"
        )
    # Keyset paging deep into the list: 200 pages of 50 walked by next_cursor, per page.
    cursor, samples = None, []
    for _ in range(200):
        t1 = time.perf_counter()
        page = list_runs(db, RunFilter(), limit=50, cursor=cursor)
        samples.append((time.perf_counter() - t1) * 1000)
        cursor = page.next_cursor
    db.close()
    worst = max(c["p50_ms"] for c in cases)
    return {
        "runs": sizes.runs,
        "seed_s": seeded_s,
        "cases": cases,
        "worst_p50_ms": worst,
        "median_p50_ms": statistics.median(c["p50_ms"] for c in cases),
        "cursor_page_p50_ms": statistics.median(samples),
    }


def _writer(path: str, stop: Any, ready: Any, queue: Any) -> None:
    """Commit small writes (command appends) until told to stop; (unix time, ms) of each commit."""
    from shared_store.inbox import append_command

    db = Database(path, checkpoint_every_s=None)
    samples = []
    ready.set()
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        append_command(db, command_id=f"w{i}", run_id="live", type="pause", payload={})
        samples.append((time.time(), (time.perf_counter() - t0) * 1000))
        i += 1
        time.sleep(0.001)
    db.close()
    queue.put(samples)


def bench_retention(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Expired runs (5 ledger records and 1 command each) deleted by the runner's retention job while
    another thread commits small writes (command appends) as fast as it can: runs deleted per second,
    and the longest any of those commits waited (the writer stall retention caused)."""
    from shared_store.retention import Retention

    db = Database(tmp / "retention.sqlite3", checkpoint_every_s=0.5)
    migrate(db)
    old = datetime.now(UTC) - timedelta(days=90)
    n = sizes.runs // 5
    seed_runs(
        db,
        (
            SeedRun(
                run_id=f"old-{i:08d}",
                workflow_id="bundle@1.0.0:main",
                status="completed",
                created_at=(old + timedelta(seconds=i)).isoformat(),
                updated_at=(old + timedelta(seconds=i + 1)).isoformat(),
                tags=("t",),
                ledger=5,
                commands=1,
            )
            for i in range(n)
        ),
    )
    # The writer is another process (as the API is): one process's threads would also share its GIL.
    ctx = multiprocessing.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    queue = ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(db.path), stop, ready, queue))
    writer.start()
    ready.wait(60)
    time.sleep(0.5)  # a baseline of the writer's commits before retention starts
    retention = Retention(db, tmp / "artifacts", retention_days=30)
    started = time.time()
    t0 = time.perf_counter()
    while retention.step():
        pass
    elapsed = time.perf_counter() - t0
    ended = time.time()
    stop.set()
    samples = queue.get(timeout=60)
    writer.join(30)
    baseline = sorted(ms for at, ms in samples if at < started)
    stalls = sorted(ms for at, ms in samples if started <= at <= ended)
    remaining = db.query_one("SELECT count(*) FROM runs WHERE run_id LIMIT 1")
    integrity = db.query_one("PRAGMA integrity_check")
    db.close()
    stalls.sort()
    result = {
        "runs": n,
        "deleted": retention.stats.runs_deleted,
        "runs_per_s": retention.stats.runs_deleted / elapsed,
        "pages_vacuumed": retention.stats.pages_vacuumed,
        "writer_commits": len(stalls),
        "writer_stall_max_ms": stalls[-1] if stalls else None,
        "writer_stall_p99_ms": stalls[int(len(stalls) * 0.99)] if stalls else None,
        "writer_baseline_max_ms": baseline[-1] if baseline else None,
        "left": int(remaining[0]) if remaining else None,
        "integrity": integrity[0] if integrity else None,
    }
    report(
        f"retention: {result['deleted']} runs in {elapsed:.1f} s ({result['runs_per_s']:.0f}/s), "
        f"writer stall max {result['writer_stall_max_ms']:.1f} ms p99 {result['writer_stall_p99_ms']:.1f} ms "
        f"(baseline max {result['writer_baseline_max_ms']:.1f} ms), integrity {result['integrity']}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__, quick_help="10,000 runs").parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    results: dict[str, Any] = {"bench": "ops", "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="bench_ops_") as tmp_name:
        tmp = Path(tmp_name)
        results["filters"] = bench_filters(tmp, sizes)
        results["retention"] = bench_retention(tmp, sizes)
    results["total_s"] = time.perf_counter() - started
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
