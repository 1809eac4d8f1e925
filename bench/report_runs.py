"""Running each bench as its own subprocess, timing it, and saving or loading its output."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.report_specs import Json

REPO = Path(__file__).resolve().parent.parent

DISTURBED_CORES = 0.15  # other processes' average load (cores) above which a bench is flagged


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


# The report's name of a bench run -> the bench module and its arguments. A `-pg` run is the same
# bench on PostgreSQL (`--backend postgresql`): the cases of the report's PostgreSQL column.
PG_SUFFIX = "-pg"


def bench_command(bench: str) -> list[str]:
    if bench.endswith(PG_SUFFIX):
        return ["-m", f"bench.bench_{bench.removesuffix(PG_SUFFIX)}", "--backend", "postgresql"]
    return ["-m", f"bench.bench_{bench}"]


def run_name(js: Json) -> str:
    """The report's name of the run that printed this JSON line (its bench, `-pg` on PostgreSQL)."""
    return str(js.get("bench")) + (PG_SUFFIX if js.get("backend") == "postgresql" else "")


def last_json(stdout: str, bench: str) -> Json | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                js = json.loads(line)
            except json.JSONDecodeError:
                continue
            if run_name(js) == bench:
                return js
    return None


def run_bench(bench: str, quick: bool, timeout_s: float, extra: list[str]) -> BenchRun:
    command = [sys.executable, *bench_command(bench), *(["--quick"] if quick else []), *extra]
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


def git_commit() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"
