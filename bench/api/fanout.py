"""SSE fan-out: N clients, spread over spawned client processes, follow one run's ledger stream."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import multiprocessing as mp
import time
from array import array
from datetime import datetime
from typing import Any

from bench.api import common
from bench.api.common import API, BenchFailure, Sizes, percentile
from bench.api.http_client import Conn, SseParser, api_json, open_stream, run_async
from bench.api.processes import CpuMeter, Proc, Sampler, raise_fd_limit
from bench.api.runs import command, start_run, wait_run


def iso_ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def fanout_worker(
    token: str, port: int, run_id: str, clients: int, connected: Any, out: Any, cap_s: float
) -> None:
    common.TOKEN = token  # a spawned process imported bench.api.common afresh, with another random token
    raise_fd_limit()
    try:
        result = run_async(_fanout_clients(port, run_id, clients, connected, cap_s))
    except BaseException as exc:  # reported to the parent, which fails the phase
        result = {"error": f"{type(exc).__name__}: {exc}"}
        connected.put(("error", result["error"]))
    out.put(result)


async def _fanout_clients(
    port: int, run_id: str, clients: int, connected: Any, cap_s: float
) -> dict[str, Any]:
    stamps: dict[int, float] = {}  # cursor -> record timestamp (parsed once per process)
    latencies = array("d")
    by_cursor: dict[int, list[float]] = {}  # cursor -> [sum of latencies, count]: falling behind shows here
    errors: list[str] = []
    dup_or_gap = 0
    no_done = 0
    received = 0
    last_cursor = -1

    sem = asyncio.Semaphore(200)  # connects in flight at once

    async def connect() -> tuple[Conn, SseParser, float]:
        async with sem:
            conn, parser = await open_stream(port, run_id)
            return conn, parser, time.time()

    streams = await asyncio.gather(*(connect() for _ in range(clients)))
    # The client's own cyclic-GC passes over thousands of connections stall every stream of this
    # process at once (measured: ~1 s spikes in delivery latency); they are not the server's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    connected.put(("ok", clients))
    cpu0, wall0 = CpuMeter._self(), time.perf_counter()

    async def follow(conn: Conn, parser: SseParser, subscribed: float) -> None:
        nonlocal dup_or_gap, no_done, received, last_cursor
        expect = 1
        done = None
        try:
            while done is None:
                data = await conn.reader.read(65_536)
                now = time.time()
                if not data:
                    break
                for event, ident, payload in parser.feed(data):
                    if event == b"step":
                        cursor = int(ident)
                        if cursor != expect:
                            dup_or_gap += 1
                        expect = cursor + 1
                        received += 1
                        stamp = stamps.get(cursor)
                        if stamp is None:
                            record = json.loads(payload)["record"]
                            stamp = stamps[cursor] = iso_ts(record["ended_at"] or record["started_at"])
                        if stamp >= subscribed:
                            latencies.append(now - stamp)
                            acc = by_cursor.setdefault(cursor, [0.0, 0])
                            acc[0] += now - stamp
                            acc[1] += 1
                    elif event == b"done":
                        done = json.loads(payload)
            if done is None or done.get("cursor") != expect - 1 or done.get("status") != "completed":
                no_done += 1
                if len(errors) < 3:
                    errors.append(f"stream ended without a matching done: {done}, next cursor {expect}")
            else:
                last_cursor = done["cursor"] if last_cursor in (-1, done["cursor"]) else -2
        finally:
            await conn.close()

    try:
        await asyncio.wait_for(asyncio.gather(*(follow(*s) for s in streams)), cap_s)
    except TimeoutError:
        errors.append(f"clients still reading after {cap_s:g} s")
    return {
        "clients": clients,
        "received": received,
        "dup_or_gap": dup_or_gap,
        "no_done": no_done,
        "last_cursor": last_cursor,
        "latencies": latencies.tobytes(),
        "by_cursor": by_cursor,
        "errors": errors,
        "cpu_pct": (CpuMeter._self() - cpu0) / (time.perf_counter() - wall0) * 100,
    }


def fanout(
    port: int, clients: int, sizes: Sizes, procs: list[Proc], sampler: Sampler, cpu_pids: dict[str, int]
) -> dict[str, Any]:
    run_id = start_run(port, "bench-tick", {"n": sizes.tick_n, "delay": sizes.tick_delay_s})
    command(port, run_id, "pause", {"reason": "bench: clients connecting"})
    wait_run(port, run_id, lambda v: v["paused"], procs, 30)
    nprocs = max(1, min(sizes.client_procs, clients // 100 or 1))
    share = [clients // nprocs + (1 if k < clients % nprocs else 0) for k in range(nprocs)]
    ctx = mp.get_context("spawn")
    connected, out = ctx.Queue(), ctx.Queue()
    cap_s = 60.0 + sizes.tick_n * sizes.tick_delay_s * 4
    workers = [
        ctx.Process(
            target=fanout_worker, args=(common.TOKEN, port, run_id, n, connected, out, cap_s), daemon=True
        )
        for n in share
    ]
    t_connect = time.perf_counter()
    for w in workers:
        w.start()
    try:
        for _ in workers:
            kind, detail = connected.get(timeout=120)
            if kind != "ok":
                raise BenchFailure(f"fan-out client process failed while connecting: {detail}")
        connect_s = time.perf_counter() - t_connect
        sampler.reset()
        cpu = CpuMeter(cpu_pids)
        command(port, run_id, "resume", {})
        parts = [out.get(timeout=cap_s + 30) for _ in workers]
        usage = cpu.done()
        peak = sampler.peak()
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    # bench_cpu_pct is this process; the client processes report their own CPU (clients_cpu_pct)
    errors = [p["error"] for p in parts if "error" in p] + [e for p in parts for e in p.get("errors", [])]
    view = api_json(port, "GET", f"{API}/runs/{run_id}")
    ledger_len = view.get("ledger_len")
    latencies = array("d")
    for p in parts:
        if "latencies" in p:
            latencies.frombytes(p["latencies"])
    received = sum(p.get("received", 0) for p in parts)
    bad = sum(p.get("dup_or_gap", 0) + p.get("no_done", 0) for p in parts)
    cursors = {p.get("last_cursor") for p in parts}
    if errors or bad or cursors != {ledger_len} or received != clients * ledger_len:
        raise BenchFailure(
            f"fan-out {clients}: {bad} clients with a gap/duplicate or no done, last cursors {cursors}, "
            f"ledger_len {ledger_len}, received {received} of {clients * (ledger_len or 0)}; {errors[:3]}"
        )
    values = list(latencies)
    usage["clients_cpu_pct"] = sum(p.get("cpu_pct", 0.0) for p in parts)
    sums: dict[int, list[float]] = {}
    for p in parts:
        for cursor, (total, n) in p.get("by_cursor", {}).items():
            acc = sums.setdefault(cursor, [0.0, 0])
            acc[0] += total
            acc[1] += n
    mean_by_record = [round(sums[c][0] / sums[c][1] * 1e3, 1) for c in sorted(sums)]
    return {
        "clients": clients,
        "client_procs": nprocs,
        "records": ledger_len,
        "deliveries_timed": len(values),
        "connect_s": connect_s,
        "p50_ms": percentile(values, 50) * 1e3,
        "p99_ms": percentile(values, 99) * 1e3,
        "max_ms": max(values) * 1e3 if values else math.nan,
        **usage,
        "serve_peak_rss_mb": peak.get("serve", math.nan),
        "mean_ms_by_record": mean_by_record,
        "checked": f"{clients} clients x {ledger_len} records, dense, once, then done",
    }
