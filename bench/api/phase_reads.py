"""Phase B: ledger replay, resume -> done and SSE fan-out on serve plus a runner."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from bench.api.common import API, RUNNER_POLL_S, BenchFailure, Sizes, percentile, report
from bench.api.fanout import fanout
from bench.api.http_client import Conn, api_json, open_stream, run_async
from bench.api.processes import CpuMeter, Proc, Sampler, children, rss_mb, start_runner, start_serve
from bench.api.runs import start_run, wait_run


async def replay(port: int, run_id: str, count: int, cap_s: float) -> list[float]:
    conn = await Conn.open(port)
    path = f"{API}/runs/{run_id}/ledger?after=0&limit=1000"
    latencies = []
    deadline = time.perf_counter() + cap_s
    try:
        for i in range(-3, count):  # 3 warm-up reads
            if time.perf_counter() > deadline:
                break
            t = time.perf_counter()
            status, body = await conn.request("GET", path)
            elapsed = time.perf_counter() - t
            if status != 200:
                raise BenchFailure(f"replay -> {status}: {body[:300]!r}")
            if i < 0 or i == count - 1:
                page = json.loads(body)
                if len(page["items"]) != 1000 or page["next_after"] != 1000:
                    raise BenchFailure(
                        f"replay page has {len(page['items'])} items, next_after {page['next_after']}"
                    )
            elif len(body) < 100_000:
                raise BenchFailure(f"replay page of {len(body)} bytes: too small for 1000 records")
            if i >= 0:
                latencies.append(elapsed)
    finally:
        await conn.close()
    return latencies


async def resume_to_done(port: int, run_ids: list[str], backlog: int, cap_s: float) -> list[float]:
    """One run at a time: follow its stream, then resume it; seconds from the POST to `event: done`."""
    cmd = await Conn.open(port)
    latencies = []
    deadline = time.perf_counter() + cap_s
    try:
        for run_id in run_ids:
            if time.perf_counter() > deadline:
                break
            conn, parser = await open_stream(port, run_id)
            try:
                cursors: list[int] = []
                done: dict[str, Any] | None = None
                while len(cursors) < backlog:
                    for event, ident, _ in parser.feed(await conn.reader.read(65_536)):
                        if event == b"step":
                            cursors.append(int(ident))
                body = {
                    "command_id": f"bench-resume-{uuid.uuid4().hex}",
                    "run_id": run_id,
                    "type": "resume",
                    "payload": {"payload": {"response": "yes"}},
                }
                raw = json.dumps(body).encode()
                t0 = time.perf_counter()
                cmd.send("POST", f"{API}/commands", raw)
                status, headers = await cmd.read_head()
                answer = await cmd.read_body(headers)
                if status != 200:
                    raise BenchFailure(f"resume -> {status}: {answer[:300]!r}")
                while done is None:
                    data = await asyncio.wait_for(conn.reader.read(65_536), 30)
                    if not data:
                        raise BenchFailure(f"stream of {run_id} closed before done")
                    for event, ident, payload in parser.feed(data):
                        if event == b"step":
                            cursors.append(int(ident))
                        elif event == b"done":
                            done = json.loads(payload)
                latencies.append(time.perf_counter() - t0)
                if cursors != list(range(1, len(cursors) + 1)) or done.get("cursor") != len(cursors):
                    raise BenchFailure(f"resume stream of {run_id}: cursors {cursors}, done {done}")
                if done.get("status") != "completed":
                    raise BenchFailure(f"resumed run {run_id} ended {done}")
            finally:
                await conn.close()
    finally:
        await cmd.close()
    return latencies


def phase_reads(
    tmp: Path,
    flows_dir: Path,
    sizes: Sizes,
    serve_runner: bool,
    results: dict[str, Any],
    url: str | None = None,
) -> None:
    """`url`: a fresh PostgreSQL database for serve and the runner, instead of a SQLite file."""
    case_dir = tmp / "reads"
    case_dir.mkdir()
    serve, port = start_serve(case_dir, flows_dir, with_runner=serve_runner, url=url)
    procs = [serve]
    runner: Proc | None = None
    try:
        time.sleep(1.0)
        results["rss_mb"]["serve_idle"] = rss_mb(serve.pid)
        if serve_runner:
            deadline = time.monotonic() + 30
            while not children(serve.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            runner_pid = children(serve.pid)[0]
            time.sleep(2.0)  # it imports abstractruntime
        else:
            runner = start_runner(case_dir, url)
            procs.append(runner)
            runner_pid = runner.pid
        results["rss_mb"]["runner_idle"] = rss_mb(runner_pid)
        report(
            f"serve idle RSS {results['rss_mb']['serve_idle']:.1f} MB; runner "
            f"({'serve child' if serve_runner else 'separate process'}) idle RSS "
            f"{results['rss_mb']['runner_idle']:.1f} MB"
        )
        pids = {"serve": serve.pid, "runner": runner_pid}
        sampler = Sampler(pids)
        sampler.start()
        try:
            # replay
            loop_id = start_run(port, "bench-loop", {"n": 600})
            view = wait_run(
                port, loop_id, lambda v: v["status"] in ("completed", "failed", "cancelled"), procs, 120
            )
            if view["status"] != "completed" or view.get("ledger_len", 0) < 1000:
                raise BenchFailure(
                    f"bench-loop n=600 ended {view['status']} with {view.get('ledger_len')} records"
                )
            cpu = CpuMeter(pids)
            lat = run_async(replay(port, loop_id, sizes.replays, 60))
            results["replay"] = {
                "reads": len(lat),
                "records": 1000,
                "run_ledger_len": view.get("ledger_len"),
                "p50_ms": percentile(lat, 50) * 1e3,
                "p99_ms": percentile(lat, 99) * 1e3,
                **cpu.done(),
            }
            r = results["replay"]
            report(
                f"replay 1000 records: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                f"({r['reads']} reads, one at a time; CPU serve {r['serve_cpu_pct']:.0f}%); checks OK"
            )

            # resume -> done
            ask_ids = [start_run(port, "bench-ask", {}) for _ in range(sizes.resumes)]
            for run_id in ask_ids:
                wait_run(port, run_id, lambda v: v["status"] == "waiting", procs, 60)
            backlog = api_json(port, "GET", f"{API}/runs/{ask_ids[0]}")["ledger_len"]
            cpu = CpuMeter(pids)
            lat = run_async(resume_to_done(port, ask_ids, backlog, 120))
            results["resume"] = {
                "runs": len(lat),
                "p50_ms": percentile(lat, 50) * 1e3,
                "p99_ms": percentile(lat, 99) * 1e3,
                "runner": "serve child (default poll)"
                if serve_runner
                else f"separate, --poll-s {RUNNER_POLL_S}",
                **cpu.done(),
            }
            r = results["resume"]
            report(
                f"resume -> done: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms ({r['runs']} runs, one at "
                f"a time; runner {r['runner']}); checks OK"
            )

            # fan-out
            for clients in sizes.fanout_clients:
                case = fanout(port, clients, sizes, procs, sampler, pids)
                results["fanout"].append(case)
                report(
                    f"SSE fan-out {clients} clients ({case['client_procs']} client procs, {case['records']} "
                    f"records): delivery p50 {case['p50_ms']:.1f} ms, p99 {case['p99_ms']:.1f} ms, max "
                    f"{case['max_ms']:.1f} ms; connect {case['connect_s']:.1f} s; CPU serve "
                    f"{case['serve_cpu_pct']:.0f}%, runner {case['runner_cpu_pct']:.0f}%, SSE clients "
                    f"{case['clients_cpu_pct']:.0f}%; serve peak RSS {case['serve_peak_rss_mb']:.0f} MB; checks OK"
                )
            peak = sampler.peak()
        finally:
            sampler.stop()
        results["rss_mb"]["serve_peak_reads"] = max(
            [c["serve_peak_rss_mb"] for c in results["fanout"]], default=peak.get("serve", math.nan)
        )
        results["rss_mb"]["runner_after"] = rss_mb(runner_pid)
        results["rss_mb"]["serve_after"] = rss_mb(serve.pid)
    finally:
        if runner is not None:
            runner.stop()
        code = serve.stop()
        if code not in (0, -signal.SIGTERM):
            results["problems"].append(f"serve (reads) exited {code}")
