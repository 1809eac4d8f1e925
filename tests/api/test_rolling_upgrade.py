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
    args = [sys.executable, "-m", "abstractgateway", "serve", "--port", str(port), "--db", str(db_path)]
    with log.open("ab") as out:
        return subprocess.Popen([*args, "--no-runner", "--reuse-port"], env=env, stderr=out, stdout=out)


def _runner(db_path: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "abstractgateway", "runner", "--db", str(db_path), "--poll-s", "0.01"]
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


async def _scenario(url: str, old: subprocess.Popen[bytes], start_new, runs: list[str], progress) -> tuple:
    seen: list[list[int]] = [[] for _ in range(CLIENTS)]
    reconnects: list[list[int]] = [[] for _ in range(CLIENTS)]
    tasks = [
        asyncio.create_task(_follow(url, runs[i % len(runs)], seen[i], reconnects[i])) for i in range(CLIENTS)
    ]
    # Every run waits on its ask_user: each client has its first records and an open stream.
    while sum(1 for s in seen if len(s) >= 2) < CLIENTS:
        await asyncio.sleep(0.02)
    before = progress()
    new = await asyncio.to_thread(start_new)
    old.send_signal(signal.SIGTERM)
    await asyncio.to_thread(old.wait, 30)
    during = progress()
    # Answered through the new process: the rest of every ledger arrives after the restart.
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for i, run_id in enumerate(runs):
            body = {"command_id": f"answer-{i}", "run_id": run_id, "type": "resume"}
            response = await client.post(
                "/api/gateway/commands", json={**body, "payload": {"payload": {"response": "y"}}}
            )
            assert response.status_code == 200, response.text
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return seen, reconnects, new, before, during


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
            runs = [
                client.post("/api/gateway/runs/start", json={"bundle_id": "bench-ask"}).json()["run_id"]
                for _ in range(RUNS)
            ]
            ticking = client.post(
                "/api/gateway/runs/start",
                json={"bundle_id": "bench-tick", "input_data": {"n": 5000, "delay": 0.01}},
            ).json()["run_id"]

        def start_new() -> subprocess.Popen[bytes]:
            process = _serve(db_path, port, tmp_path / "api-new.log")
            _wait_serving(tmp_path / "api-new.log", process)
            return process

        def progress() -> int:
            return int(db.query_one("SELECT ledger_len FROM runs WHERE run_id = ?", (ticking,))[0])

        seen, reconnects, new, before, during = asyncio.run(_scenario(url, old, start_new, runs, progress))
        assert old.returncode == 0, (tmp_path / "api-old.log").read_text()[-2000:]
        lengths = dict(db.query("SELECT run_id, ledger_len FROM runs"))
        for i, cursors in enumerate(seen):
            expected = list(range(1, lengths[runs[i % RUNS]] + 1))
            assert cursors == expected, f"client {i}: gap or duplicate"
        assert all(reconnects), "every stream of the old process ended and was resumed"
        assert during > before, "the runner kept ticking while the API was replaced"
        assert {row[0] for row in db.query("SELECT status FROM runs WHERE run_id != ?", (ticking,))} == {
            "completed"
        }
    finally:
        for process in (old, new, runner):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        db.close()
