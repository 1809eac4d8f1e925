"""The table printed at the end of the API bench: each measure, its target and MET/MISSED."""

from __future__ import annotations

from typing import Any

from bench.api.common import (
    FANOUT_P99_TARGET_MS,
    IDLE_RSS_TARGET_MB,
    PG_REPLAY_P50_TARGET_MS,
    PG_RESUME_P50_TARGET_MS,
    PG_STARTS_TARGET_PER_S,
    REPLAY_P50_TARGET_MS,
    RESUME_P50_TARGET_MS,
    STARTS_TARGET_PER_S,
    verdict,
)


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    # PostgreSQL's targets (issue 14) where the bench ran on it.
    if results.get("backend") == "postgresql":
        starts_target, replay_target, resume_target = (
            PG_STARTS_TARGET_PER_S, PG_REPLAY_P50_TARGET_MS, PG_RESUME_P50_TARGET_MS
        )  # fmt: skip
    else:
        starts_target, replay_target, resume_target = (
            STARTS_TARGET_PER_S, REPLAY_P50_TARGET_MS, RESUME_P50_TARGET_MS
        )  # fmt: skip
    for c in results["starts"]:
        target = c["concurrency"] == 16
        met = verdict(c["req_per_s"] >= starts_target) if target else ""
        rows.append(
            (
                f"runs/start c{c['concurrency']} (no runner)",
                f"{c['req_per_s']:,.0f} req/s",
                f">= {starts_target:,.0f}/s" if target else "",
                met,
            )
        )
    if "health" in results:
        rows.append(
            ("GET /api/health c16 (reference)", f"{results['health']['req_per_s']:,.0f} req/s", "", "")
        )
    for c in results["commands"]:
        rows.append((f"commands c{c['concurrency']} (pause)", f"{c['req_per_s']:,.0f} req/s", "", ""))
    if "replay" in results:
        r = results["replay"]
        rows.append(("ledger replay 1000 p50", f"{r['p50_ms']:.2f} ms", f"<= {replay_target:g} ms",
                     verdict(r["p50_ms"] <= replay_target)))  # fmt: skip
        rows.append(("ledger replay 1000 p99", f"{r['p99_ms']:.2f} ms", "", ""))
    if "resume" in results:
        r = results["resume"]
        rows.append(("resume -> done p50", f"{r['p50_ms']:.1f} ms", f"<= {resume_target:g} ms",
                     verdict(r["p50_ms"] <= resume_target)))  # fmt: skip
        rows.append(("resume -> done p99", f"{r['p99_ms']:.1f} ms", "", ""))
    for c in results["fanout"]:
        target = c["clients"] >= 5_000
        rows.append((f"SSE {c['clients']} clients p50", f"{c['p50_ms']:.1f} ms", "", ""))
        rows.append(
            (
                f"SSE {c['clients']} clients p99",
                f"{c['p99_ms']:.1f} ms",
                f"<= {FANOUT_P99_TARGET_MS:g} ms" if target else "",
                verdict(c["p99_ms"] <= FANOUT_P99_TARGET_MS) if target else "",
            )
        )
    rss = results["rss_mb"]
    if "serve_idle" in rss:
        rows.append(("serve idle RSS", f"{rss['serve_idle']:.1f} MB", f"<= {IDLE_RSS_TARGET_MB:g} MB",
                     verdict(rss["serve_idle"] <= IDLE_RSS_TARGET_MB)))  # fmt: skip
    for key, label in (
        ("serve_peak_writes", "serve peak RSS, writes"),
        ("serve_peak_reads", "serve peak RSS, SSE"),
        ("runner_idle", "runner idle RSS"),
        ("runner_after", "runner RSS after"),
    ):
        if key in rss:
            rows.append((label, f"{rss[key]:.1f} MB", "", ""))
    head = f"{'measure':<32} {'value':>14} {'target':>12} {'':>6}"
    lines = [head, "-" * len(head)]
    lines += [f"{a:<32} {b:>14} {c:>12} {d:>6}" for a, b, c, d in rows]
    return "\n".join(lines)
