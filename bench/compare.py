"""Two bench reports side by side: every figure both have, its change, and which got worse by more
than a threshold (10% by default).

    python -m bench.compare docs/benchmarks-baseline.md docs/benchmarks.md [--threshold 0.10] [--check]

A report is what `python -m bench.report` wrote (any version of it): the figures are the `value`
and `p99` cells of each section's `| measure | value ... |` table, matched by section and measure.
Rates (`/s`) and ratios (`x`) are better higher; times (`ms`, `s`) and sizes (`MB`) better lower.
With --check the exit status is 1 when any value (median) is worse than the threshold; p99 cells are
listed but not checked: on a shared 2-core machine one run's tail moves by more than that run to run.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

_NUMBER = re.compile(r"^(-?[\d,]*\.?\d+)\s*(.*)$")
_SPREAD = re.compile(r"\s*\(.* to .*\)$")  # a repeated run's range after its median


@dataclass(frozen=True)
class Figure:
    section: str
    measure: str
    column: str  # "value" or "p99"
    value: float
    unit: str

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s") or self.unit == "x"


@dataclass(frozen=True)
class Change:
    before: Figure
    after: Figure

    @property
    def ratio(self) -> float:
        """How much worse (> 0) or better (< 0) `after` is, as a fraction of `before`."""
        if self.before.value == 0:
            return 0.0
        delta = (self.after.value - self.before.value) / abs(self.before.value)
        return -delta if self.before.higher_is_better else delta


def parse_number(text: str) -> tuple[float, str] | None:
    match = _NUMBER.match(_SPREAD.sub("", text.strip()))
    if match is None:
        return None
    return float(match.group(1).replace(",", "")), match.group(2).strip()


def figures(markdown: str) -> dict[tuple[str, str, str], Figure]:
    """Every value and p99 cell of the report's measure tables, by (section, measure, column)."""
    found: dict[tuple[str, str, str], Figure] = {}
    section = ""
    columns: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            section, columns = line[3:].strip(), []
            continue
        if not line.startswith("|"):
            columns = []
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0] == "measure":
            columns = cells
            continue
        if not columns or set("".join(cells)) <= set("-:"):
            continue
        measure = cells[0].replace("\\|", "|")
        for name in ("value (median)", "p99"):
            if name not in columns or columns.index(name) >= len(cells):
                continue
            parsed = parse_number(cells[columns.index(name)])
            if parsed is not None:
                column = "value" if name.startswith("value") else "p99"
                found[(section, measure, column)] = Figure(section, measure, column, *parsed)
    return found


def compare(before: str, after: str) -> list[Change]:
    old, new = figures(before), figures(after)
    return [Change(old[key], new[key]) for key in old if key in new and old[key].unit == new[key].unit]


def number(figure: Figure) -> str:
    value = figure.value
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {figure.unit}".strip()


def render(changes: list[Change], threshold: float, *, before: str, after: str) -> str:
    worse = [c for c in changes if c.before.column == "value" and c.ratio > threshold]
    lines = [
        f"{len(changes)} figures in both reports ({before} -> {after}); values (medians) worse by more "
        f"than {threshold:.0%}: {len(worse)}.",
        "",
        "| section | measure | | before | after | change |",
        "|---|---|---|---:|---:|---|",
    ]
    for c in changes:
        sign = "worse" if c.ratio > 0 else "better"
        flag = " **(over the threshold)**" if c.before.column == "value" and c.ratio > threshold else ""
        change = "same" if abs(c.ratio) < 0.005 else f"{abs(c.ratio):.0%} {sign}{flag}"
        measure = c.before.measure.replace("|", "\\|")
        lines.append(
            f"| {c.before.section} | {measure} | {c.before.column} "
            f"| {number(c.before)} | {number(c.after)} | {change} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--threshold", type=float, default=0.10, help="fraction (0.10 = 10%%)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a value is over the threshold")
    args = parser.parse_args(argv)
    missing = [str(p) for p in (args.before, args.after) if not p.is_file()]
    if missing:
        print(f"no such report: {', '.join(missing)}", file=sys.stderr)
        return 2
    changes = compare(args.before.read_text(), args.after.read_text())
    if not changes:
        print("no figure is in both reports", file=sys.stderr)
        return 2
    print(render(changes, args.threshold, before=str(args.before), after=str(args.after)), end="")
    worse = [c for c in changes if c.before.column == "value" and c.ratio > args.threshold]
    return 1 if args.check and worse else 0


if __name__ == "__main__":
    sys.exit(main())
