"""Benchmark report: runs the store, runner and API benchmarks and writes docs/benchmarks.md.

Run from the repo root: `python -m bench.report [--quick] [--repeat N] [--out docs/benchmarks.md]`.
Each benchmark runs as its own subprocess (a fresh interpreter, nothing warm from the one before);
the report parses the final JSON line each one prints, takes the median over `--repeat` runs, and
writes one markdown table per layer: measure | value (median) | p99 | target | result, with a short
"why" under every missed target (from WHY below, filled in with this run's numbers).

`--quick-bench api` runs only that bench at its `--quick` sizes (for when a full run is too long);
the document says which benches ran quick. `--raw-dir DIR` keeps every bench's stdout;
`--from-raw DIR` re-renders the document from such a directory without running anything.
`--db-url URL` runs the PostgreSQL benches against that server instead of a throwaway one of their own.

While each bench runs, the report also measures the CPU time the rest of the machine used
(/proc/stat busy time minus the bench's own process tree): on a shared 2-core machine that says
whether a number may have been disturbed by other work.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.compare import compare
from bench.compare import render as render_changes
from bench.report_aggregate import aggregate, judge
from bench.report_markdown import render
from bench.report_runs import PG_SUFFIX, REPO, load_raw, run_bench, save_raw, wait_quiet

# The SQLite benches, then the same store, runner and API benches on PostgreSQL (the report's
# "PostgreSQL beside SQLite" section; without PostgreSQL on the machine they say why and exit 0).
BENCHES = ("store", "runner", "api", "ops", "sandbox", "store-pg", "runner-pg", "api-pg")
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"


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
        "--db-url", help="PostgreSQL benches: a server to use instead of starting a throwaway one"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="an earlier report (e.g. of the tree before a change): add a section comparing every figure",
    )
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
    if args.baseline is not None and not args.baseline.is_file():
        parser.error(f"--baseline: no such report: {args.baseline}")  # before, not after, the benches
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
                pg_extra = ["--db-url", args.db_url] if args.db_url and bench.endswith(PG_SUFFIX) else []
                quick = args.quick or bench in args.quick_bench
                run = run_bench(bench, quick, args.timeout, extra + pg_extra)
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
    if args.baseline:
        text += baseline_section(args.baseline, text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out} ({total_s:.0f} s of benchmarks)")
    failed = any(r.returncode != 0 or r.result is None for rs in runs.values() for r in rs)
    return 1 if failed else 0


def baseline_section(path: Path, text: str) -> str:
    """Every figure against the baseline report's (bench/compare.py), in the reports' order."""
    baseline = path.read_text()
    changes = compare(baseline, text)
    first = baseline.split("| Git commit | ", 1)
    commit = first[1].split(" ", 1)[0] if len(first) == 2 else "?"
    return (
        f"\n## Against the baseline\n\nEvery figure of this report beside [{path.name}]({path.name}) "
        f"(commit {commit}), worse or better as a fraction of the baseline (`python -m bench.compare`). "
        "Medians are checked against 10%; a single run's p99 is listed for reference only.\n\n"
        + render_changes(changes, 0.10, before=path.name, after="this report")
    )


if __name__ == "__main__":
    sys.exit(main())
