"""bench/compare.py: figures matched by section and measure; rates better higher, times and sizes
better lower; --check fails on a median worse than the threshold, not on a p99."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import compare, figures, main

BEFORE = """# Benchmarks
## Machine and run
| | |
|---|---|
| Git commit | abc123 |

## API

| measure | value (median) | p99 | target | result |
|---|---:|---:|---|---|
| POST runs/start, concurrency 16 (p99 = one request) | 1,439 req/s | 19.8 ms | ≥ 3,500 req/s | **missed by 59%** |
| ledger replay, 1000 records (p50) | 2.73 ms | 3.89 ms | ≤ 3 ms | met |
| serve idle RSS | 41.1 MB |  | ≤ 100 MB | met |
| a \\| b ratio | 2.10x |  |  |  |
| only here | 5 ms |  |  |  |
"""


def after(start: str, replay: str, rss: str, p99: str = "19.8 ms") -> str:
    return (
        BEFORE.replace("1,439 req/s | 19.8 ms", f"{start} | {p99}")
        .replace("2.73 ms | 3.89 ms", f"{replay} | 3.89 ms")
        .replace("41.1 MB", rss)
        .replace("| only here | 5 ms |  |  |  |\n", "")
    )


def test_figures_parse_values_units_spreads_and_escaped_pipes() -> None:
    found = figures(BEFORE.replace("2.73 ms |", "2.73 ms (2.50 ms to 2.90 ms) |"))
    assert found[("API", "POST runs/start, concurrency 16 (p99 = one request)", "value")].value == 1439
    assert found[("API", "POST runs/start, concurrency 16 (p99 = one request)", "p99")].unit == "ms"
    assert found[("API", "ledger replay, 1000 records (p50)", "value")].value == 2.73
    assert found[("API", "a | b ratio", "value")].unit == "x"
    assert not any(key[0] == "Machine and run" for key in found)


def test_direction_and_threshold(tmp_path: Path) -> None:
    changes = {
        (c.before.measure, c.before.column): c.ratio
        for c in compare(BEFORE, after("1,295 req/s", "2.95 ms", "46.0 MB"))
    }
    assert (
        round(changes[("POST runs/start, concurrency 16 (p99 = one request)", "value")], 2) == 0.10
    )  # fewer/s: worse
    assert changes[("ledger replay, 1000 records (p50)", "value")] > 0.08  # slower: worse
    assert changes[("serve idle RSS", "value")] > 0.11  # bigger: worse
    assert ("only here", "value") not in changes

    base, new = tmp_path / "before.md", tmp_path / "after.md"
    base.write_text(BEFORE)
    new.write_text(after("1,600 req/s", "2.60 ms", "40.0 MB", p99="90.0 ms"))
    assert main([str(base), str(new), "--check"]) == 0  # all medians better; a p99 is not checked
    new.write_text(after("1,600 req/s", "2.60 ms", "46.0 MB"))
    assert main([str(base), str(new), "--check"]) == 1  # idle RSS 12% worse
    assert main([str(base), str(new), "--check", "--threshold", "0.15"]) == 0


def test_a_missing_report_is_a_clear_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "before.md"
    base.write_text(BEFORE)
    assert main([str(base), str(tmp_path / "nope.md")]) == 2
    assert "no such report" in capsys.readouterr().err
