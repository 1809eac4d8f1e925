"""API benchmark: starts and commands per second, ledger replay, resume -> done, SSE fan-out, RSS.

Run from the repo root: `python -m bench.bench_api [--quick] [--flows-dir DIR]` (or
`python bench/bench_api.py`). Everything lives in a temp dir and talks to real `abstractgateway serve`
processes over loopback. Prints one line per measurement, a table with each target and MET/MISSED,
then one JSON line `{"bench": "api", ...}` with every number. A missed target never changes the exit
status; a failed correctness check (or any 5xx) exits 1.

Method:
- The client is a small HTTP/1.1 client on asyncio streams (uvloop when installed), one keep-alive
  connection per concurrent worker, so the client costs far less per request than httpx would. The
  bench runs on the same machine as the server: the CPU seconds of the server, of the runner and of the
  bench's own processes are reported per phase, to tell which side is the bottleneck.
- Phase A (`serve --no-runner`, so every start stays queued and no runner competes for the CPU):
  POST /runs/start (bench-echo, input {"message": "x"}) at concurrency 1 and 16, then POST /commands
  (`pause`, a fresh command_id each, on the runs just started) at concurrency 1 and 16. Each case has
  a request count and a time cap; req/s = 2xx responses / wall seconds.
- Phase B (`serve --no-runner` on a fresh db, plus one `abstractgateway runner --poll-s 0.005`
  process; `--serve-runner` uses serve's own child runner with its default poll instead):
  * replay: GET /runs/{id}/ledger?after=0&limit=1000 on a completed bench-loop n=600 run (1202
    records), one request at a time; latency = request written -> whole body read.
  * resume -> done: bench-ask runs waiting on ask_user; for each, an SSE client follows
    /ledger/stream until it has the backlog, then POSTs {"type": "resume", "payload": {"payload":
    {"response": "yes"}}}; latency = just before the POST is written -> `event: done` read.
  * fan-out: a bench-tick run (n ticks, `delay` s apart) is started and paused at once; N SSE clients
    (split over several client processes) subscribe with after=0; then the run is resumed. Delivery
    latency of a record to a client = the client's wall-clock receive time (when the bytes were read)
    minus the record's own timestamp (`ended_at`, else `started_at`, both written by the runner just
    before it commits the record). Only records stamped after that client subscribed count (the few
    written before the pause are backlog, not delivery).
- RSS: VmRSS from /proc/<pid>/status of the serve process (idle = after start-up, before any request;
  peak = the highest sample, every 50 ms, during a phase) and, separately, of the runner.

Checked (a failure exits 1): no 5xx and no other non-2xx from any timed request; every 2xx start's
run_id is a row in the db; every 2xx command is accepted (not duplicate) and its command_id is a row;
every replay page has 1000 records and next_after 1000; every resume stream's cursors are dense and
end in `done` with status completed; every fan-out client received every record exactly once, in
order (cursors 1..L dense), then `done` with cursor L and status completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing as mp
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # `python bench/bench_api.py`: make the repo root importable like `python -m` does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-api-token-" + uuid.uuid4().hex
HOST = "127.0.0.1"
RUNNER_POLL_S = 0.005
API = "/api/gateway"

# Targets (2 cores), printed as MET/MISSED.
STARTS_TARGET_PER_S = 3_500.0
REPLAY_P50_TARGET_MS = 3.0
RESUME_P50_TARGET_MS = 25.0
FANOUT_P99_TARGET_MS = 500.0
IDLE_RSS_TARGET_MB = 100.0


@dataclass(frozen=True)
class Sizes:
    starts: dict[int, int]  # concurrency -> requests
    commands: dict[int, int]
    cap_s: float  # per load case
    replays: int
    resumes: int
    fanout_clients: tuple[int, ...]
    tick_n: int
    tick_delay_s: float
    client_procs: int


FULL = Sizes({1: 2_000, 16: 20_000}, {1: 2_000, 16: 20_000}, 30.0, 500, 200, (1_000, 5_000), 20, 0.25, 2)
QUICK = Sizes({1: 300, 16: 500}, {1: 300, 16: 500}, 10.0, 100, 30, (200,), 8, 0.1, 1)


# --- helpers ----------------------------------------------------------------------------------------
def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency that really happened)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def report(line: str) -> None:
    print(line, flush=True)


class BenchFailure(Exception):
    """A correctness check failed: the numbers of this phase mean nothing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def raise_fd_limit() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(coro: Awaitable[Any]) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def iso_ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# --- /proc ------------------------------------------------------------------------------------------
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
        return out


# --- processes ----------------------------------------------------------------------------------------
def base_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ABSTRACTGATEWAY_AUTH_TOKEN": TOKEN}
    env.pop("ABSTRACTGATEWAY_AUTH_TOKENS", None)
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


def start_serve(case_dir: Path, flows_dir: Path, *, with_runner: bool) -> tuple[Proc, int]:
    port = free_port()
    args = [sys.executable, "-m", "gateway_cli", "serve", "--host", HOST, "--port", str(port)]
    args += ["--db", str(case_dir / "gateway.sqlite3"), "--migrate", "--flows-dir", str(flows_dir)]
    if not with_runner:
        args.append("--no-runner")
    serve = Proc("serve", args, case_dir / "serve.log", base_env())
    deadline = time.monotonic() + 60
    while True:
        serve.check_alive()
        try:
            status, _ = run_async(one_request(port, "GET", "/api/health"))
            if status == 200:
                return serve, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchFailure("serve did not answer /api/health within 60 s")
        time.sleep(0.05)


def start_runner(case_dir: Path) -> Proc:
    args = [sys.executable, "-m", "gateway_cli", "runner", "--db", str(case_dir / "gateway.sqlite3")]
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


# --- a small HTTP/1.1 client ----------------------------------------------------------------------------
class Conn:
    """One keep-alive HTTP/1.1 connection: request() -> (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader = reader
        self.writer = writer
        self.head = f"Host: {HOST}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n".encode()

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 22)
        return cls(reader, writer, port)

    def send(self, method: str, path: str, body: bytes | None = None, extra: bytes = b"") -> None:
        head = b"%s %s HTTP/1.1\r\n%s%s" % (method.encode(), path.encode(), self.head, extra)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
        return status, headers

    async def read_body(self, headers: dict[bytes, bytes]) -> bytes:
        if b"content-length" in headers:
            return await self.reader.readexactly(int(headers[b"content-length"]))
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return b"".join(parts)
                parts.append(await self.reader.readexactly(size + 2))
                parts[-1] = parts[-1][:-2]
        return await self.reader.read()

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.send(method, path, body)
        status, headers = await self.read_head()
        return status, await self.read_body(headers)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def one_request(port: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    conn = await Conn.open(port)
    try:
        return await conn.request(method, path, None if body is None else json.dumps(body).encode())
    finally:
        await conn.close()


def api_json(port: int, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, raw = run_async(one_request(port, method, path, body))
    if status != expect:
        raise BenchFailure(f"{method} {path} -> {status} (wanted {expect}): {raw[:500]!r}")
    return json.loads(raw)


class SseParser:
    """Incremental parser of a chunked text/event-stream body into (event, id, data) tuples."""

    def __init__(self) -> None:
        self.raw = b""  # transfer-encoded bytes not yet de-chunked
        self.text = b""  # de-chunked bytes not yet split into events
        self.ended = False  # the zero-size last chunk arrived

    def feed(self, data: bytes) -> list[tuple[bytes, bytes, bytes]]:
        self.raw += data
        while not self.ended:
            nl = self.raw.find(b"\r\n")
            if nl < 0:
                break
            size = int(self.raw[:nl].split(b";")[0], 16)
            if size == 0:
                self.ended = True
                break
            end = nl + 2 + size + 2
            if len(self.raw) < end:
                break
            self.text += self.raw[nl + 2 : end - 2]
            self.raw = self.raw[end:]
        events = []
        while True:
            cut = self.text.find(b"\n\n")
            if cut < 0:
                break
            block, self.text = self.text[:cut], self.text[cut + 2 :]
            event = ident = data = b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    event = line[7:]
                elif line.startswith(b"id: "):
                    ident = line[4:]
                elif line.startswith(b"data: "):
                    data = line[6:]
            if event:
                events.append((event, ident, data))
        return events


async def open_stream(port: int, run_id: str, after: int = 0) -> tuple[Conn, SseParser]:
    conn = await Conn.open(port)
    conn.send("GET", f"{API}/runs/{run_id}/ledger/stream?after={after}")
    status, headers = await conn.read_head()
    if status != 200:
        body = await conn.read_body(headers)
        await conn.close()
        raise BenchFailure(f"stream of {run_id} -> {status}: {body[:300]!r}")
    return conn, SseParser()


# --- load phases (starts, commands) ---------------------------------------------------------------------
async def load(
    port: int, count: int, concurrency: int, cap_s: float, make: Callable[[int], tuple[str, str, bytes]]
) -> dict[str, Any]:
    """`count` requests (make(i) -> method, path, body) from `concurrency` keep-alive connections."""
    conns = [await Conn.open(port) for _ in range(concurrency)]
    for k, conn in enumerate(conns):  # warm-up (not timed): one request per connection
        await conn.request(*make(-1 - k))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies: list[bytes] = []
    next_i = 0
    started = time.perf_counter()
    deadline = started + cap_s

    async def worker(conn: Conn) -> None:
        nonlocal next_i
        while next_i < count and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            t = time.perf_counter()
            status, body = await conn.request(*make(i))
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                bodies.append(body)
            elif len(bodies) < 5:
                report(f"  non-2xx {status}: {body[:200]!r}")

    await asyncio.gather(*(worker(c) for c in conns))
    seconds = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "ok": ok,
        "seconds": seconds,
        "req_per_s": ok / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "capped": sum(statuses.values()) < count,
        "_bodies": bodies,
    }


def check_statuses(case: dict[str, Any], what: str) -> None:
    bad = {s: n for s, n in case["statuses"].items() if not 200 <= int(s) < 300}
    if bad:
        raise BenchFailure(f"{what}: non-2xx responses {bad}")


def db_ids(db_path: Path, sql: str) -> set[str]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute(sql)}
    finally:
        conn.close()


def phase_writes(tmp: Path, flows_dir: Path, sizes: Sizes, results: dict[str, Any]) -> None:
    case_dir = tmp / "writes"
    case_dir.mkdir()
    serve, port = start_serve(case_dir, flows_dir, with_runner=False)
    sampler = Sampler({"serve": serve.pid})
    sampler.start()
    try:
        time.sleep(1.0)
        results["rss_mb"]["serve_idle_no_runner"] = rss_mb(serve.pid)
        report(f"serve --no-runner idle RSS: {results['rss_mb']['serve_idle_no_runner']:.1f} MB")
        # Reference, no target: the HTTP stack's ceiling here (no auth, a few db reads) at concurrency 16.
        cpu = CpuMeter({"serve": serve.pid})
        case = run_async(
            load(port, sizes.starts[16], 16, sizes.cap_s, lambda i: ("GET", "/api/health", None))
        )
        case.update(cpu.done())
        case.pop("_bodies")
        check_statuses(case, "health c16")
        results["health"] = case
        report(load_line("GET /api/health (reference)", case).replace("; checks OK", ""))
        start_body = json.dumps({"bundle_id": "bench-echo", "input_data": {"message": "x"}}).encode()
        run_ids: list[str] = []
        for concurrency, count in sizes.starts.items():
            sampler.reset()
            cpu = CpuMeter({"serve": serve.pid})
            case = run_async(
                load(
                    port, count, concurrency, sizes.cap_s, lambda i: ("POST", f"{API}/runs/start", start_body)
                )
            )
            case.update(cpu.done())
            case["serve_peak_rss_mb"] = sampler.peak().get("serve", math.nan)
            check_statuses(case, f"starts c{concurrency}")
            ids = [json.loads(b)["run_id"] for b in case.pop("_bodies")]
            missing = set(ids) - db_ids(case_dir / "gateway.sqlite3", "SELECT run_id FROM runs")
            if missing or len(set(ids)) != len(ids):
                raise BenchFailure(f"starts c{concurrency}: {len(missing)} started runs not in the db")
            run_ids += ids
            case["checked"] = f"{len(ids)} run_ids in the db"
            results["starts"].append(case)
            report(load_line("runs/start", case))

        for concurrency, count in sizes.commands.items():
            prefix = f"bench-{concurrency}-{uuid.uuid4().hex[:8]}-"

            def make(i: int, prefix: str = prefix) -> tuple[str, str, bytes]:
                body = {"command_id": f"{prefix}{i}", "run_id": run_ids[i % len(run_ids)], "type": "pause"}
                return (
                    "POST",
                    f"{API}/commands",
                    json.dumps({**body, "payload": {"reason": "bench"}}).encode(),
                )

            sampler.reset()
            cpu = CpuMeter({"serve": serve.pid})
            case = run_async(load(port, count, concurrency, sizes.cap_s, make))
            case.update(cpu.done())
            case["serve_peak_rss_mb"] = sampler.peak().get("serve", math.nan)
            check_statuses(case, f"commands c{concurrency}")
            answers = [json.loads(b) for b in case.pop("_bodies")]
            if any(a.get("accepted") is not True or a.get("duplicate") is not False for a in answers):
                raise BenchFailure(f"commands c{concurrency}: a fresh command_id was not accepted")
            stored = db_ids(
                case_dir / "gateway.sqlite3",
                f"SELECT command_id FROM commands WHERE command_id LIKE '{prefix}%'",
            )
            # warm-up requests used ids prefix-1, prefix-2, ...: count only the timed ones
            timed = {f"{prefix}{i}" for i in range(case["requests"])}
            if not timed <= stored:
                raise BenchFailure(
                    f"commands c{concurrency}: {len(timed - stored)} accepted commands not in the db"
                )
            case["checked"] = f"{len(timed)} command_ids in the db"
            results["commands"].append(case)
            report(load_line("commands", case))
        results["rss_mb"]["serve_peak_writes"] = max(
            [c["serve_peak_rss_mb"] for c in results["starts"] + results["commands"]], default=math.nan
        )
    finally:
        sampler.stop()
        code = serve.stop()
        if code not in (0, -signal.SIGTERM):
            results["problems"].append(f"serve (writes) exited {code}")


def load_line(what: str, c: dict[str, Any]) -> str:
    capped = " (time cap hit)" if c["capped"] else ""
    return (
        f"{what} c{c['concurrency']}: {c['req_per_s']:,.0f} req/s ({c['ok']} in {c['seconds']:.2f} s{capped}; "
        f"p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms; CPU serve {c['serve_cpu_pct']:.0f}%, "
        f"bench {c['bench_cpu_pct']:.0f}%); checks OK"
    )


# --- phase B: replay, resume -> done, fan-out ------------------------------------------------------------
def wait_run(
    port: int, run_id: str, pred: Callable[[dict[str, Any]], bool], procs: list[Proc], cap_s: float
) -> dict:
    deadline = time.monotonic() + cap_s
    while True:
        view = api_json(port, "GET", f"{API}/runs/{run_id}")
        if pred(view):
            return view
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchFailure(f"run {run_id} not in the expected state after {cap_s:g} s: {view}")
        time.sleep(0.02)


def start_run(port: int, bundle_id: str, input_data: dict[str, Any]) -> str:
    return api_json(port, "POST", f"{API}/runs/start", {"bundle_id": bundle_id, "input_data": input_data})[
        "run_id"
    ]


def command(port: int, run_id: str, type_: str, payload: dict[str, Any]) -> None:
    body = {"command_id": f"bench-{uuid.uuid4().hex}", "run_id": run_id, "type": type_, "payload": payload}
    answer = api_json(port, "POST", f"{API}/commands", body)
    if answer.get("accepted") is not True:
        raise BenchFailure(f"command {type_} on {run_id} not accepted: {answer}")


async def replay(port: int, run_id: str, count: int, cap_s: float) -> list[float]:
    conn = await Conn.open(port)
    path = f"{API}/runs/{run_id}/ledger?after=0&limit=1000"
    latencies = []
    deadline = time.perf_counter() + cap_s
    try:
        for i in range(-3, count):  # 3 warm-up reads
            if time.perf_counter() > deadline:
                break
            t = time.perf_counter()
            status, body = await conn.request("GET", path)
            elapsed = time.perf_counter() - t
            if status != 200:
                raise BenchFailure(f"replay -> {status}: {body[:300]!r}")
            if i < 0 or i == count - 1:
                page = json.loads(body)
                if len(page["items"]) != 1000 or page["next_after"] != 1000:
                    raise BenchFailure(
                        f"replay page has {len(page['items'])} items, next_after {page['next_after']}"
                    )
            elif len(body) < 100_000:
                raise BenchFailure(f"replay page of {len(body)} bytes: too small for 1000 records")
            if i >= 0:
                latencies.append(elapsed)
    finally:
        await conn.close()
    return latencies


async def resume_to_done(port: int, run_ids: list[str], backlog: int, cap_s: float) -> list[float]:
    """One run at a time: follow its stream, then resume it; seconds from the POST to `event: done`."""
    cmd = await Conn.open(port)
    latencies = []
    deadline = time.perf_counter() + cap_s
    try:
        for run_id in run_ids:
            if time.perf_counter() > deadline:
                break
            conn, parser = await open_stream(port, run_id)
            try:
                cursors: list[int] = []
                done: dict[str, Any] | None = None
                while len(cursors) < backlog:
                    for event, ident, _ in parser.feed(await conn.reader.read(65_536)):
                        if event == b"step":
                            cursors.append(int(ident))
                body = {
                    "command_id": f"bench-resume-{uuid.uuid4().hex}",
                    "run_id": run_id,
                    "type": "resume",
                    "payload": {"payload": {"response": "yes"}},
                }
                raw = json.dumps(body).encode()
                t0 = time.perf_counter()
                cmd.send("POST", f"{API}/commands", raw)
                status, headers = await cmd.read_head()
                answer = await cmd.read_body(headers)
                if status != 200:
                    raise BenchFailure(f"resume -> {status}: {answer[:300]!r}")
                while done is None:
                    data = await asyncio.wait_for(conn.reader.read(65_536), 30)
                    if not data:
                        raise BenchFailure(f"stream of {run_id} closed before done")
                    for event, ident, payload in parser.feed(data):
                        if event == b"step":
                            cursors.append(int(ident))
                        elif event == b"done":
                            done = json.loads(payload)
                latencies.append(time.perf_counter() - t0)
                if cursors != list(range(1, len(cursors) + 1)) or done.get("cursor") != len(cursors):
                    raise BenchFailure(f"resume stream of {run_id}: cursors {cursors}, done {done}")
                if done.get("status") != "completed":
                    raise BenchFailure(f"resumed run {run_id} ended {done}")
            finally:
                await conn.close()
    finally:
        await cmd.close()
    return latencies


# --- fan-out clients (each client process runs this) -----------------------------------------------------
def fanout_worker(
    token: str, port: int, run_id: str, clients: int, connected: Any, out: Any, cap_s: float
) -> None:
    global TOKEN
    TOKEN = token  # a spawned process imported this module afresh, with another random token
    raise_fd_limit()
    try:
        result = run_async(_fanout_clients(port, run_id, clients, connected, cap_s))
    except BaseException as exc:  # reported to the parent, which fails the phase
        result = {"error": f"{type(exc).__name__}: {exc}"}
        connected.put(("error", result["error"]))
    out.put(result)


async def _fanout_clients(
    port: int, run_id: str, clients: int, connected: Any, cap_s: float
) -> dict[str, Any]:
    stamps: dict[int, float] = {}  # cursor -> record timestamp (parsed once per process)
    latencies = array("d")
    by_cursor: dict[int, list[float]] = {}  # cursor -> [sum of latencies, count]: falling behind shows here
    errors: list[str] = []
    dup_or_gap = 0
    no_done = 0
    received = 0
    last_cursor = -1

    sem = asyncio.Semaphore(200)  # connects in flight at once

    async def connect() -> tuple[Conn, SseParser, float]:
        async with sem:
            conn, parser = await open_stream(port, run_id)
            return conn, parser, time.time()

    streams = await asyncio.gather(*(connect() for _ in range(clients)))
    # The client's own cyclic-GC passes over thousands of connections stall every stream of this
    # process at once (measured: ~1 s spikes in delivery latency); they are not the server's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    connected.put(("ok", clients))
    cpu0, wall0 = CpuMeter._self(), time.perf_counter()

    async def follow(conn: Conn, parser: SseParser, subscribed: float) -> None:
        nonlocal dup_or_gap, no_done, received, last_cursor
        expect = 1
        done = None
        try:
            while done is None:
                data = await conn.reader.read(65_536)
                now = time.time()
                if not data:
                    break
                for event, ident, payload in parser.feed(data):
                    if event == b"step":
                        cursor = int(ident)
                        if cursor != expect:
                            dup_or_gap += 1
                        expect = cursor + 1
                        received += 1
                        stamp = stamps.get(cursor)
                        if stamp is None:
                            record = json.loads(payload)["record"]
                            stamp = stamps[cursor] = iso_ts(record["ended_at"] or record["started_at"])
                        if stamp >= subscribed:
                            latencies.append(now - stamp)
                            acc = by_cursor.setdefault(cursor, [0.0, 0])
                            acc[0] += now - stamp
                            acc[1] += 1
                    elif event == b"done":
                        done = json.loads(payload)
            if done is None or done.get("cursor") != expect - 1 or done.get("status") != "completed":
                no_done += 1
                if len(errors) < 3:
                    errors.append(f"stream ended without a matching done: {done}, next cursor {expect}")
            else:
                last_cursor = done["cursor"] if last_cursor in (-1, done["cursor"]) else -2
        finally:
            await conn.close()

    try:
        await asyncio.wait_for(asyncio.gather(*(follow(*s) for s in streams)), cap_s)
    except TimeoutError:
        errors.append(f"clients still reading after {cap_s:g} s")
    return {
        "clients": clients,
        "received": received,
        "dup_or_gap": dup_or_gap,
        "no_done": no_done,
        "last_cursor": last_cursor,
        "latencies": latencies.tobytes(),
        "by_cursor": by_cursor,
        "errors": errors,
        "cpu_pct": (CpuMeter._self() - cpu0) / (time.perf_counter() - wall0) * 100,
    }


def fanout(
    port: int, clients: int, sizes: Sizes, procs: list[Proc], sampler: Sampler, cpu_pids: dict[str, int]
) -> dict[str, Any]:
    run_id = start_run(port, "bench-tick", {"n": sizes.tick_n, "delay": sizes.tick_delay_s})
    command(port, run_id, "pause", {"reason": "bench: clients connecting"})
    wait_run(port, run_id, lambda v: v["paused"], procs, 30)
    nprocs = max(1, min(sizes.client_procs, clients // 100 or 1))
    share = [clients // nprocs + (1 if k < clients % nprocs else 0) for k in range(nprocs)]
    ctx = mp.get_context("spawn")
    connected, out = ctx.Queue(), ctx.Queue()
    cap_s = 60.0 + sizes.tick_n * sizes.tick_delay_s * 4
    workers = [
        ctx.Process(target=fanout_worker, args=(TOKEN, port, run_id, n, connected, out, cap_s), daemon=True)
        for n in share
    ]
    t_connect = time.perf_counter()
    for w in workers:
        w.start()
    try:
        for _ in workers:
            kind, detail = connected.get(timeout=120)
            if kind != "ok":
                raise BenchFailure(f"fan-out client process failed while connecting: {detail}")
        connect_s = time.perf_counter() - t_connect
        sampler.reset()
        cpu = CpuMeter(cpu_pids)
        command(port, run_id, "resume", {})
        parts = [out.get(timeout=cap_s + 30) for _ in workers]
        usage = cpu.done()
        peak = sampler.peak()
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    # bench_cpu_pct is this process; the client processes report their own CPU (clients_cpu_pct)
    errors = [p["error"] for p in parts if "error" in p] + [e for p in parts for e in p.get("errors", [])]
    view = api_json(port, "GET", f"{API}/runs/{run_id}")
    ledger_len = view.get("ledger_len")
    latencies = array("d")
    for p in parts:
        if "latencies" in p:
            latencies.frombytes(p["latencies"])
    received = sum(p.get("received", 0) for p in parts)
    bad = sum(p.get("dup_or_gap", 0) + p.get("no_done", 0) for p in parts)
    cursors = {p.get("last_cursor") for p in parts}
    if errors or bad or cursors != {ledger_len} or received != clients * ledger_len:
        raise BenchFailure(
            f"fan-out {clients}: {bad} clients with a gap/duplicate or no done, last cursors {cursors}, "
            f"ledger_len {ledger_len}, received {received} of {clients * (ledger_len or 0)}; {errors[:3]}"
        )
    values = list(latencies)
    usage["clients_cpu_pct"] = sum(p.get("cpu_pct", 0.0) for p in parts)
    sums: dict[int, list[float]] = {}
    for p in parts:
        for cursor, (total, n) in p.get("by_cursor", {}).items():
            acc = sums.setdefault(cursor, [0.0, 0])
            acc[0] += total
            acc[1] += n
    mean_by_record = [round(sums[c][0] / sums[c][1] * 1e3, 1) for c in sorted(sums)]
    return {
        "clients": clients,
        "client_procs": nprocs,
        "records": ledger_len,
        "deliveries_timed": len(values),
        "connect_s": connect_s,
        "p50_ms": percentile(values, 50) * 1e3,
        "p99_ms": percentile(values, 99) * 1e3,
        "max_ms": max(values) * 1e3 if values else math.nan,
        **usage,
        "serve_peak_rss_mb": peak.get("serve", math.nan),
        "mean_ms_by_record": mean_by_record,
        "checked": f"{clients} clients x {ledger_len} records, dense, once, then done",
    }


def phase_reads(
    tmp: Path, flows_dir: Path, sizes: Sizes, serve_runner: bool, results: dict[str, Any]
) -> None:
    case_dir = tmp / "reads"
    case_dir.mkdir()
    serve, port = start_serve(case_dir, flows_dir, with_runner=serve_runner)
    procs = [serve]
    runner: Proc | None = None
    try:
        time.sleep(1.0)
        results["rss_mb"]["serve_idle"] = rss_mb(serve.pid)
        if serve_runner:
            deadline = time.monotonic() + 30
            while not children(serve.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            runner_pid = children(serve.pid)[0]
            time.sleep(2.0)  # it imports abstractruntime
        else:
            runner = start_runner(case_dir)
            procs.append(runner)
            runner_pid = runner.pid
        results["rss_mb"]["runner_idle"] = rss_mb(runner_pid)
        report(
            f"serve idle RSS {results['rss_mb']['serve_idle']:.1f} MB; runner "
            f"({'serve child' if serve_runner else 'separate process'}) idle RSS "
            f"{results['rss_mb']['runner_idle']:.1f} MB"
        )
        pids = {"serve": serve.pid, "runner": runner_pid}
        sampler = Sampler(pids)
        sampler.start()
        try:
            # replay
            loop_id = start_run(port, "bench-loop", {"n": 600})
            view = wait_run(
                port, loop_id, lambda v: v["status"] in ("completed", "failed", "cancelled"), procs, 120
            )
            if view["status"] != "completed" or view.get("ledger_len", 0) < 1000:
                raise BenchFailure(
                    f"bench-loop n=600 ended {view['status']} with {view.get('ledger_len')} records"
                )
            cpu = CpuMeter(pids)
            lat = run_async(replay(port, loop_id, sizes.replays, 60))
            results["replay"] = {
                "reads": len(lat),
                "records": 1000,
                "run_ledger_len": view.get("ledger_len"),
                "p50_ms": percentile(lat, 50) * 1e3,
                "p99_ms": percentile(lat, 99) * 1e3,
                **cpu.done(),
            }
            r = results["replay"]
            report(
                f"replay 1000 records: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                f"({r['reads']} reads, one at a time; CPU serve {r['serve_cpu_pct']:.0f}%); checks OK"
            )

            # resume -> done
            ask_ids = [start_run(port, "bench-ask", {}) for _ in range(sizes.resumes)]
            for run_id in ask_ids:
                wait_run(port, run_id, lambda v: v["status"] == "waiting", procs, 60)
            backlog = api_json(port, "GET", f"{API}/runs/{ask_ids[0]}")["ledger_len"]
            cpu = CpuMeter(pids)
            lat = run_async(resume_to_done(port, ask_ids, backlog, 120))
            results["resume"] = {
                "runs": len(lat),
                "p50_ms": percentile(lat, 50) * 1e3,
                "p99_ms": percentile(lat, 99) * 1e3,
                "runner": "serve child (default poll)"
                if serve_runner
                else f"separate, --poll-s {RUNNER_POLL_S}",
                **cpu.done(),
            }
            r = results["resume"]
            report(
                f"resume -> done: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms ({r['runs']} runs, one at "
                f"a time; runner {r['runner']}); checks OK"
            )

            # fan-out
            for clients in sizes.fanout_clients:
                case = fanout(port, clients, sizes, procs, sampler, pids)
                results["fanout"].append(case)
                report(
                    f"SSE fan-out {clients} clients ({case['client_procs']} client procs, {case['records']} "
                    f"records): delivery p50 {case['p50_ms']:.1f} ms, p99 {case['p99_ms']:.1f} ms, max "
                    f"{case['max_ms']:.1f} ms; connect {case['connect_s']:.1f} s; CPU serve "
                    f"{case['serve_cpu_pct']:.0f}%, runner {case['runner_cpu_pct']:.0f}%, SSE clients "
                    f"{case['clients_cpu_pct']:.0f}%; serve peak RSS {case['serve_peak_rss_mb']:.0f} MB; checks OK"
                )
            peak = sampler.peak()
        finally:
            sampler.stop()
        results["rss_mb"]["serve_peak_reads"] = max(
            [c["serve_peak_rss_mb"] for c in results["fanout"]], default=peak.get("serve", math.nan)
        )
        results["rss_mb"]["runner_after"] = rss_mb(runner_pid)
        results["rss_mb"]["serve_after"] = rss_mb(serve.pid)
    finally:
        if runner is not None:
            runner.stop()
        code = serve.stop()
        if code not in (0, -signal.SIGTERM):
            results["problems"].append(f"serve (reads) exited {code}")


# --- report -----------------------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for c in results["starts"]:
        target = c["concurrency"] == 16
        met = verdict(c["req_per_s"] >= STARTS_TARGET_PER_S) if target else ""
        rows.append(
            (
                f"runs/start c{c['concurrency']} (no runner)",
                f"{c['req_per_s']:,.0f} req/s",
                f">= {STARTS_TARGET_PER_S:,.0f}/s" if target else "",
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
        rows.append(("ledger replay 1000 p50", f"{r['p50_ms']:.2f} ms", f"<= {REPLAY_P50_TARGET_MS:g} ms",
                     verdict(r["p50_ms"] <= REPLAY_P50_TARGET_MS)))  # fmt: skip
        rows.append(("ledger replay 1000 p99", f"{r['p99_ms']:.2f} ms", "", ""))
    if "resume" in results:
        r = results["resume"]
        rows.append(("resume -> done p50", f"{r['p50_ms']:.1f} ms", f"<= {RESUME_P50_TARGET_MS:g} ms",
                     verdict(r["p50_ms"] <= RESUME_P50_TARGET_MS)))  # fmt: skip
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


def default_flows_dir() -> Path:
    env = os.environ.get("ABSTRACTGATEWAY_FLOWS_DIR")
    return Path(env) if env else REPO.parent / "shared" / "flows"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a < 60 s smoke run")
    parser.add_argument("--flows-dir", type=Path, default=default_flows_dir(), help="sample .flow bundles")
    parser.add_argument(
        "--serve-runner",
        action="store_true",
        help="phase B uses serve's own child runner (default poll) instead of a separate --poll-s 0.005 one",
    )
    parser.add_argument("--client-procs", type=int, help="SSE client processes (default 2; --quick 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.client_procs:
        sizes = Sizes(**{**asdict(sizes), "client_procs": args.client_procs})
    fd_limit = raise_fd_limit()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "bench": "api",
        "quick": args.quick,
        "sizes": asdict(sizes),
        "cpus": os.cpu_count(),
        "fd_limit": fd_limit,
        "runner": "serve child" if args.serve_runner else f"separate process, --poll-s {RUNNER_POLL_S}",
        "starts": [],
        "commands": [],
        "fanout": [],
        "rss_mb": {},
        "problems": [],
    }
    report(
        f"api bench: {os.cpu_count()} CPUs, client and server on one machine over loopback; "
        f"phase A serve --no-runner; phase B runner: {results['runner']}"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp_name:
        tmp = Path(tmp_name)
        for name, phase in (
            ("writes", lambda: phase_writes(tmp, args.flows_dir, sizes, results)),
            ("reads", lambda: phase_reads(tmp, args.flows_dir, sizes, args.serve_runner, results)),
        ):
            try:
                phase()
            except (BenchFailure, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failed = True
                report(f"{name}: FAILED: {type(exc).__name__}: {exc}")
    if results["problems"]:
        failed = True
        report(f"problems: {results['problems']}")
    results["total_s"] = time.perf_counter() - started
    results["ok"] = not failed
    report("")
    report(table(results))
    report(f"total: {results['total_s']:.1f} s{'' if not failed else '  (FAILED)'}")
    print(json.dumps(results), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
