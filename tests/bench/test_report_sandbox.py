"""The benchmark report's sandbox section (issue 20: the cost per code node), rendered by
`python -m bench.report --from-raw` from a saved bench_sandbox output: every figure in its row."""

from __future__ import annotations

from pathlib import Path

from tests.bench.test_report_pg import render, save


def test_the_sandbox_section_shows_the_cost_per_code_node(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    result = {"bench": "sandbox", "quick": True, "calls": 50, "overhead_p50_ms": 10.16, "cold_start_ms": 2150.0,
              "in_process": {"p50_ms": 0.005, "p95_ms": 0.007, "p99_ms": 0.009},
              "sandbox": {"p50_ms": 10.17, "p95_ms": 30.0, "p99_ms": 34.5}}  # fmt: skip
    save(raw, "sandbox", result)
    text = render(raw, tmp_path, "sandbox")
    section = text.split("## Code nodes in the sandbox", 1)[1]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "10.2 ms" in rows["the sandbox's cost per code node (p50, sandbox minus in process)"]
    sandboxed = rows["code node in the sandbox process (50 calls, p50)"]
    assert "10.2 ms" in sandboxed and "34.5 ms" in sandboxed
    assert "2150.0 ms" in rows["the sandbox's cold start (a worker's first code node: its fork server)"]
    assert "0.005 ms" in rows["code node in the runner's process, RestrictedPython (50 calls, p50)"]
