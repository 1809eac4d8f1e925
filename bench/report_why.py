"""Why a target was missed: one line per row, filled in with the run's own numbers."""

from __future__ import annotations

# Format fields: any spec key (its median value), `<key>_p99`, and `facts` in report_specs.py.
WHY: dict[str, str] = {
    "page_head": (
        "a page is one indexed range read on the WITHOUT ROWID ledger; p50 above 1 ms here means the "
        "CPU was shared with other work (p99 {page_head_p99:.2f} ms)."
    ),
    "claims_1_1": (
        "one claim = one UPDATE ... RETURNING commit; at 1 per claim the rate is the commit rate of one "
        "process (batches of 16 reached {claims_16_1:,.0f}/s)."
    ),
    "claims_1_2": (
        "two processes claiming one run per commit in tight loops serialize on SQLite's single write lock; "
        "the second process adds busy-handler waits (jittered backoff 100 us - 2 ms), not throughput, "
        "and the result sits near the 10k line from run to run (1 process: {claims_1_1:,.0f}/s; "
        "batches of 16 with 2 processes: {claims_16_2:,.0f}/s)."
    ),
    "claims_16_1": "batched claims are bounded by the same commit rate; a miss here means CPU contention.",
    "claims_16_2": "batched claims are bounded by the same commit rate; a miss here means CPU contention.",
    "claims_keys_ratio": (
        "the keyed claim walks runs_claim_order (priority, fair tag) and checks labels per row, reading "
        "the index alone; with {claims_keys_16_1:,.0f}/s against {claims_16_1:,.0f}/s plain, a miss "
        "means the walk stepped over many rows it could not take (not yet due, or needing labels this "
        "runner lacks) or the 2 cores were shared (issue 18 measured 1.2-1.4x at 16 per claim)."
    ),
    "claims_keys_ratio_1": (
        "at 1 per claim the commit dominates both sides ({claims_keys_1_1:,.0f}/s keyed against "
        "{claims_1_1:,.0f}/s plain); a miss means CPU contention (issue 18 measured 1.0-1.1x)."
    ),
    "claims_worst": (
        "the busy handler's backoff is capped at 2 ms, so a wait over 100 ms means the process was "
        "descheduled (other load on the 2 cores)."
    ),
    "tick_ratio": (
        "both sides run the same abstractruntime Runtime, which re-encodes and rewrites the whole RunState "
        "after every step (the chain-effects-200 state grows to ~109 KB by the end, measured in issue 2); "
        "that cost and the runtime's own per-step work are common to both stores and bound the ratio: "
        "ours {tick_ours:,.0f} vs {tick_ar:,.0f} steps/s. The ratio sits on the 2x line: issue 2 measured "
        "1.88-2.05x across runs."
    ),
    "bench-echo_scale": (
        "{bench-echo_2_rps:,.0f} runs/s with 2 runners vs {bench-echo_1_rps:,.0f} with 1 ({gain:+.0f}%): on 2 "
        "cores a second runner process does not add throughput; each run's writes commit under SQLite's "
        "one write lock (~18% of worker time was in the busy handler when profiled), and both runners and "
        "the bench share the same 2 cores."
    ),
    "chain-effects-200_scale": (
        "{chain-effects-200_2_rps:.1f} runs/s with 2 runners vs {chain-effects-200_1_rps:.1f} with 1 "
        "({gain:+.0f}%), while a run's start -> finish p50 goes from {chain-effects-200_1_lat:.0f} to "
        "{chain-effects-200_2_lat:.0f} ms: abstractruntime rewrites the whole RunState each step, so each "
        "of the 200 steps commits a growing state under SQLite's single write lock, and the two runners "
        "mostly take turns on it."
    ),
    "scale_gain": (
        "a second runner process added {gain:.0f}% in this run; both runners commit under SQLite's one "
        "write lock on the same 2 cores, which bounds the gain."
    ),
    "starts_c16": (
        "bounded by Hypercorn + Starlette per-request CPU in one Python process: serve ran at "
        "{starts_c16_serve_cpu:.0f}% of a core (the load client took {starts_c16_bench_cpu:.0f}% of the "
        "same 2 cores), and GET /api/health alone, with no db write, reached {health_c16:,.0f} req/s in "
        "this run (about 3.6k req/s at best on one process). Two API processes with `serve --reuse-port` "
        "reached 3,352/s at c32 (measured separately), the client still sharing the 2 cores."
    ),
    "replay": "one indexed range read per page; a p50 above 3 ms here means the CPU was shared.",
    "resume": (
        "latency = command commit -> runner poll (5 ms) -> tick -> change feed poll -> SSE write; a p50 "
        "above 25 ms means the runner or serve was waiting for CPU."
    ),
    "sse_5000": (
        "the 5,000 clients run in 2 client processes on the same 2 cores as serve and the runner "
        "(during delivery: serve {sse_5000_serve_cpu_pct:.0f}%, clients {sse_5000_clients_cpu_pct:.0f}%, "
        "runner {sse_5000_runner_cpu_pct:.0f}% of a core), so the tail includes the clients' own "
        "scheduling delay; p50 {sse_5000:.0f} ms, max {sse_5000_max_ms:.0f} ms."
    ),
    "rss_idle": "serve imports only the light stack (no abstractruntime); over 100 MB would be a regression.",
}


def explain(key: str, values: dict[str, float | None]) -> str:
    template = WHY.get(key)
    if template is None:
        return ""
    # Keys hold '-' (bundle names): format fields are looked up by mapping, so use format_map with them.
    try:
        return template.format_map(NumbersOrNan(values))
    except (ValueError, TypeError):
        return template.split(":")[0] + " (numbers unavailable in this run)."


class NumbersOrNan(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> float:
        return float("nan")
