"""The commands an operator runs against PostgreSQL, as real processes: `migrate --db-url`, `config status
--db-url`, `serve --db-url` with its runner child (a run started over HTTP completes, its SSE stream
ends with `done`), and the refusals (a URL that is not postgresql://, a store named twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import TOKEN, free_port, read_sse
from tests.api.test_serve_cli import _wait_healthy
from tests.pg.fixtures import PgDatabase, gateway_command

GATEWAY = gateway_command()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTGATEWAY_")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_migrate_and_config_status_on_a_postgresql_url(pg_empty_db: PgDatabase, tmp_path: Path) -> None:
    url = pg_empty_db.url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    status = _run(["migrate", "--status"], _env(ABSTRACTGATEWAY_DB_URL=url))
    assert status.returncode == 0, status.stderr
    assert "schema version 0" in status.stdout and "pending: 1," in status.stdout
    applied = _run(["migrate"], _env(ABSTRACTGATEWAY_DB_URL=url))  # the variable alone selects it
    assert applied.returncode == 0 and "applied 0001" in applied.stdout, applied.stderr
    again = _run(["migrate", "--db-url", url], _env())
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr
    shown = _run(["config", "status", "--db-url", url, "--data-dir", str(tmp_path)], _env())
    assert shown.returncode == 0, shown.stderr
    assert "store backend:   postgresql" in shown.stdout
    assert "schema:          version" in shown.stdout and "pending" not in shown.stdout
    assert "hunter2" not in shown.stdout + shown.stderr + applied.stdout + applied.stderr, "no password shown"


def test_a_url_that_is_not_postgresql_or_a_store_named_twice_is_refused(tmp_path: Path) -> None:
    for args, env in (
        (["migrate"], _env(ABSTRACTGATEWAY_DB_URL="mysql://db/gateway")),
        (["serve", "--db-url", "sqlite:///x.db", "--no-runner"], _env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN)),
        (["runner", "--db-url", "http://db/x"], _env()),
        (
            ["runner", "--db", str(tmp_path / "g.sqlite3")],
            _env(ABSTRACTGATEWAY_DB_URL="postgresql://postgres@127.0.0.1:1/x"),
        ),
    ):
        done = _run(args, env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "postgresql" in done.stderr.lower() or "once" in done.stderr, done.stderr
    assert not (tmp_path / "g.sqlite3").exists(), "nothing was created"


def _wait(client: httpx.Client, run_id: str, predicate: Any) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(3_000):  # a count of polls, 20 ms apart: a hang guard, not a timing assertion
        view = client.get(f"/api/gateway/runs/{run_id}").json()
        if predicate(view):
            return view
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} never got there: {view}")


def test_serve_with_its_runner_on_postgresql_runs_a_flow_to_done(pg_db: PgDatabase, tmp_path: Path) -> None:
    from abstractgateway.sample_flows import ensure_built

    port = free_port()
    args = [*GATEWAY, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--db-url", pg_db.url]
    args += ["--flows-dir", str(ensure_built())]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(args, env=_env(ABSTRACTGATEWAY_AUTH_TOKEN=TOKEN), stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(url, process)
        assert health["db"]["path"].startswith("postgresql://"), health["db"]
        assert not (tmp_path / "gateway.sqlite3").exists(), "no SQLite file beside a PostgreSQL store"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            started = client.post("/api/gateway/runs/start", json={"bundle_id": "bench-ask"})
            assert started.status_code == 200, started.text
            run_id = started.json()["run_id"]
            with client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream") as stream:
                first = read_sse(iter(stream.iter_lines()), stop_after_steps=1)
            assert first and first[-1]["event"] == "step"
            view = _wait(client, run_id, lambda v: v["status"] == "waiting")
            assert view["waiting"]["reason"] == "user", view
            sent = client.post(
                "/api/gateway/commands",
                json={"command_id": "resume-1", "run_id": run_id, "type": "resume",
                      "payload": {"payload": {"response": "yes"}}},
            )  # fmt: skip
            assert sent.status_code == 200, sent.text
            view = _wait(client, run_id, lambda v: v["status"] in ("completed", "failed", "cancelled"))
            assert view["status"] == "completed" and view["output"]["response"] == "yes", view
            # The rest of the stream from where the first read stopped (Last-Event-ID): ends with done.
            headers = {"Last-Event-ID": first[-1]["id"]}
            with client.stream("GET", f"/api/gateway/runs/{run_id}/ledger/stream", headers=headers) as stream:
                rest = read_sse(stream)
            assert rest[-1]["event"] == "done", rest[-3:]
            steps = [e for e in first + rest if e.get("event") == "step"]
            ids = [int(e["id"]) for e in steps]
            assert ids == list(range(1, len(ids) + 1)), "every record once, in order"
            ledger = client.get(f"/api/gateway/runs/{run_id}/ledger").json()["items"]
            assert len(ledger) == len(ids) == view["ledger_len"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines() if line]
    assert not [line for line in lines if line.get("level") in ("error", "critical")], lines[-5:]
