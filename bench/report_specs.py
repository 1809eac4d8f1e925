"""What the benchmark report measures: one Spec per table row (getter, p99, target) for each bench."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]
Getter = Callable[[Json], float | None]


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    limit: float
    on_p99: bool = False  # the target applies to the p99 column, not the median value

    def met(self, value: float) -> bool:
        return value >= self.limit if self.op == ">=" else value <= self.limit

    def miss_pct(self, value: float) -> float:
        """How far past the limit, in % of the limit (positive when missed)."""
        if self.op == ">=":
            return (self.limit - value) / self.limit * 100
        return (value - self.limit) / self.limit * 100


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    unit: str  # "/s" suffixes (runs/s, req/s, ...), "ms", "MB", "x"
    value: Getter
    p99: Getter | None = None
    target: Target | None = None
    note: str = ""  # shown in the result column when there is no target
    p99_unit: str = ""  # the p99 column's unit when it differs (a throughput row's per-op latency)


def find(cases: list[Json], **match: Any) -> Json | None:
    for case in cases:
        if all(case.get(k) == v for k, v in match.items()):
            return case
    return None


def pick(*path: Any) -> Getter:
    """Getter for js[path[0]][path[1]]...; None when any step is missing."""

    def get(js: Json) -> float | None:
        cur: Any = js
        for step in path:
            if isinstance(cur, dict) and step in cur:
                cur = cur[step]
            else:
                return None
        return float(cur) if isinstance(cur, int | float) else None

    return get


def in_case(list_key: str, field_name: str, **match: Any) -> Getter:
    def get(js: Json) -> float | None:
        case = find(js.get(list_key, []), **match)
        return None if case is None or field_name not in case else float(case[field_name])

    return get


def ratio(num: Getter, den: Getter) -> Getter:
    def get(js: Json) -> float | None:
        a, b = num(js), den(js)
        return None if a is None or not b else a / b

    return get


def claims_p99(batch: int, processes: int, cases: str = "claims") -> Getter:
    def get(js: Json) -> float | None:
        case = find(js.get(cases, []), batch=batch, processes=processes)
        return None if case is None else max(r["p99_ms"] for r in case["per_runner"])

    return get


def claims_worst(js: Json) -> float | None:
    worst = [r["worst_ms"] for case in js.get("claims", []) for r in case["per_runner"]]
    return max(worst) if worst else None


def store_specs(js: Json) -> list[Spec]:
    records = (js.get("ledger_pages") or {}).get("records") or js["sizes"]["page_runs"] * 1000
    ledger = f"{records / 1e6:g}M" if records >= 1e6 else f"{records / 1e3:,.0f}k"
    specs = [
        Spec("cmd", "command appends, single-row commits (p99 = one commit)", "/s",
             pick("command_appends", "per_s"), pick("command_appends", "p99_ms"), p99_unit="ms"),
        Spec("ledger_unfenced", "ledger appends, unfenced (tools)", "/s",
             pick("ledger_appends", "unfenced_per_s"), pick("ledger_appends", "unfenced_p99_ms"),
             p99_unit="ms"),
        Spec("ledger_fenced", "ledger appends, fenced (what a runner does)", "/s",
             pick("ledger_appends", "fenced_per_s"), pick("ledger_appends", "fenced_p99_ms"), p99_unit="ms"),
        Spec("page_head", f"1000-record page, after=0, on a {ledger}-record ledger (p50)", "ms",
             pick("ledger_pages", "head_p50_ms"), pick("ledger_pages", "head_p99_ms"), Target("<=", 1.0)),
        Spec("page_offset", "1000-record page, random `after` (p50)", "ms",
             pick("ledger_pages", "offset_p50_ms"), pick("ledger_pages", "offset_p99_ms")),
        Spec("page_joined", "1000-record page, after=0, as one joined value (the API's replay read) (p50)",
             "ms", pick("ledger_pages", "joined_p50_ms"), pick("ledger_pages", "joined_p99_ms")),
    ]  # fmt: skip
    for batch in (1, 16):
        for procs in (1, 2):
            specs.append(
                Spec(
                    f"claims_{batch}_{procs}",
                    f"claims, {batch} per claim, {procs} process{'es' if procs > 1 else ''} "
                    "(p99 = one claim's latency)",
                    "/s",
                    in_case("claims", "claims_per_s", batch=batch, processes=procs),
                    claims_p99(batch, procs),
                    Target(">=", 10_000.0),
                    p99_unit="ms",
                )
            )
    for batch in (1, 16):
        for procs in (1, 2):
            specs.append(
                Spec(
                    f"claims_keys_{batch}_{procs}",
                    f"claims over 1,000 concurrency keys and 5 priorities, {batch} per claim, {procs} "
                    f"process{'es' if procs > 1 else ''}",
                    "/s",
                    in_case("claims_keys", "claims_per_s", batch=batch, processes=procs),
                    claims_p99(batch, procs, "claims_keys"),
                    p99_unit="ms",
                )
            )
    specs += [
        # Flow control may cost claims at most half their rate (issue 18): keyed / plain, same run.
        Spec("claims_keys_ratio", "claims with 1,000 keys / plain claims (16 per claim, 1 process)", "x",
             ratio(in_case("claims_keys", "claims_per_s", batch=16, processes=1),
                   in_case("claims", "claims_per_s", batch=16, processes=1)), None, Target(">=", 0.5)),
        Spec("claims_keys_ratio_1", "claims with 1,000 keys / plain claims (1 per claim, 1 process)", "x",
             ratio(in_case("claims_keys", "claims_per_s", batch=1, processes=1),
                   in_case("claims", "claims_per_s", batch=1, processes=1)), None, Target(">=", 0.5)),
        Spec("claims_worst", "claims: worst single claim wait (any case)", "ms", claims_worst, None,
             Target("<=", 100.0)),
        Spec("tick_ours", "tick chain-effects-200, our stores", "steps/s", pick("tick", "ours_steps_per_s")),
        Spec("tick_ar", "tick chain-effects-200, abstractruntime's sqlite stores", "steps/s",
             pick("tick", "abstractruntime_steps_per_s")),
        Spec("tick_ratio", "tick ratio, ours / abstractruntime", "x", pick("tick", "ratio"), None,
             Target(">=", 2.0)),
        Spec("state_save", f"RunState save, a {state_kb(js)} state, one fenced commit each", "saves/s",
             pick("state_saves", "sqlite", "saves_per_s")),
    ]  # fmt: skip
    return specs


def state_kb(js: Json) -> str:
    size = (js.get("state_saves") or {}).get("state_bytes")
    return f"{size / 1e3:.0f} KB" if size else "~130 KB"


def runner_specs(js: Json) -> list[Spec]:
    specs: list[Spec] = []
    for bundle in ("bench-echo", "chain-effects-200"):
        runs = js["sizes"]["runs"].get(bundle, 0)
        for procs in (1, 2):
            who = f"{bundle} ({runs} runs), {procs} runner{'s' if procs > 1 else ''}"
            specs.append(
                Spec(f"{bundle}_{procs}_rps", f"{who}: runs/s", "runs/s",
                     in_case("cases", "runs_per_s", bundle=bundle, processes=procs))
            )  # fmt: skip
            specs.append(
                Spec(f"{bundle}_{procs}_lat", f"{who}: run start -> finish (p50)", "ms",
                     in_case("cases", "latency_p50_ms", bundle=bundle, processes=procs),
                     in_case("cases", "latency_p99_ms", bundle=bundle, processes=procs))
            )  # fmt: skip
        specs.append(
            Spec(f"{bundle}_scale", f"{bundle}: 2 runners / 1 runner", "x",
                 ratio(in_case("cases", "runs_per_s", bundle=bundle, processes=2),
                       in_case("cases", "runs_per_s", bundle=bundle, processes=1)), None, None,
                 "see below")
        )  # fmt: skip
    return specs


def fanout(clients: int, field_name: str) -> Getter:
    return in_case("fanout", field_name, clients=clients)


def api_specs(js: Json) -> list[Spec]:
    def load_case(list_key: str, label: str, concurrency: int, target: Target | None = None) -> Spec:
        return Spec(
            f"{list_key}_c{concurrency}",
            f"{label}, concurrency {concurrency} (p99 = one request)",
            "req/s",
            in_case(list_key, "req_per_s", concurrency=concurrency),
            in_case(list_key, "p99_ms", concurrency=concurrency),
            target,
            p99_unit="ms",
        )

    specs = [
        load_case("starts", "POST runs/start", 1),
        load_case("starts", "POST runs/start", 16, Target(">=", 3_500.0)),
        Spec("health_c16", "GET /api/health, concurrency 16 (HTTP stack ceiling, no db write)", "req/s",
             pick("health", "req_per_s"), pick("health", "p99_ms"), None, "reference", p99_unit="ms"),
        load_case("commands", "POST commands (pause)", 1),
        load_case("commands", "POST commands (pause)", 16),
        Spec("replay", "ledger replay, 1000 records (p50)", "ms", pick("replay", "p50_ms"),
             pick("replay", "p99_ms"), Target("<=", 3.0)),
        Spec("resume", "resume -> SSE done (p50)", "ms", pick("resume", "p50_ms"), pick("resume", "p99_ms"),
             Target("<=", 25.0)),
    ]  # fmt: skip
    clients = sorted({int(c["clients"]) for c in js.get("fanout", [])} | {5_000})
    for n in clients:
        specs.append(
            Spec(f"sse_{n}", f"SSE fan-out, {n:,} clients on one run: delivery (p50)", "ms",
                 fanout(n, "p50_ms"), fanout(n, "p99_ms"),
                 Target("<=", 500.0, on_p99=True) if n >= 5_000 else None)
        )  # fmt: skip
    specs += [
        Spec("rss_idle", "serve idle RSS", "MB", pick("rss_mb", "serve_idle"), None, Target("<=", 100.0)),
        Spec("rss_writes", "serve peak RSS during starts/commands", "MB", pick("rss_mb", "serve_peak_writes")),
        Spec("rss_sse", "serve peak RSS during SSE fan-out", "MB", pick("rss_mb", "serve_peak_reads")),
        Spec("rss_runner", "runner idle RSS (separate process)", "MB", pick("rss_mb", "runner_idle")),
    ]  # fmt: skip
    return specs


def ops_specs(js: Json) -> list[Spec]:
    runs = (js.get("filters") or {}).get("runs", 0)
    specs = [
        Spec(f"filter_{i}", f"runs list over {runs:,} runs, {case['filter']} (p50, one page of 50)", "ms",
             in_case_of("filters", "cases", "p50_ms", filter=case["filter"]),
             in_case_of("filters", "cases", "p99_ms", filter=case["filter"]), Target("<=", 50.0))
        for i, case in enumerate((js.get("filters") or {}).get("cases", []))
    ]  # fmt: skip
    specs.append(
        Spec("cursor_page", "runs list: a page by next_cursor, 200 pages deep (p50)", "ms",
             pick("filters", "cursor_page_p50_ms"), None, Target("<=", 50.0))
    )  # fmt: skip
    if js.get("retention"):
        specs += [
            Spec("retention_rps", "retention: expired runs deleted (with ledgers, artifacts)", "runs/s",
                 pick("retention", "runs_per_s")),
            Spec("retention_stall", "retention: longest writer stall meanwhile", "ms",
                 pick("retention", "writer_stall_max_ms"), pick("retention", "writer_stall_p99_ms")),
        ]  # fmt: skip
    return specs


def sandbox_specs(js: Json) -> list[Spec]:
    calls = js.get("calls", 0)
    return [
        Spec("code_in_process", f"code node in the runner's process, RestrictedPython ({calls} calls, p50)", "ms",
             pick("in_process", "p50_ms"), pick("in_process", "p99_ms")),
        Spec("code_sandboxed", f"code node in the sandbox process ({calls} calls, p50)", "ms",
             pick("sandbox", "p50_ms"), pick("sandbox", "p99_ms")),
        Spec("code_overhead", "the sandbox's cost per code node (p50, sandbox minus in process)", "ms",
             pick("overhead_p50_ms")),
        Spec("code_cold", "the sandbox's cold start (a worker's first code node: its fork server)", "ms",
             pick("cold_start_ms")),
    ]  # fmt: skip


def in_case_of(section: str, list_key: str, field_name: str, **match: Any) -> Getter:
    def get(js: Json) -> float | None:
        return in_case(list_key, field_name, **match)(js.get(section) or {})

    return get


# --- the same benches on PostgreSQL (keys prefixed pg_: one namespace holds every run's values) -----
def pg_store_specs(js: Json) -> list[Spec]:
    return [
        Spec(f"pg_claims_16_{procs}", f"claims, 16 per claim, {procs} process{'es' if procs > 1 else ''}",
             "/s", in_case("claims", "claims_per_s", batch=16, processes=procs), claims_p99(16, procs),
             Target(">=", 10_000.0), p99_unit="ms")
        for procs in (1, 2, 4)
    ] + [
        Spec(f"pg_state_save_{method}", f"RunState save, a {state_kb(js)} state, run_states {method}",
             "saves/s", pick("state_saves", method, "saves_per_s"))
        for method in ("lz4", "pglz")
    ]  # fmt: skip


def pg_runner_specs(js: Json) -> list[Spec]:
    return [
        Spec("pg_chain_1_rps", "chain-effects-200, 1 runner: runs/s", "runs/s",
             in_case("cases", "runs_per_s", bundle="chain-effects-200", processes=1),
             in_case("cases", "latency_p99_ms", bundle="chain-effects-200", processes=1)),
    ]  # fmt: skip


def pg_api_specs(js: Json) -> list[Spec]:
    return [
        Spec(f"pg_starts_c{c}", f"POST runs/start, concurrency {c}", "req/s",
             in_case("starts", "req_per_s", concurrency=c), in_case("starts", "p99_ms", concurrency=c),
             Target(">=", 1_500.0) if c == 16 else None, p99_unit="ms")
        for c in (1, 16)
    ] + [
        Spec("pg_replay", "ledger replay, 1000 records (p50)", "ms", pick("replay", "p50_ms"),
             pick("replay", "p99_ms"), Target("<=", 5.0)),
        Spec("pg_resume", "resume -> SSE done (p50)", "ms", pick("resume", "p50_ms"), pick("resume", "p99_ms"),
             Target("<=", 50.0)),
    ]  # fmt: skip


SPECS: dict[str, Callable[[Json], list[Spec]]] = {
    "store": store_specs,
    "runner": runner_specs,
    "api": api_specs,
    "ops": ops_specs,
    "sandbox": sandbox_specs,
    "store-pg": pg_store_specs,
    "runner-pg": pg_runner_specs,
    "api-pg": pg_api_specs,
}


# Extra numbers the explanations quote (median over repeats, like the table values).
def facts(bench: str, js: Json) -> dict[str, float | None]:
    if bench == "store-pg":
        return {
            "pg_claims_first_tenth": in_case("claims", "first_tenth_per_s", batch=16, processes=1)(js),
            "pg_claims_last_tenth": in_case("claims", "last_tenth_per_s", batch=16, processes=1)(js),
            "pg_state_kb": ratio(pick("state_saves", "state_bytes"), lambda _js: 1e3)(js),
            **{
                f"pg_{method}_{short}_kb": ratio(pick("state_saves", method, name), lambda _js: 1e3)(js)
                for method in ("lz4", "pglz")
                for short, name in (("stored", "stored_bytes"), ("wal", "wal_bytes_per_save"))
            },
            "pg_lz4_ms": pick("state_saves", "lz4", "ms_per_save")(js),
        }
    if bench == "api-pg":
        return {
            "pg_starts_c16_serve_cpu": in_case("starts", "serve_cpu_pct", concurrency=16)(js),
            "pg_starts_c16_bench_cpu": in_case("starts", "bench_cpu_pct", concurrency=16)(js),
            "pg_starts_c16_pg_cpu": in_case("starts", "postgres_cpu_pct", concurrency=16)(js),
            "pg_replay_pg_cpu": pick("replay", "postgres_cpu_pct")(js),
            "pg_replay_serve_cpu": pick("replay", "serve_cpu_pct")(js),
            "pg_resume_runner_cpu": pick("resume", "runner_cpu_pct")(js),
            "pg_resume_serve_cpu": pick("resume", "serve_cpu_pct")(js),
        }
    if bench == "runner-pg":
        return {
            "pg_chain_1_lat": in_case("cases", "latency_p50_ms", bundle="chain-effects-200", processes=1)(js),
            "pg_chain_wal_kb": ratio(
                in_case("cases", "wal_bytes_per_run", bundle="chain-effects-200", processes=1),
                lambda _js: 1e3,
            )(js),
        }
    if bench == "api":
        out: dict[str, float | None] = {
            "starts_c16_serve_cpu": in_case("starts", "serve_cpu_pct", concurrency=16)(js),
            "starts_c16_bench_cpu": in_case("starts", "bench_cpu_pct", concurrency=16)(js),
            "health_serve_cpu": pick("health", "serve_cpu_pct")(js),
        }
        for n in (1_000, 5_000):
            for name in ("serve_cpu_pct", "runner_cpu_pct", "clients_cpu_pct", "max_ms", "connect_s"):
                out[f"sse_{n}_{name}"] = fanout(n, name)(js)
        return out
    return {}
