"""Rolling upgrade: a second API process takes the port (SO_REUSEPORT), the first drains on SIGTERM;
100 SSE clients following live runs resume with Last-Event-ID and end with every record exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared_store import Database, migrate
from shared_store.bundles import import_flows_dir

from .conftest import TOKEN, free_port

CLIENTS = 100
RUNS = 10


def _serve(db_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    env["ABSTRACTGATEWAY_AUTH_TOKEN"] = TOKEN
    args = [sys.executable, "-m", "gateway_cli", "serve", "--port", str(port), "--db", str(db_path)]
    with log.open("ab") as out:
        return subprocess.Popen([*args, "--no-runner", "--reuse-port"], env=env, stderr=out, stdout=out)


def _runner(db_path: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "gateway_cli", "runner", "--db", str(db_path), "--poll-s", "0.01"]
    with log.open("ab") as out:
        return subprocess.Popen(args, stderr=out, stdout=out)


def _wait_serving(log: Path, process: subprocess.Popen[bytes]) -> None:
    for _ in range(3000):
        if "serving on" in log.read_text():
            return
        assert process.poll() is None, log.read_text()
        time.sleep(0.01)
    raise AssertionError(f"no 'serving on' in {log}")


async def _follow(url: str, run_id: str, seen: list[int], reconnects: list[int]) -> str:
    """Follow one run's stream to `done`, reconnecting with Last-Event-ID whenever a stream ends early."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        while True:
            resume = {"Last-Event-ID": str(seen[-1])} if seen else {}
            try:
                async with client.stream(
                    "GET", f"/api/gateway/runs/{run_id}/ledger/stream", headers=resume
                ) as r:
                    assert r.status_code == 200, r.status_code
                    event: dict[str, str] = {}
                    async for line in r.aiter_lines():
                        if line:
                            if not line.startswith(":"):
                                field, _, value = line.partition(":")
                                event[field] = value.strip()
                            continue
                        if event.get("event") == "step":
                            seen.append(int(event["id"]))
                        elif event.get("event") == "done":
                            return run_id
                        event = {}
            except (httpx.TransportError, httpx.RemoteProtocolError):
                await asyncio.sleep(0.05)  # the old process closed: the next connect reaches the new one
            reconnects.append(1)


async def _scenario(url: str, old: subprocess.Popen[bytes], start_new, runs: list[str]) -> tuple:
    seen: list[list[int]] = [[] for _ in range(CLIENTS)]
    reconnects: list[list[int]] = [[] for _ in range(CLIENTS)]
    tasks = [
        asyncio.create_task(_follow(url, runs[i % len(runs)], seen[i], reconnects[i])) for i in range(CLIENTS)
    ]
    # Upgrade mid-stream: once every client has records, the new process starts and the old one stops.
    while sum(1 for s in seen if s) < CLIENTS:
        await asyncio.sleep(0.02)
    received_before = sum(len(s) for s in seen)
    new = await asyncio.to_thread(start_new)
    old.send_signal(signal.SIGTERM)
    await asyncio.to_thread(old.wait, 30)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return seen, reconnects, received_before, new


def test_rolling_api_restart_loses_and_repeats_nothing(tmp_path: Path, flows: Path) -> None:
    db_path = tmp_path / "gateway.sqlite3"
    db = Database(db_path)
    migrate(db)
    import_flows_dir(db, flows)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    old = _serve(db_path, port, tmp_path / "api-old.log")
    runner = _runner(db_path, tmp_path / "runner.log")
    new: subprocess.Popen[bytes] | None = None
    try:
        _wait_serving(tmp_path / "api-old.log", old)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            body = {"bundle_id": "bench-tick", "input_data": {"n": 40, "delay": 0.05}}
            runs = [client.post("/api/gateway/runs/start", json=body).json()["run_id"] for _ in range(RUNS)]

        def start_new() -> subprocess.Popen[bytes]:
            process = _serve(db_path, port, tmp_path / "api-new.log")
            _wait_serving(tmp_path / "api-new.log", process)
            return process

        seen, reconnects, received_before, new = asyncio.run(_scenario(url, old, start_new, runs))
        assert old.returncode == 0, (tmp_path / "api-old.log").read_text()[-2000:]
        lengths = dict(db.query("SELECT run_id, ledger_len FROM runs"))
        for i, cursors in enumerate(seen):
            expected = list(range(1, lengths[runs[i % RUNS]] + 1))
            assert cursors == expected, f"client {i}: gap or duplicate"
        assert sum(1 for r in reconnects if r) >= CLIENTS // 2, "the old process's streams really ended"
        assert sum(len(s) for s in seen) > received_before, "records kept flowing across the restart"
        statuses = {row[0] for row in db.query("SELECT status FROM runs")}
        assert statuses == {"completed"}, "runs never noticed the restart"
    finally:
        for process in (old, new, runner):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        db.close()
