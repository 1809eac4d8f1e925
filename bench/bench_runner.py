"""Runner benchmark: runs completed per second by 1 and 2 `abstractgateway runner` processes.

Run from the repo root: `python -m bench.bench_runner [--quick] [--flows-dir DIR]` (or
`python bench/bench_runner.py`). Each case gets a fresh db in a temp dir. Prints one line per case, a
table, then one JSON line `{"bench": "runner", ...}` with every number.

Method (process start-up excluded): the runners are started on a db with the sample bundles and no
runs, and the bench waits for each one's `runner_started` log line; a few warm-up runs are processed
(first spec compile, statement caches); then all N timed runs are enqueued with `enqueue_run` inside
ONE write transaction, so they become claimable at the same instant. The clock runs from that commit
(t0) to the last `run_finished` timestamp in the runners' JSON logs. Per-run latency is
`run_started` -> `run_finished` from the same logs; queue wait is t0 -> `run_started`.

Checked in the bench (a failure exits 1): every timed run completed, each was started and finished
exactly once across all runners, every ledger has the expected length (runs.ledger_len and the rows
themselves), no runner logged an error or a lost lease, and each runner exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # `python bench/bench_runner.py`: make the repo root importable like `python -m` does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.options import bench_parser
from bench.pg_server import (
    BenchPostgres,
    add_backend_options,
    bench_postgres,
    store_args,
    unavailable_line,
    unavailable_reason,
)
from shared_store import Database, migrate
from shared_store.backend import connect_store
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.starts import enqueue_run

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.005
TERMINAL_SQL = "('completed', 'failed', 'cancelled')"
BAD_EVENTS = {"run_error", "run_failed", "lease_lost", "store_error", "heartbeat_failed"}


@dataclass(frozen=True)
class Workload:
    bundle_id: str
    input_data: dict[str, Any]
    ledger_len: int  # records each completed run must have


WORKLOADS = {
    "bench-echo": Workload("bench-echo", {"message": "x"}, 2),
    "chain-effects-200": Workload("chain-effects-200", {}, 402),
}


@dataclass(frozen=True)
class Sizes:
    runs: dict[str, int]
    warmup_per_runner: int


FULL = Sizes({"bench-echo": 2_000, "chain-effects-200": 100}, 8)
QUICK = Sizes({"bench-echo": 300, "chain-effects-200": 20}, 4)
# PostgreSQL (`--backend postgresql`): chain-effects-200 with one runner, the report's steps/s row. Fewer
# runs: each of a run's 200 steps commits a ~100 KB state durably (see bench/state_saves.py).
PG_FULL = Sizes({"chain-effects-200": 12}, 2)
PG_QUICK = Sizes({"chain-effects-200": 6}, 1)
# Runtime steps per run, for steps/s (the store bench's tick counts chain-effects-200 the same way).
STEPS_PER_RUN = {"chain-effects-200": 200}


# --- helpers ----------------------------------------------------------------------------------------
def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency that really happened)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def report(line: str) -> None:
    print(line, flush=True)


def log_time(event: dict[str, Any]) -> float:
    """Epoch seconds of a structlog ISO (UTC) timestamp."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


class BenchFailure(Exception):
    """A correctness check failed: the numbers of this case mean nothing."""


class RunnerProcess:
    """`python -m abstractgateway runner` as a child process; its JSON log lines go to a file."""

    def __init__(self, target: Path | str, log_path: Path, runner_id: str, env: dict[str, str]) -> None:
        self.runner_id = runner_id
        self.log_path = log_path
        self._log = log_path.open("ab")
        command = [sys.executable, "-m", "abstractgateway", "runner", *store_args(target, log_path.parent)]
        command += ["--runner-id", runner_id, "--poll-s", str(POLL_S)]
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=self._log)

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text()[-3000:]
            raise BenchFailure(f"runner {self.runner_id} exited {self.proc.returncode}: {tail}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


def wal_position(target: Path | str) -> int | None:
    """The server's WAL insert position in bytes (PostgreSQL; None for a SQLite file)."""
    if not isinstance(target, str):
        return None
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else None


def runner_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ABSTRACTGATEWAY_LOG_LEVEL": "info"}
    for name in ("ABSTRACTGATEWAY_PROVIDER", "ABSTRACTGATEWAY_MODEL", "ABSTRACTGATEWAY_BASE_URL"):
        env.pop(name, None)
    return env


def wait_for(
    predicate: Callable[[], bool],
    what: str,
    runners: list[RunnerProcess],
    timeout: float,
    every_s: float = 0.05,
) -> None:
    """Poll until predicate() holds; the timeout is a hang guard, never part of a measurement (the
    end of a timed case comes from the runners' log timestamps, not from this poll)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for runner in runners:
            runner.check_alive()
        if time.monotonic() > deadline:
            raise BenchFailure(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every_s)


def terminal_count(db: Database, run_ids: list[str]) -> int:
    placeholders = ",".join("?" * len(run_ids))
    row = db.query_one(
        f"SELECT COUNT(*) FROM runs WHERE run_id IN ({placeholders}) AND status IN {TERMINAL_SQL}",
        run_ids,
    )
    return int(row[0]) if row else 0


def enqueue(db: Database, workload: Workload, count: int) -> list[str]:
    resolved = resolve_workflow(db, bundle_id=workload.bundle_id)
    return [enqueue_run(db, resolved=resolved, input_data=workload.input_data).run_id for _ in range(count)]


def enqueue_burst(db: Database, workload: Workload, count: int) -> tuple[list[str], float, float]:
    """`count` queued runs in one commit; (run ids, seconds spent enqueueing, wall time of the commit)."""
    resolved = resolve_workflow(db, bundle_id=workload.bundle_id)
    started = time.perf_counter()
    with db.write():  # each enqueue_run is a savepoint of this one transaction
        run_ids = [
            enqueue_run(db, resolved=resolved, input_data=workload.input_data).run_id for _ in range(count)
        ]
    committed = time.time()
    return run_ids, time.perf_counter() - started, committed


# --- one case -----------------------------------------------------------------------------------------
def check_runs(db: Database, run_ids: list[str], workload: Workload) -> None:
    placeholders = ",".join("?" * len(run_ids))
    rows = db.query(
        f"SELECT r.run_id, r.status, r.ledger_len, COUNT(l.seq) FROM runs r "
        f"LEFT JOIN ledger l ON l.run_id = r.run_id WHERE r.run_id IN ({placeholders}) GROUP BY r.run_id",
        run_ids,
    )
    if len(rows) != len(run_ids):
        raise BenchFailure(f"{len(run_ids) - len(rows)} runs have no runs row")
    statuses = Counter(row[1] for row in rows)
    if statuses != Counter({"completed": len(run_ids)}):
        raise BenchFailure(f"not every run completed: {dict(statuses)}")
    wrong = [row for row in rows if row[2] != workload.ledger_len or row[3] != workload.ledger_len]
    if wrong:
        raise BenchFailure(
            f"{len(wrong)} runs have a ledger other than {workload.ledger_len} records "
            f"(first: run {wrong[0][0]} ledger_len {wrong[0][2]}, rows {wrong[0][3]})"
        )


def check_events(events: dict[str, list[dict[str, Any]]], run_ids: list[str]) -> None:
    timed = set(run_ids)
    for name in ("run_started", "run_finished"):
        seen = Counter(
            e["run_id"] for evs in events.values() for e in evs if e["event"] == name and e["run_id"] in timed
        )
        missing = timed - set(seen)
        twice = [run_id for run_id, n in seen.items() if n > 1]
        if missing or twice:
            raise BenchFailure(f"{name}: {len(missing)} runs never, {len(twice)} runs more than once")
    bad = [e for evs in events.values() for e in evs if e["event"] in BAD_EVENTS]
    if bad:
        raise BenchFailure(f"{len(bad)} error events in the runner logs, first: {bad[0]}")


def run_case(
    tmp: Path,
    flows_dir: Path,
    workload: Workload,
    processes: int,
    sizes: Sizes,
    pg: BenchPostgres | None = None,
) -> dict[str, Any]:
    """One case on a fresh store: a SQLite file in the temp dir, or (pg) a fresh PostgreSQL database."""
    count = sizes.runs[workload.bundle_id]
    case_dir = tmp / f"{workload.bundle_id}-{processes}p"
    case_dir.mkdir()
    target: Path | str
    if pg is None:
        target = case_dir / "gateway.sqlite3"
        db = Database(target)
        migrate(db)
    else:
        target = pg.fresh(f"bench_runner_{processes}p")
        db = connect_store(target)
    problems = import_flows_dir(db, flows_dir)
    if problems:
        raise BenchFailure(f"flows in {flows_dir} did not import: {problems}")

    env = runner_env()
    runners = [RunnerProcess(target, case_dir / f"r{k}.log", f"bench-r{k}", env) for k in range(processes)]
    try:
        wait_for(
            lambda: all(any(e["event"] == "runner_started" for e in r.events()) for r in runners),
            "the runners to start",
            runners,
            120,
        )
        # Warm-up (not timed): each worker's first run compiles the spec and fills statement caches.
        warm = enqueue(db, workload, sizes.warmup_per_runner * processes)
        wait_for(lambda: terminal_count(db, warm) == len(warm), "the warm-up runs", runners, 300)

        wal0 = wal_position(target)
        run_ids, enqueue_s, t0 = enqueue_burst(db, workload, count)
        wait_for(lambda: terminal_count(db, run_ids) == count, f"{count} runs to finish", runners, 1800, 0.25)
        wal_bytes = wal_position(target) - wal0 if wal0 is not None else None
        exit_codes = {r.runner_id: r.stop() for r in runners}
    except BaseException:
        for r in runners:
            r.kill()
        raise

    if any(exit_codes.values()):
        raise BenchFailure(f"runners did not exit 0 on SIGTERM: {exit_codes}")
    events = {r.runner_id: r.events() for r in runners}
    if not all(any(e["event"] == "runner_stopped" for e in evs) for evs in events.values()):
        raise BenchFailure("a runner exited without logging runner_stopped")
    check_runs(db, warm, workload)
    check_runs(db, run_ids, workload)
    check_events(events, run_ids)
    db.close()

    timed = set(run_ids)
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    per_runner: dict[str, int] = {}
    for runner_id, evs in events.items():
        per_runner[runner_id] = 0
        for e in evs:
            if e.get("run_id") not in timed:
                continue
            if e["event"] == "run_started":
                started[e["run_id"]] = log_time(e)
                per_runner[runner_id] += 1
            elif e["event"] == "run_finished":
                finished[e["run_id"]] = log_time(e)
    seconds = max(finished.values()) - t0
    latency = [finished[run_id] - started[run_id] for run_id in run_ids]
    waits = [started[run_id] - t0 for run_id in run_ids]
    out: dict[str, Any] = {
        "bundle": workload.bundle_id,
        "processes": processes,
        "runs": count,
        "seconds": seconds,
        "runs_per_s": count / seconds,
        "latency_p50_ms": percentile(latency, 50) * 1e3,
        "latency_p99_ms": percentile(latency, 99) * 1e3,
        "first_start_ms": min(waits) * 1e3,
        "enqueue_s": enqueue_s,
        "ledger_records": count * workload.ledger_len,
        "ledger_records_per_s": count * workload.ledger_len / seconds,
        "steps_per_s": count * STEPS_PER_RUN.get(workload.bundle_id, 0) / seconds or None,
        # PostgreSQL: WAL the server wrote per timed run (the enqueue's share included, ~1 KB a run).
        "wal_bytes_per_run": wal_bytes / count if wal_bytes is not None else None,
        "started_per_runner": per_runner,
    }
    share = ", ".join(f"{k} {v}" for k, v in per_runner.items())
    report(
        f"{workload.bundle_id} x{count}, {processes} runner(s): {out['runs_per_s']:,.1f} runs/s "
        f"({seconds:.2f} s; start->finish p50 {out['latency_p50_ms']:.1f} ms, "
        f"p99 {out['latency_p99_ms']:.1f} ms; ledger {out['ledger_records_per_s']:,.0f} records/s; "
        f"started per runner: {share}); checks OK"
    )
    return out


def table(cases: list[dict[str, Any]]) -> str:
    head = (
        f"{'workflow':<18} {'procs':>5} {'runs':>6} {'seconds':>8} {'runs/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'ledger rec/s':>13}"
    )
    lines = [head, "-" * len(head)]
    for c in cases:
        lines.append(
            f"{c['bundle']:<18} {c['processes']:>5} {c['runs']:>6} {c['seconds']:>8.2f} "
            f"{c['runs_per_s']:>9,.1f} {c['latency_p50_ms']:>8.1f} {c['latency_p99_ms']:>8.1f} "
            f"{c['ledger_records_per_s']:>13,.0f}"
        )
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, quick_help="small sizes: a ~20 s smoke run")
    add_backend_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    postgres = args.backend == "postgresql"
    sizes = (PG_QUICK if args.quick else PG_FULL) if postgres else (QUICK if args.quick else FULL)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "bench": "runner",
        "backend": args.backend,
        "quick": args.quick,
        "sizes": asdict(sizes),
        "poll_s": POLL_S,
        "method": "t0 = commit of one transaction enqueueing all runs into already-started runners; "
        "end = last run_finished log timestamp (process start-up and warm-up excluded)",
        "cpus": os.cpu_count(),
        "cases": [],
    }
    if postgres and not args.db_url and (reason := unavailable_reason()) is not None:
        report(f"PostgreSQL runner bench not run: {reason}")
        print(json.dumps({**unavailable_line("runner", reason), "quick": args.quick}), flush=True)
        return 0
    report(f"runner bench: poll {POLL_S * 1e3:g} ms, {os.cpu_count()} CPUs; {results['method']}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_runner_") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        pg = stack.enter_context(bench_postgres(args.db_url)) if postgres else None
        if pg is not None:
            results.update(available=True, postgres=pg.info())
            report(f"PostgreSQL {pg.settings.get('server_version')}: {pg.settings}")
        # On PostgreSQL one runner: the report's row is steps/s of one runner process.
        cases = [("chain-effects-200", 1)] if postgres else [
            (name, processes) for name in ("bench-echo", "chain-effects-200") for processes in (1, 2)
        ]  # fmt: skip
        for name, processes in cases:
            try:
                results["cases"].append(run_case(tmp, args.flows_dir, WORKLOADS[name], processes, sizes, pg))
            except BenchFailure as exc:
                failed = True
                report(f"{name}, {processes} runner(s): FAILED: {exc}")
    results["total_s"] = time.perf_counter() - started
    results["ok"] = not failed
    report("")
    report(table(results["cases"]))
    report(f"total: {results['total_s']:.1f} s")
    print(json.dumps(results), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
