"""Phase A: POST /runs/start and POST /commands under load on `serve --no-runner`."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from bench.api.common import API, BenchFailure, Sizes, report
from bench.api.http_client import load, run_async
from bench.api.processes import CpuMeter, Sampler, rss_mb, start_serve, store_of


def check_statuses(case: dict[str, Any], what: str) -> None:
    bad = {s: n for s, n in case["statuses"].items() if not 200 <= int(s) < 300}
    if bad:
        raise BenchFailure(f"{what}: non-2xx responses {bad}")


def db_ids(target: Path | str, sql: str) -> set[str]:
    if isinstance(target, str):  # a PostgreSQL URL
        from shared_store.backend import connect_store

        db = connect_store(target)
        try:
            return {row[0] for row in db.query(sql)}
        finally:
            db.close()
    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute(sql)}
    finally:
        conn.close()


def phase_writes(
    tmp: Path, flows_dir: Path, sizes: Sizes, results: dict[str, Any], url: str | None = None
) -> None:
    """`url`: a fresh PostgreSQL database to serve from, instead of a SQLite file in the temp dir."""
    case_dir = tmp / "writes"
    case_dir.mkdir()
    store = store_of(case_dir, url)
    serve, port = start_serve(case_dir, flows_dir, with_runner=False, url=url)
    sampler = Sampler({"serve": serve.pid})
    sampler.start()
    try:
        time.sleep(1.0)
        results["rss_mb"]["serve_idle_no_runner"] = rss_mb(serve.pid)
        report(f"serve --no-runner idle RSS: {results['rss_mb']['serve_idle_no_runner']:.1f} MB")
        if sizes.health:
            # Reference, no target: the HTTP stack's ceiling here (no auth, a few db reads) at c16.
            cpu = CpuMeter({"serve": serve.pid})
            case = run_async(
                load(port, sizes.starts[16], 16, sizes.cap_s, lambda i: ("GET", "/api/health", None))
            )
            case.update(cpu.done())
            case.pop("_bodies")
            check_statuses(case, "health c16")
            results["health"] = case
            report(load_line("GET /api/health (reference)", case).replace("; checks OK", ""))
        start_body = json.dumps({"bundle_id": "bench-echo", "input_data": {"message": "x"}}).encode()
        run_ids: list[str] = []
        for concurrency, count in sizes.starts.items():
            sampler.reset()
            cpu = CpuMeter({"serve": serve.pid})
            case = run_async(
                load(
                    port, count, concurrency, sizes.cap_s, lambda i: ("POST", f"{API}/runs/start", start_body)
                )
            )
            case.update(cpu.done())
            case["serve_peak_rss_mb"] = sampler.peak().get("serve", math.nan)
            check_statuses(case, f"starts c{concurrency}")
            ids = [json.loads(b)["run_id"] for b in case.pop("_bodies")]
            missing = set(ids) - db_ids(store, "SELECT run_id FROM runs")
            if missing or len(set(ids)) != len(ids):
                raise BenchFailure(f"starts c{concurrency}: {len(missing)} started runs not in the db")
            run_ids += ids
            case["checked"] = f"{len(ids)} run_ids in the db"
            results["starts"].append(case)
            report(load_line("runs/start", case))

        for concurrency, count in sizes.commands.items():
            prefix = f"bench-{concurrency}-{uuid.uuid4().hex[:8]}-"

            def make(i: int, prefix: str = prefix) -> tuple[str, str, bytes]:
                body = {"command_id": f"{prefix}{i}", "run_id": run_ids[i % len(run_ids)], "type": "pause"}
                return (
                    "POST",
                    f"{API}/commands",
                    json.dumps({**body, "payload": {"reason": "bench"}}).encode(),
                )

            sampler.reset()
            cpu = CpuMeter({"serve": serve.pid})
            case = run_async(load(port, count, concurrency, sizes.cap_s, make))
            case.update(cpu.done())
            case["serve_peak_rss_mb"] = sampler.peak().get("serve", math.nan)
            check_statuses(case, f"commands c{concurrency}")
            answers = [json.loads(b) for b in case.pop("_bodies")]
            if any(a.get("accepted") is not True or a.get("duplicate") is not False for a in answers):
                raise BenchFailure(f"commands c{concurrency}: a fresh command_id was not accepted")
            stored = db_ids(
                store,
                f"SELECT command_id FROM commands WHERE command_id LIKE '{prefix}%'",
            )
            # warm-up requests used ids prefix-1, prefix-2, ...: count only the timed ones
            timed = {f"{prefix}{i}" for i in range(case["requests"])}
            if not timed <= stored:
                raise BenchFailure(
                    f"commands c{concurrency}: {len(timed - stored)} accepted commands not in the db"
                )
            case["checked"] = f"{len(timed)} command_ids in the db"
            results["commands"].append(case)
            report(load_line("commands", case))
        results["rss_mb"]["serve_peak_writes"] = max(
            [c["serve_peak_rss_mb"] for c in results["starts"] + results["commands"]], default=math.nan
        )
    finally:
        sampler.stop()
        code = serve.stop()
        if code not in (0, -signal.SIGTERM):
            results["problems"].append(f"serve (writes) exited {code}")


def load_line(what: str, c: dict[str, Any]) -> str:
    capped = " (time cap hit)" if c["capped"] else ""
    postgres = f", PostgreSQL {c['postgres_cpu_pct']:.0f}%" if "postgres_cpu_pct" in c else ""
    return (
        f"{what} c{c['concurrency']}: {c['req_per_s']:,.0f} req/s ({c['ok']} in {c['seconds']:.2f} s{capped}; "
        f"p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms; CPU serve {c['serve_cpu_pct']:.0f}%, "
        f"bench {c['bench_cpu_pct']:.0f}%{postgres}); checks OK"
    )
