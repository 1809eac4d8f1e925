"""`serve` supervises its runner: a killed runner is restarted (health shows it), the runner holds no
API token, and it dies with `serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from shared_store import Database, migrate

from .conftest import TOKEN, free_port
from .test_serve_cli import SERVE, _env


def _wait(predicate, what: str, tries: int = 3_000):  # type: ignore[no-untyped-def]
    for _ in range(tries):
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


def _health(client: httpx.Client) -> dict:
    try:
        return client.get("/api/health").json()
    except httpx.TransportError:
        return {}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").exists() and "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_serve_restarts_a_killed_runner_and_the_runner_dies_with_serve(tmp_path: Path, flows: Path) -> None:
    db_path = tmp_path / "data" / "g.sqlite3"
    database = Database(db_path)
    migrate(database)
    database.close()
    port = free_port()
    args = [*SERVE, "--port", str(port), "--db", str(db_path), "--flows-dir", str(flows)]
    env = _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_AUTH_TOKENS=f"{TOKEN}x")
    process = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            first = _wait(lambda: (_health(client).get("runner_supervisor") or {}).get("pid"), "a runner")
            environ = Path(f"/proc/{first}/environ").read_bytes()
            assert TOKEN.encode() not in environ and b"ABSTRACTGATEWAY_AUTH_TOKEN" not in environ

            os.kill(first, signal.SIGKILL)
            supervised = _wait(
                lambda: (
                    (s := _health(client).get("runner_supervisor") or {}).get("restarts")
                    and s.get("alive")
                    and s
                ),
                "the runner to be restarted",
            )
            assert supervised["pid"] != first and supervised["last_exit_code"] == -signal.SIGKILL
            assert _gone(first) and not Path(f"/proc/{first}").exists(), "the killed runner was reaped"
            run_id = client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).json()["run_id"]
            _wait(lambda: client.get(f"/api/gateway/runs/{run_id}").json()["status"] == "completed", "a run")

            second = supervised["pid"]
            process.send_signal(signal.SIGKILL)  # no chance to stop its child: PDEATHSIG does
            process.wait(30)
            _wait(lambda: _gone(second), "the runner to die with serve")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        log = process.stderr.read().decode()
        process.stderr.close()
    assert "restarting it in" in log, log[-2000:]
    assert (db_path.stat().st_mode & 0o777) == 0o600
    assert (db_path.parent.stat().st_mode & 0o777) == 0o700
