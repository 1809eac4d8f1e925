"""The serve and runner processes the bench starts, and /proc meters of their RSS and CPU."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.api import common
from bench.api.common import HOST, REPO, RUNNER_POLL_S, BenchFailure
from bench.api.http_client import free_port, one_request, run_async
from bench.pg_server import store_args


def raise_fd_limit() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return math.nan


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, of its children that ended (cutime + cstime: it waited for them) and
    of those still running: a PostgreSQL server's postmaster and its backends."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        own = sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
        return math.nan
    return own + sum(cpu_s(child) for child in children(pid) if not math.isnan(cpu_s(child)))


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


class Sampler:
    """Samples VmRSS of some pids every 50 ms in a thread; `peak()` since the last `reset()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            value = rss_mb(pid)
            if not math.isnan(value):
                self._peak[name] = max(self._peak.get(name, 0.0), value)

    def start(self) -> None:
        self._thread.start()

    def reset(self) -> None:
        self._peak = {}
        self.sample()

    def peak(self) -> dict[str, float]:
        self.sample()
        return dict(self._peak)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class CpuMeter:
    """CPU seconds used by the server, the runner and this bench (its client processes too) in a span."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.perf_counter()
        self.before = {name: cpu_s(pid) for name, pid in pids.items()}
        self.self0 = self._self()
        # On PostgreSQL the server's backends too: where a start's time goes when serve is not busy.
        self.server_pid = common.PG_SERVER_PID
        self.server0 = tree_cpu_s(self.server_pid) if self.server_pid else math.nan

    @staticmethod
    def _self() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def done(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        out = {
            f"{name}_cpu_pct": (cpu_s(pid) - self.before[name]) / wall * 100
            for name, pid in self.pids.items()
        }
        out["bench_cpu_pct"] = (self._self() - self.self0) / wall * 100
        if self.server_pid:
            out["postgres_cpu_pct"] = (tree_cpu_s(self.server_pid) - self.server0) / wall * 100
        return out


def base_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ABSTRACTGATEWAY_AUTH_TOKEN": common.TOKEN}
    env.pop("ABSTRACTGATEWAY_AUTH_TOKENS", None)
    # The fan-out phase is thousands of streams from one address with one token, by design: lift the
    # per-client and per-token stream caps that exist to stop exactly that from a real client.
    env["ABSTRACTGATEWAY_MAX_STREAMS_PER_CLIENT"] = "10000"
    env["ABSTRACTGATEWAY_MAX_STREAMS_PER_TOKEN"] = "10000"
    for name in ("ABSTRACTGATEWAY_PROVIDER", "ABSTRACTGATEWAY_MODEL", "ABSTRACTGATEWAY_BASE_URL"):
        env.pop(name, None)
    return env


class Proc:
    """A child process (serve or runner) logging to a file."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise BenchFailure(f"{self.name} exited {self.proc.returncode}: {tail}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()


def store_of(case_dir: Path, url: str | None) -> Path | str:
    """A phase's store: the PostgreSQL database `url`, else a SQLite file in the phase's directory."""
    return url if url else case_dir / "gateway.sqlite3"


def start_serve(
    case_dir: Path, flows_dir: Path, *, with_runner: bool, url: str | None = None
) -> tuple[Proc, int]:
    """serve on the phase's store. On PostgreSQL the bench has put the sample bundles into the database
    (bench_api: as a shared store holds them for every host), so serve gets no --flows-dir."""
    port = free_port()
    args = [sys.executable, "-m", "abstractgateway", "serve", "--host", HOST, "--port", str(port)]
    args += [*store_args(store_of(case_dir, url), case_dir), "--migrate"]
    if url is None:
        args += ["--flows-dir", str(flows_dir)]
    if not with_runner:
        args.append("--no-runner")
    serve = Proc("serve", args, case_dir / "serve.log", base_env())
    deadline = time.monotonic() + 60
    while True:
        serve.check_alive()
        try:
            status, body = run_async(one_request(port, "GET", "/api/health"))
            if status == 200:
                return serve, port
            if status == 500:  # a bug, not a server still starting (503): no use waiting
                raise BenchFailure(f"serve answered /api/health with {status}: {body[:500]!r}")
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchFailure("serve did not answer /api/health within 60 s")
        time.sleep(0.05)


def start_runner(case_dir: Path, url: str | None = None) -> Proc:
    args = [sys.executable, "-m", "abstractgateway", "runner", *store_args(store_of(case_dir, url), case_dir)]
    args += ["--runner-id", "bench-api-runner", "--poll-s", str(RUNNER_POLL_S)]
    env = {**base_env(), "ABSTRACTGATEWAY_LOG_LEVEL": "info"}
    runner = Proc("runner", args, case_dir / "runner.log", env)
    deadline = time.monotonic() + 60
    while "runner_started" not in runner.log_path.read_text(errors="replace"):
        runner.check_alive()
        if time.monotonic() > deadline:
            raise BenchFailure("the runner did not log runner_started within 60 s")
        time.sleep(0.05)
    return runner
