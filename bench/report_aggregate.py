"""Medians over repeated bench runs, and each row's result against its target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.report_runs import BenchRun
from bench.report_specs import SPECS, Spec, facts
from bench.report_why import NumbersOrNan, explain


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
                row.result = spec.note.format_map(NumbersOrNan(values)) if "{" in spec.note else spec.note
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
