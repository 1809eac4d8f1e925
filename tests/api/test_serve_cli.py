"""`serve` as a user runs it: a real process with its runner child, refusals, graceful shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared_store import Database, migrate
from shared_store.migrate import known_migrations, schema_status, shipped_migrations

from .conftest import TOKEN, free_port, read_sse

SERVE = [sys.executable, "-m", "api_service.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    return {**env, **extra}


def _refused(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([*SERVE, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr


def test_refuses_without_a_token_or_on_a_public_host_without_auth(tmp_path: Path) -> None:
    db = ["--db", str(tmp_path / "g.sqlite3"), "--migrate", "--no-runner"]
    assert "ABSTRACTGATEWAY_AUTH_TOKEN" in _refused(db, _env())
    assert "loopback" in _refused([*db, "--insecure-local-no-auth", "--host", "0.0.0.0"], _env())


def _db_one_migration_behind(tmp_path: Path) -> Path:
    source = tmp_path / "migrations"
    shutil.copytree(Path(str(shipped_migrations())), source)
    known = known_migrations(source)
    (source / known[-1].name).unlink()
    db_path = tmp_path / "old.sqlite3"
    database = Database(db_path)
    migrate(database, source)
    database.close()
    return db_path


def test_refuses_a_db_one_migration_behind_with_the_command_to_run(tmp_path: Path) -> None:
    """Migrating a live db stays explicit: a rolling upgrade must never migrate by surprise."""
    db_path = _db_one_migration_behind(tmp_path)
    message = _refused(["--db", str(db_path), "--no-runner"], _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN))
    assert "abstractgateway migrate" in message and "--migrate" in message
    runner = subprocess.run(
        [sys.executable, "-m", "abstractgateway", "runner", "--db", str(db_path)],
        env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert runner.returncode == 2 and "abstractgateway migrate" in runner.stderr, runner.stderr
    database = Database(db_path)
    assert schema_status(database).pending == [known_migrations()[-1].version], "nothing was applied"
    database.close()


def test_first_start_on_a_new_data_dir_creates_and_migrates_the_db(tmp_path: Path) -> None:
    """The original's quick start: `serve` on a data dir that does not exist yet, no --migrate."""
    data_dir = tmp_path / "new" / "data"
    port = free_port()
    args = [*SERVE, "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(data_dir)]
    process = subprocess.Popen(args, env=_env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN), stderr=subprocess.PIPE)
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", process)
        assert health.get("runners"), "the runner child started on the new db too"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        assert process.stderr is not None
        process.stderr.close()
    database = Database(data_dir / "gateway.sqlite3")
    status = schema_status(database)
    assert status.current == status.latest and status.pending == []
    database.close()


def test_runner_alone_creates_a_new_db(tmp_path: Path) -> None:
    db_path = tmp_path / "fresh" / "g.sqlite3"
    db_path.parent.mkdir()
    log_path = tmp_path / "runner.log"
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "abstractgateway", "runner", "--db", str(db_path), "--poll-s", "0.05"],
            env=_env(), stdout=log, stderr=log,
        )  # fmt: skip
    try:
        for _ in range(3_000):
            if runner.poll() is not None or "runner_started" in log_path.read_text():
                break
            time.sleep(0.02)
        assert runner.poll() is None, log_path.read_text()
        assert _registered_runners(db_path) == 1
    finally:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0, log_path.read_text()


def _registered_runners(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    database = Database(db_path)
    try:
        if schema_status(database).pending:
            return 0
        row = database.query_one("SELECT count(*) FROM runners")
        return int(row[0]) if row else 0
    finally:
        database.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> dict:
    health: dict = {}
    # Health's detail (runners) is for token holders; without one it says status alone.
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for _ in range(3_000):
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                response = client.get("/api/health")
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            health = response.json()
            if response.status_code == 200 and health.get("runners"):
                return health
            time.sleep(0.02)
    raise AssertionError(f"serve never became healthy with a runner: {health}")


def test_refuses_bad_settings(tmp_path: Path) -> None:
    env = _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_MAX_BODY_BYTES="lots")
    assert "ABSTRACTGATEWAY_MAX_BODY_BYTES" in _refused(["--db", str(tmp_path / "g.sqlite3")], env)


def test_serve_runs_its_runner_and_stops_both(tmp_path: Path, flows: Path) -> None:
    db_path = tmp_path / "g.sqlite3"
    database = Database(db_path)
    migrate(database)
    database.close()
    port = free_port()
    args = [*SERVE, "--port", str(port), "--db", str(db_path), "--flows-dir", str(flows)]
    process = subprocess.Popen(args, env=_env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN), stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            health = {}
            for _ in range(1_000):
                try:
                    health = client.get("/api/health").json()
                except httpx.TransportError:
                    health = {}
                if health.get("runners"):
                    break
                time.sleep(0.02)
            assert health["status"] == "healthy", health
            runner_pid = health["runners"][0]["pid"]
            assert runner_pid != process.pid, "the runner is a separate process"

            run_id = client.post("/api/gateway/runs/start", json={"bundle_id": "bench-echo"}).json()["run_id"]
            with client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream") as response:
                assert json.loads(read_sse(response)[-1]["data"])["status"] == "completed"

            waiting = client.post("/api/gateway/runs/start", json={"bundle_id": "bench-ask"}).json()["run_id"]
            with client.stream("GET", f"/api/gateway/runs/{waiting}/ledger/stream") as response:
                lines = iter(response.iter_lines())
                read_sse(lines, stop_after_steps=2)  # caught up; the run now waits for a user
                process.send_signal(signal.SIGTERM)
                rest = read_sse(lines)
            assert any("shutting down" in c for e in rest for c in e.get("comments", [])), rest
        assert process.wait(60) == 0
        for _ in range(500):
            try:
                os.kill(runner_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the runner child outlived serve")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_workers_serve_one_port_from_several_processes_and_stop_together(tmp_path: Path) -> None:
    db_path = tmp_path / "g.sqlite3"
    database = Database(db_path)
    migrate(database)
    database.close()
    port = free_port()
    log = tmp_path / "serve.log"
    args = [*SERVE, "--port", str(port), "--db", str(db_path), "--no-runner", "--workers", "2"]
    with log.open("ab") as out:
        process = subprocess.Popen(args, env=_env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN), stderr=out, stdout=out)
    try:
        for _ in range(3000):
            if log.read_text().count("serving on") == 2:
                break
            assert process.poll() is None, log.read_text()
            time.sleep(0.01)
        assert log.read_text().count("serving on") == 2, log.read_text()
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) == 1, "one more API process"
        # Fresh connections land on either listener; every one is served.
        for _ in range(40):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                assert client.get("/api/health").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-2000:]
    assert (
        not Path(f"/proc/{children[0]}").exists()
        or "zombie" in Path(f"/proc/{children[0]}/status").read_text()
    )


def test_refuses_a_bad_code_nodes_setting(tmp_path: Path) -> None:
    env = _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_CODE_NODES="sometimes")
    assert "ABSTRACTGATEWAY_CODE_NODES" in _refused(["--db", str(tmp_path / "g.sqlite3")], env)


def test_the_runner_and_the_cli_refuse_bad_settings_naming_the_variable(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "abstractgateway"]
    cases = [
        (["runner", "--db", str(tmp_path / "g.sqlite3")], "ABSTRACTGATEWAY_SANDBOX_CPU_S", "lots"),
        (
            ["runner", "--db", str(tmp_path / "g.sqlite3")],
            "ABSTRACTGATEWAY_WEBHOOK_ALLOW_NETWORKS",
            "10.0.0.0/33",
        ),
        (["runner", "--db", str(tmp_path / "g.sqlite3")], "ABSTRACTGATEWAY_TICK_TIMEOUT_S", "-1"),
        (["migrate", "--db", str(tmp_path / "g.sqlite3")], "ABSTRACTGATEWAY_DB_URL", "mysql://db/gateway"),
    ]
    for args, name, value in cases:
        done = subprocess.run([*cli, *args], env=_env(**{name: value}), capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 2, (name, done.stderr)
        assert name in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "g.sqlite3").exists(), "nothing was created"
    port = _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_PORT="70000")
    assert "ABSTRACTGATEWAY_PORT must be <= 65535" in _refused(["--db", str(tmp_path / "g.sqlite3")], port)


def test_serve_refuses_what_its_runner_would_refuse(tmp_path: Path) -> None:
    """`abstractgateway serve` checks its runner's settings too (not a runner restarted in a loop)."""
    env = _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN, ABSTRACTGATEWAY_SANDBOX_MEMORY_MB="16")
    done = subprocess.run(
        [sys.executable, "-m", "abstractgateway", "serve", "--db", str(tmp_path / "g.sqlite3")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "ABSTRACTGATEWAY_SANDBOX_MEMORY_MB must be >= 32" in done.stderr, (
        done.stderr
    )
    assert not (tmp_path / "g.sqlite3").exists()
