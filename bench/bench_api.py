"""API benchmark: starts and commands per second, ledger replay, resume -> done, SSE fan-out, RSS.

Run from the repo root: `python -m bench.bench_api [--quick] [--flows-dir DIR]` (or
`python bench/bench_api.py`). Everything lives in a temp dir and talks to real `abstractgateway serve`
processes over loopback. Prints one line per measurement, a table with each target and MET/MISSED,
then one JSON line `{"bench": "api", ...}` with every number. A missed target never changes the exit
status; a failed correctness check (or any 5xx) exits 1.

Method:
- The client is a small HTTP/1.1 client on asyncio streams (uvloop when installed), one keep-alive
  connection per concurrent worker, so the client costs far less per request than httpx would. The
  bench runs on the same machine as the server: the CPU seconds of the server, of the runner and of the
  bench's own processes are reported per phase, to tell which side is the bottleneck.
- Phase A (`serve --no-runner`, so every start stays queued and no runner competes for the CPU):
  POST /runs/start (bench-echo, input {"message": "x"}) at concurrency 1 and 16, then POST /commands
  (`pause`, a fresh command_id each, on the runs just started) at concurrency 1 and 16. Each case has
  a request count and a time cap; req/s = 2xx responses / wall seconds.
- Phase B (`serve --no-runner` on a fresh db, plus one `abstractgateway runner --poll-s 0.005`
  process; `--serve-runner` uses serve's own child runner with its default poll instead):
  * replay: GET /runs/{id}/ledger?after=0&limit=1000 on a completed bench-loop n=600 run (1202
    records), one request at a time; latency = request written -> whole body read.
  * resume -> done: bench-ask runs waiting on ask_user; for each, an SSE client follows
    /ledger/stream until it has the backlog, then POSTs {"type": "resume", "payload": {"payload":
    {"response": "yes"}}}; latency = just before the POST is written -> `event: done` read.
  * fan-out: a bench-tick run (n ticks, `delay` s apart) is started and paused at once; N SSE clients
    (split over several client processes) subscribe with after=0; then the run is resumed. Delivery
    latency of a record to a client = the client's wall-clock receive time (when the bytes were read)
    minus the record's own timestamp (`ended_at`, else `started_at`, both written by the runner just
    before it commits the record). Only records stamped after that client subscribed count (the few
    written before the pause are backlog, not delivery).
- RSS: VmRSS from /proc/<pid>/status of the serve process (idle = after start-up, before any request;
  peak = the highest sample, every 50 ms, during a phase) and, separately, of the runner.

Checked (a failure exits 1): no 5xx and no other non-2xx from any timed request; every 2xx start's
run_id is a row in the db; every 2xx command is accepted (not duplicate) and its command_id is a row;
every replay page has 1000 records and next_after 1000; every resume stream's cursors are dense and
end in `done` with status completed; every fan-out client received every record exactly once, in
order (cursors 1..L dense), then `done` with cursor L and status completed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # `python bench/bench_api.py`: make the repo root importable like `python -m` does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import common
from bench.api.common import FULL, PG_FULL, PG_QUICK, QUICK, RUNNER_POLL_S, BenchFailure, Sizes, report
from bench.api.phase_reads import phase_reads
from bench.api.phase_writes import phase_writes
from bench.api.processes import raise_fd_limit
from bench.api.table import table
from bench.options import bench_parser
from bench.pg_server import add_backend_options, bench_postgres, unavailable_line, unavailable_reason
from shared_store.backend import connect_store
from shared_store.bundles import import_flows_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__, quick_help="small sizes: a < 60 s smoke run")
    parser.add_argument(
        "--serve-runner",
        action="store_true",
        help="phase B uses serve's own child runner (default poll) instead of a separate --poll-s 0.005 one",
    )
    parser.add_argument("--client-procs", type=int, help="SSE client processes (default 2; --quick 1)")
    parser.add_argument(
        "--phase",
        choices=("writes", "reads"),
        help="run only phase A (writes: health, starts, commands) or only phase B (reads: replay, "
        "resume, fan-out), e.g. to compare two trees phase by phase on a shared machine",
    )
    add_backend_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    postgres = args.backend == "postgresql"
    if postgres:
        sizes = PG_QUICK if args.quick else PG_FULL
        if not args.db_url and (reason := unavailable_reason()) is not None:
            report(f"PostgreSQL API bench not run: {reason}")
            print(json.dumps({**unavailable_line("api", reason), "quick": args.quick}), flush=True)
            return 0
    else:
        sizes = QUICK if args.quick else FULL
    if args.client_procs:
        sizes = Sizes(**{**asdict(sizes), "client_procs": args.client_procs})
    fd_limit = raise_fd_limit()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "bench": "api",
        "backend": args.backend,
        "quick": args.quick,
        "sizes": asdict(sizes),
        "cpus": os.cpu_count(),
        "fd_limit": fd_limit,
        "runner": "serve child" if args.serve_runner else f"separate process, --poll-s {RUNNER_POLL_S}",
        "starts": [],
        "commands": [],
        "fanout": [],
        "rss_mb": {},
        "problems": [],
    }
    report(
        f"api bench: {os.cpu_count()} CPUs, client and server on one machine over loopback; "
        f"phase A serve --no-runner; phase B runner: {results['runner']}"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        pg = stack.enter_context(bench_postgres(args.db_url)) if postgres else None
        if pg is not None:
            results.update(available=True, postgres=pg.info())
            common.PG_SERVER_PID = pg.server_pid
            report(f"PostgreSQL {pg.settings.get('server_version')}: {pg.settings}")

        def url(phase: str) -> str | None:
            """The phase's fresh PostgreSQL database, holding the sample bundles (None: a SQLite file,
            as without --backend, which serve fills from --flows-dir)."""
            if pg is None:
                return None
            fresh = pg.fresh(f"bench_api_{phase}")
            db = connect_store(fresh)
            try:
                problems = import_flows_dir(db, args.flows_dir)
            finally:
                db.close()
            if problems:
                raise BenchFailure(f"flows in {args.flows_dir} did not import: {problems}")
            return fresh

        for name, phase in (
            ("writes", lambda: phase_writes(tmp, args.flows_dir, sizes, results, url("writes"))),
            (
                "reads",
                lambda: phase_reads(tmp, args.flows_dir, sizes, args.serve_runner, results, url("reads")),
            ),
        ):
            if args.phase not in (None, name):
                continue
            try:
                phase()
            except (BenchFailure, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failed = True
                report(f"{name}: FAILED: {type(exc).__name__}: {exc}")
    if results["problems"]:
        failed = True
        report(f"problems: {results['problems']}")
    results["total_s"] = time.perf_counter() - started
    results["ok"] = not failed
    report("")
    report(table(results))
    report(f"total: {results['total_s']:.1f} s{'' if not failed else '  (FAILED)'}")
    print(json.dumps(results), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
