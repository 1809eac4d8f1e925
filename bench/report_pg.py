"""The "PostgreSQL beside SQLite" section: the issue-14 measures with a column per store.

The SQLite column comes from the store, runner and API benches' own runs; the PostgreSQL column from
the same benches run with `--backend postgresql` (store-pg, runner-pg, api-pg), against a durable
throwaway server on the same machine. Targets (issue 14) apply to the PostgreSQL column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.report_aggregate import Section
from bench.report_markdown import fmt, fmt_target
from bench.report_runs import PG_SUFFIX
from bench.report_specs import Target
from bench.report_why import NumbersOrNan

CHAIN_STEPS = 200  # runtime steps per chain-effects-200 run (runs/s x 200 = steps/s)


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    sqlite_key: str | None
    pg_key: str
    target: Target | None = None
    scale: float = 1.0  # both columns' values are multiplied by it (runs/s -> steps/s)
    p99: bool = True  # show the PostgreSQL p99 (ms: one request / one claim / the latency itself)


ROWS = (
    Row("starts/s at concurrency 16, one API process (POST runs/start)", "/s", "starts_c16", "pg_starts_c16",
        Target(">=", 1_500.0)),
    Row("claims/s, 16 per claim, 1 claimer process", "/s", "claims_16_1", "pg_claims_16_1",
        Target(">=", 10_000.0)),
    Row("claims/s, 16 per claim, 2 claimer processes", "/s", "claims_16_2", "pg_claims_16_2",
        Target(">=", 10_000.0)),
    Row("claims/s, 16 per claim, 4 claimer processes", "/s", None, "pg_claims_16_4",
        Target(">=", 10_000.0)),
    Row("runner steps/s, chain-effects-200, 1 runner process", "steps/s", "chain-effects-200_1_rps",
        "pg_chain_1_rps", scale=CHAIN_STEPS, p99=False),
    Row("ledger replay, 1000 records (p50)", "ms", "replay", "pg_replay", Target("<=", 5.0)),
    Row("resume -> SSE `done` (p50)", "ms", "resume", "pg_resume", Target("<=", 50.0)),
    Row("RunState save, ~130 KB state, one commit each (PostgreSQL: lz4, the schema's)", "saves/s",
        "state_save", "pg_state_save_lz4", p99=False),
    Row("the same save with run_states on pglz (PostgreSQL's default)", "saves/s", None,
        "pg_state_save_pglz", p99=False),
)  # fmt: skip

# Why a PostgreSQL target was missed; format fields as in report_why (any value or fact key).
WHY: dict[str, str] = {
    "pg_starts_c16": (
        "serve ran at {pg_starts_c16_serve_cpu:.0f}% of a core, PostgreSQL's backends at "
        "{pg_starts_c16_pg_cpu:.0f}%, the client {pg_starts_c16_bench_cpu:.0f}%: the API process is bound "
        "by its own CPU. Its writes already run on several threads, one transaction each (not SQLite's "
        "one group-committing writer), but a start is several statements through psycopg instead of "
        "in-process SQLite calls, each paying the driver's Python work under one interpreter lock "
        "({pg_starts_c1:,.0f}/s at concurrency 1). More API processes (`serve --workers N`, or more "
        "hosts) add to it; one process does not reach the target."
    ),
    "pg_claims_16_1": (
        "one claimer pays a durable commit (fsync on) per claim of 16 and waits for it; its rate went "
        "from {pg_claims_first_tenth:,.0f}/s over its first tenth of claims to {pg_claims_last_tenth:,.0f}/s "
        "over its last. Claims are prepared on a direct connection and read the clock once per "
        "statement; with two or more claimers the server groups their WAL flushes and the target is met."
    ),
    "pg_claims_16_2": "as with 1 claimer: the scan over leased runs' index entries grows as the queue drains.",
    "pg_claims_16_4": "as with 1 claimer: the scan over leased runs' index entries grows as the queue drains.",
    "pg_replay": (
        "one indexed range read per page, but psycopg fetches its 1,000 bytea records in text format "
        "(hex: twice the bytes, decoded in Python); serve ran at {pg_replay_serve_cpu:.0f}% of a core and "
        "PostgreSQL at {pg_replay_pg_cpu:.0f}% meanwhile, p99 {pg_replay_p99:.1f} ms."
    ),
    "pg_resume": (
        "command commit -> runner poll -> tick (durable commits) -> the feed woken by NOTIFY -> SSE write, "
        "with the server on the same 2 cores (runner {pg_resume_runner_cpu:.0f}%, serve "
        "{pg_resume_serve_cpu:.0f}% of a core meanwhile)."
    ),
}

STATE_SAVE = (
    "The per-step RunState save, measured: a {pg_state_kb:.0f} KB state (chain-effects-200's final "
    "state plus a chat transcript) saved by a leaseholder, one commit each:{sqlite_saves} "
    "PostgreSQL {pg_state_save_lz4:,.0f}/s with lz4 ({pg_lz4_ms:.1f} ms a save; {pg_lz4_stored_kb:.0f} KB "
    "stored, {pg_lz4_wal_kb:.0f} KB of WAL per save) against {pg_state_save_pglz:,.0f}/s with pglz "
    "({pg_pglz_stored_kb:.0f} KB stored, {pg_pglz_wal_kb:.0f} KB of WAL): lz4 is {lz4_gain:.1f}x here, "
    "which is why migrations/postgresql/0001 sets it on run_states. A runner does not pay a durable "
    "commit per save: its unit of work stages a held run's saves with the step's ledger records and "
    "commits them once per tick (up to 50 steps)."
)
RUNNER_WAL = (
    " On chain-effects-200 the runner reached {pg_chain_steps:,.0f} steps/s on PostgreSQL{beside}, writing {pg_chain_wal_kb:,.0f} KB of WAL per run "
    "({pg_chain_wal_per_step:.1f} KB per step: every staged save of the tick is still written, not only "
    "its last)."
)


def row_values(row: Row, values: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    def scaled(key: str | None) -> float | None:
        value = values.get(key) if key else None
        return None if value is None else value * row.scale

    p99 = values.get(f"{row.pg_key}_p99") if row.p99 else None
    return scaled(row.sqlite_key), scaled(row.pg_key), p99


def result(target: Target | None, value: float | None) -> str:
    if target is None:
        return ""
    if value is None:
        return "not measured"
    return "met" if target.met(value) else f"**missed by {target.miss_pct(value):.0f}%**"


def unavailable(sections: list[Section]) -> str | None:
    """Why the PostgreSQL benches did not run here (their JSON line says), or None."""
    for s in sections:
        for run in s.runs:
            if s.bench.endswith(PG_SUFFIX) and run.result and run.result.get("available") is False:
                return str(run.result.get("reason"))
    return None


def server_line(sections: list[Section]) -> str:
    for s in sections:
        for run in s.runs:
            info = (run.result or {}).get("postgres")
            if s.bench.endswith(PG_SUFFIX) and info:
                settings = info.get("settings", {})
                whose = "a throwaway server the bench started" if info.get("own_server") else "a given server"
                shown = ", ".join(f"`{k}={v}`" for k, v in settings.items() if k != "server_version")
                return (
                    f"PostgreSQL {settings.get('server_version', '?')}, {whose}, on the same machine over "
                    f"loopback: {shown}. Every acknowledged write is durable, as a deployment's would be "
                    "(the test suite's server runs with fsync off; this one does not)."
                )
    return ""


def render_pg(sections: list[Section], from_sqlite: dict[str, Any]) -> list[str]:
    """The section's lines; [] when no PostgreSQL bench was part of this report."""
    pg_sections = [s for s in sections if s.bench.endswith(PG_SUFFIX)]
    if not pg_sections:
        return []
    values: dict[str, Any] = dict(from_sqlite)
    for s in pg_sections:
        values.update(s.values)
    chain = values.get("pg_chain_1_rps")
    lz4, pglz = values.get("pg_state_save_lz4"), values.get("pg_state_save_pglz")
    values["pg_chain_steps"] = chain * CHAIN_STEPS if chain is not None else None
    values["lz4_gain"] = lz4 / pglz if lz4 and pglz else None
    sqlite_chain = values.get("chain-effects-200_1_rps")
    sqlite_saves = values.get("state_save")
    values["sqlite_saves"] = f" SQLite {sqlite_saves:,.0f}/s;" if sqlite_saves is not None else ""
    values["beside"] = f" ({sqlite_chain * CHAIN_STEPS:,.0f} on SQLite)" if sqlite_chain is not None else ""
    wal = values.get("pg_chain_wal_kb")
    values["pg_chain_wal_per_step"] = wal / CHAIN_STEPS if wal is not None else None
    lines = [
        "## PostgreSQL beside SQLite",
        "",
        "`bench/bench_store.py`, `bench_runner.py` and `bench_api.py` again with `--backend postgresql`; "
        "targets from issue 14 (2 cores, the server on the same machine), on the PostgreSQL column. The "
        "PostgreSQL runs are smaller where PostgreSQL is slower (claims drain 5,000 due runs instead of "
        "20,000, 12 chain-effects-200 runs instead of 100, 10,000 starts at c16: bench/README.md).",
        "",
    ]
    missing = unavailable(sections)
    if missing:
        lines += [f"**No PostgreSQL column on this machine:** {missing}.", ""]
    elif line := server_line(sections):
        lines += [line, ""]
    lines += [
        "| measure | SQLite | PostgreSQL | PostgreSQL p99 | target (PostgreSQL) | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    known = NumbersOrNan({k: v for k, v in values.items() if v is not None})  # a number missing: nan
    whys: list[str] = []
    for row in ROWS:
        sqlite, pg, p99 = row_values(row, values)
        verdict = result(row.target, pg)
        target = fmt_target(row.target, row.unit)
        pg_cell = fmt(pg, row.unit) if not missing else "n/a (not run)"
        p99_cell = fmt(p99, "ms") if p99 is not None else ""
        lines.append(
            f"| {row.label} | {fmt(sqlite, row.unit) if row.sqlite_key else '-'} | {pg_cell} | {p99_cell} "
            f"| {target} | {verdict} |"
        )
        if verdict.startswith("**missed") and row.pg_key in WHY:
            whys.append(f"- {row.label.split(' (')[0]}: {WHY[row.pg_key].format_map(known)}")
    if whys:
        lines += ["", "Why:", "", *whys]
    if not missing and lz4 is not None:
        text = STATE_SAVE.format_map(known)
        if values.get("pg_chain_steps") is not None and wal is not None:
            text += RUNNER_WAL.format_map(known)
        lines += ["", text]
    lines.append("")
    return lines
