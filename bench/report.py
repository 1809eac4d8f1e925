"""Benchmark report: runs the store, runner and API benchmarks and writes docs/benchmarks.md.

Run from the repo root: `python -m bench.report [--quick] [--repeat N] [--out docs/benchmarks.md]`.
Each benchmark runs as its own subprocess (a fresh interpreter, nothing warm from the one before);
the report parses the final JSON line each one prints, takes the median over `--repeat` runs, and
writes one markdown table per layer: measure | value (median) | p99 | target | result, with a short
"why" under every missed target (from WHY below, filled in with this run's numbers).

`--quick-bench api` runs only that bench at its `--quick` sizes (for when a full run is too long);
the document says which benches ran quick. `--raw-dir DIR` keeps every bench's stdout;
`--from-raw DIR` re-renders the document from such a directory without running anything.

While each bench runs, the report also measures the CPU time the rest of the machine used
(/proc/stat busy time minus the bench's own process tree): on a shared 2-core machine that says
whether a number may have been disturbed by other work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHES = ("store", "runner", "api")
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
DISTURBED_CORES = 0.15  # other processes' average load (cores) above which a bench is flagged

Json = dict[str, Any]
Getter = Callable[[Json], float | None]


# --- measures -----------------------------------------------------------------------------------------
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


def claims_p99(batch: int, processes: int) -> Getter:
    def get(js: Json) -> float | None:
        case = find(js.get("claims", []), batch=batch, processes=processes)
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
    specs += [
        Spec("claims_worst", "claims: worst single claim wait (any case)", "ms", claims_worst, None,
             Target("<=", 100.0)),
        Spec("tick_ours", "tick chain-effects-200, our stores", "steps/s", pick("tick", "ours_steps_per_s")),
        Spec("tick_ar", "tick chain-effects-200, abstractruntime's sqlite stores", "steps/s",
             pick("tick", "abstractruntime_steps_per_s")),
        Spec("tick_ratio", "tick ratio, ours / abstractruntime", "x", pick("tick", "ratio"), None,
             Target(">=", 2.0)),
    ]  # fmt: skip
    return specs


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


SPECS: dict[str, Callable[[Json], list[Spec]]] = {
    "store": store_specs,
    "runner": runner_specs,
    "api": api_specs,
}


# Extra numbers the explanations quote (median over repeats, like the table values).
def facts(bench: str, js: Json) -> dict[str, float | None]:
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


# --- why: one line per missed target (and context for rows without one) ------------------------------------
# Format fields: any spec key (its median value), `<key>_p99`, and the facts above.
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
        return template.format_map(_Numbers(values))
    except (ValueError, TypeError):
        return template.split(":")[0] + " (numbers unavailable in this run)."


class _Numbers(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> float:
        return float("nan")


# --- running the benches ------------------------------------------------------------------------------------
@dataclass
class BenchRun:
    bench: str
    quick: bool
    returncode: int
    wall_s: float
    other_cpu_s: float  # CPU seconds used by processes outside the bench's tree while it ran
    result: Json | None
    stdout: str
    stderr: str = ""
    started_at: str = ""  # ISO UTC
    commit: str = ""  # git HEAD (and whether the tree had uncommitted changes) when the bench started

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.wall_s if self.wall_s else 0.0


def busy_cpu_s() -> float:
    """Machine-wide busy CPU seconds from /proc/stat (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(max_wait_s: float, window_s: float = 2.0, windows: int = 3) -> float:
    """Wait until the machine is quiet (busy < DISTURBED_CORES for `windows` windows in a row), at most
    max_wait_s; the seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    while quiet < windows and time.perf_counter() - t0 < max_wait_s:
        busy0 = busy_cpu_s()
        time.sleep(window_s)
        cores = (busy_cpu_s() - busy0) / window_s
        quiet = quiet + 1 if cores < DISTURBED_CORES else 0
    return time.perf_counter() - t0


def last_json(stdout: str, bench: str) -> Json | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                js = json.loads(line)
            except json.JSONDecodeError:
                continue
            if js.get("bench") == bench:
                return js
    return None


def run_bench(bench: str, quick: bool, timeout_s: float, extra: list[str]) -> BenchRun:
    command = [sys.executable, "-m", f"bench.bench_{bench}", *(["--quick"] if quick else []), *extra]
    print(f"== {' '.join(command[1:])}", flush=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    commit = git_commit()
    busy0, kids0, t0 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    # Its own session, so a timeout can stop the bench and the servers/runners it started, all together.
    proc = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = 124
        stderr += f"\nbench.report: killed after {timeout_s:g} s"
    wall = time.perf_counter() - t0
    other = max(0.0, (busy_cpu_s() - busy0) - (children_cpu_s() - kids0))
    run = BenchRun(
        bench, quick, code, wall, other, last_json(stdout, bench), stdout, stderr, started_at, commit
    )
    status = "ok" if code == 0 and run.result else f"exit {code}"
    print(
        f"   {status} in {wall:.1f} s; other processes on the machine: {other:.1f} CPU-s "
        f"({run.other_cores:.2f} cores on average)",
        flush=True,
    )
    if code != 0:
        print(stdout[-2000:] + stderr[-2000:], flush=True)
    return run


def save_raw(raw_dir: Path, run: BenchRun, index: int) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{run.bench}-{index}"
    (raw_dir / f"{stem}.out").write_text(run.stdout)
    keys = ("bench", "quick", "returncode", "wall_s", "other_cpu_s", "started_at", "commit")
    meta = {k: getattr(run, k) for k in keys}
    (raw_dir / f"{stem}.meta.json").write_text(json.dumps(meta))


def load_raw(raw_dir: Path) -> dict[str, list[BenchRun]]:
    runs: dict[str, list[BenchRun]] = {}
    for meta_path in sorted(raw_dir.glob("*.meta.json")):
        meta = json.loads(meta_path.read_text())
        stdout = meta_path.with_name(meta_path.name.replace(".meta.json", ".out")).read_text()
        run = BenchRun(**meta, result=last_json(stdout, meta["bench"]), stdout=stdout)
        if not run.started_at:  # written before started_at was kept: the output's mtime less the wall time
            end = meta_path.with_name(meta_path.name.replace(".meta.json", ".out")).stat().st_mtime
            run.started_at = datetime.fromtimestamp(end - run.wall_s, UTC).isoformat(timespec="seconds")
        runs.setdefault(run.bench, []).append(run)
    return runs


# --- aggregation ------------------------------------------------------------------------------------------
@dataclass
class Row:
    spec: Spec
    value: float | None
    p99: float | None
    spread: tuple[float, float] | None  # min, max of the values when repeated
    result: str = ""
    why: str = ""


@dataclass
class Section:
    bench: str
    runs: list[BenchRun]
    rows: list[Row] = field(default_factory=list)
    values: dict[str, float | None] = field(default_factory=dict)


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(bench: str, runs: list[BenchRun]) -> Section:
    section = Section(bench, runs)
    results = [r.result for r in runs if r.result is not None]
    if not results:
        return section
    specs = SPECS[bench](results[0])
    values: dict[str, float | None] = {}
    for spec in specs:
        per_run = [spec.value(js) for js in results]
        value = median_of(per_run)
        p99 = median_of([spec.p99(js) for js in results]) if spec.p99 else None
        present = [v for v in per_run if v is not None]
        spread = (min(present), max(present)) if len(present) > 1 else None
        values[spec.key] = value
        values[f"{spec.key}_p99"] = p99
        section.rows.append(Row(spec, value, p99, spread))
    for key in {k for js in results for k in facts(bench, js)}:
        values[key] = median_of([facts(bench, js).get(key) for js in results])
    section.values = values
    return section


def judge(sections: list[Section]) -> None:
    """Result column and why line for every row, with every bench's numbers available to WHY."""
    values: dict[str, float | None] = {}
    for section in sections:
        values.update(section.values)
    for section in sections:
        for row in section.rows:
            spec = row.spec
            if spec.target is None:
                row.result = spec.note.format_map(_Numbers(values)) if "{" in spec.note else spec.note
                if spec.note == "see below" and row.value is not None:
                    gain = (row.value - 1) * 100
                    key = "scale_gain" if gain >= 15 else spec.key
                    row.why = explain(key, {**values, "gain": gain})
                continue
            measured = row.p99 if spec.target.on_p99 else row.value
            if measured is None:
                row.result = "not measured"
                if spec.key.startswith("sse_") and any(r.quick for r in section.runs):
                    row.result = "not measured (--quick runs fewer clients)"
            elif spec.target.met(measured):
                row.result = "met"
            else:
                row.result = f"**missed by {spec.target.miss_pct(measured):.0f}%**"
                row.why = explain(spec.key, values)


# --- markdown ---------------------------------------------------------------------------------------------
def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    number = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return f"{number}/s" if unit == "/s" else f"{number} {unit}"


def fmt_target(target: Target | None, unit: str) -> str:
    if target is None:
        return ""
    op = "≥" if target.op == ">=" else "≤"
    if unit == "x":
        limit = f"{target.limit:g}x"
    elif unit.endswith("/s"):
        limit = f"{target.limit:,.0f}" + ("/s" if unit == "/s" else f" {unit}")
    else:
        limit = f"{target.limit:g} {unit}"
    return f"{'p99 ' if target.on_p99 else ''}{op} {limit}"


def machine() -> list[tuple[str, str]]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        import apsw

        sqlite = f"{apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()})"
    except ImportError:
        sqlite = "unknown (apsw not importable)"
    versions = []
    for dist in ("abstractruntime", "hypercorn", "starlette", "msgspec"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return [
        ("CPU cores (os.cpu_count)", str(os.cpu_count())),
        ("CPU model", model),
        ("RAM", f"{mem_kb / 2**20:.1f} GiB"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite),
        ("Kernel", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Packages", ", ".join(versions) or "n/a"),
    ]


def git_commit() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


TITLES = {
    "store": ("Store", "bench/bench_store.py", "issue 2"),
    "runner": ("Runner", "bench/bench_runner.py", "issue 3"),
    "api": ("API", "bench/bench_api.py", "issue 4"),
}


INTRO = {
    "runner": "issue 3 sets no numeric target: runs completed per second are reported as measured.",
}


def commits(sections: list[Section]) -> str:
    """The commit(s) the benches ran at; HEAD now for outputs saved before commits were recorded."""
    seen = {r.commit or git_commit() for s in sections for r in s.runs}
    return ", ".join(sorted(seen)) or git_commit()


def sizes_line(quick: list[str], benches: list[str]) -> str:
    if not quick:
        return "full"
    if set(quick) >= set(benches):
        return "`--quick` for every bench"
    return "full except `--quick` for " + ", ".join(quick)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(sections: list[Section], args: argparse.Namespace, started: datetime, total_s: float) -> str:
    repeat = max((len(s.runs) for s in sections), default=1)
    quick = sorted({s.bench for s in sections if any(r.quick for r in s.runs)})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.report` (bench/report.py); do not edit by hand. Each benchmark ran "
        "as its own process; method and correctness checks per bench are in [bench/README.md]"
        "(../bench/README.md). Client, server, runners and benchmark share the machine below.",
        "",
        "## Machine and run",
        "",
        "| | |",
        "|---|---|",
    ]
    for key, value in machine():
        lines.append(f"| {key} | {cell(value)} |")
    lines += [
        f"| Date | {started.strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| Git commit | {commits(sections)} |",
        f"| Repeats | {repeat} ({'median of the runs; the range is shown' if repeat > 1 else 'one run each'}) |",
        f"| Sizes | {sizes_line(quick, [s.bench for s in sections])} |",
        f"| Total time | {total_s / 60:.1f} min |",
        "",
    ]
    if quick and not args.quick:
        lines += [
            f"The {', '.join(quick)} bench ran at its `--quick` sizes to keep the whole report under "
            "15 minutes; its numbers come from fewer requests/runs than the full bench.",
            "",
        ]
    elif args.quick:
        lines += ["All benches ran at their `--quick` sizes: a smoke run, not the published numbers.", ""]

    intro = "Time per bench, and the CPU the rest of the machine used meanwhile"
    if args.from_raw:
        intro += " (rendered from saved bench outputs with `--from-raw`)"
    lines += [intro + ":", ""]
    lines += [
        "| bench | started (UTC) | runs | wall time | exit | other processes (avg cores) |",
        "|---|---|---|---|---|---|",
    ]
    disturbed = []
    for s in sections:
        walls = ", ".join(f"{r.wall_s:.0f} s" for r in s.runs)
        exits = ", ".join(str(r.returncode) for r in s.runs)
        other = max((r.other_cores for r in s.runs), default=0.0)
        if other > DISTURBED_CORES:
            disturbed.append(s.bench)
        starts = ", ".join(r.started_at[:16].replace("T", " ") for r in s.runs) or "?"
        lines.append(f"| {s.bench} | {starts} | {len(s.runs)} | {walls} | {exits} | {other:.2f} |")
    lines.append("")
    if disturbed:
        lines += [
            f"Other work on the machine used more than {DISTURBED_CORES:g} of the 2 cores on average while "
            f"{', '.join(disturbed)} ran: those numbers may be lower (latencies higher) than on an idle "
            "machine.",
            "",
        ]

    for s in sections:
        title, path, issue = TITLES[s.bench]
        lines += [f"## {title}", "", f"`{path}`; {INTRO.get(s.bench, f'targets from {issue}.')}", ""]
        if not s.rows:
            lines += ["No result: the bench printed no JSON line (see its exit status above).", ""]
            continue
        failed = [r for r in s.runs if r.returncode != 0 or not (r.result or {}).get("ok", True)]
        if failed:
            lines += ["**A correctness check failed in this bench; its numbers are not valid.**", ""]
        head = "| measure | value (median) | p99 | target | result |"
        lines += [head, "|---|---:|---:|---|---|"]
        for row in s.rows:
            unit = row.spec.unit
            value = fmt(row.value, unit)
            if row.spread:
                value += f" ({fmt(row.spread[0], unit)} to {fmt(row.spread[1], unit)})"
            p99 = fmt(row.p99, row.spec.p99_unit or unit) if row.spec.p99 else ""
            target = fmt_target(row.spec.target, unit)
            lines.append(f"| {cell(row.spec.label)} | {value} | {p99} | {target} | {cell(row.result)} |")
        whys = [r for r in s.rows if r.why]
        if whys:
            lines += ["", "Why:", ""]
            other = max(r.other_cores for r in s.runs)
            load = (
                f" Other processes on the machine used {other:.2f} cores on average during this bench."
                if other > DISTURBED_CORES
                else ""
            )
            for row in whys:
                name = row.spec.label.split(" (p")[0]
                head = name if row.spec.target is None else f"{name} ({row.result.replace('**', '')})"
                lines.append(f"- {head}: {row.why}{load}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run every bench at its --quick sizes")
    parser.add_argument(
        "--quick-bench", action="append", choices=BENCHES, default=[], help="run only this bench quick"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per bench; medians when > 1")
    parser.add_argument("--only", action="append", choices=BENCHES, help="run only these benches")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per bench run")
    parser.add_argument("--raw-dir", type=Path, help="keep every bench's stdout here")
    parser.add_argument("--from-raw", type=Path, help="render from a --raw-dir without running benches")
    parser.add_argument("--flows-dir", type=Path, help="passed to every bench")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each bench, wait up to S seconds for other processes to leave the CPUs idle",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    benches = args.only or list(BENCHES)
    if args.from_raw:
        loaded = load_raw(args.from_raw)
        runs = {b: loaded[b] for b in BENCHES if b in loaded and b in benches}
        total_s = sum(r.wall_s for rs in runs.values() for r in rs)
    else:
        extra = ["--flows-dir", str(args.flows_dir)] if args.flows_dir else []
        runs = {b: [] for b in benches}
        for i in range(args.repeat):
            for bench in benches:
                if args.wait_quiet:
                    waited = wait_quiet(args.wait_quiet)
                    print(f"   waited {waited:.0f} s for a quiet machine", flush=True)
                run = run_bench(bench, args.quick or bench in args.quick_bench, args.timeout, extra)
                runs[bench].append(run)
                if args.raw_dir:
                    save_raw(args.raw_dir, run, i)
        total_s = time.perf_counter() - t0
    stamps = [r.started_at for rs in runs.values() for r in rs if r.started_at]
    if stamps:
        started = datetime.fromisoformat(min(stamps))
    sections = [aggregate(b, rs) for b, rs in runs.items()]
    judge(sections)
    text = render(sections, args, started, total_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out} ({total_s:.0f} s of benchmarks)")
    failed = any(r.returncode != 0 or r.result is None for rs in runs.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
