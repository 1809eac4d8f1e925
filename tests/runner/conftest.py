"""Real runner processes on a real db file: start them, stop them (SIGTERM), kill them (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.codec import decode
from shared_store.starts import enqueue_run
from tests.backends import open_test_store, store_args
from tests.conftest import REPO


class RunnerProcess:
    """`abstractgateway runner` as a child process; its JSON log lines land in a file."""

    def __init__(self, db_path: Path, log_path: Path, *, runner_id: str, lease_s: float, env: dict[str, str]):
        self.log_path = log_path
        self._log = log_path.open("ab")
        command = [sys.executable, "-m", "abstractgateway", "runner", *store_args(db_path), "--poll-s=0.02"]
        command += ["--runner-id", runner_id, "--lease-s", str(lease_s)]
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=self._log)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


class Gateway:
    """A migrated db with the sample bundles, and the runners started on it."""

    def __init__(self, tmp_path: Path, flows: Path) -> None:
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "gateway.sqlite3"
        self.db = open_test_store(self.db_path)
        assert import_flows_dir(self.db, flows) == []
        self.runners: list[RunnerProcess] = []
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "ABSTRACTGATEWAY_LOG_LEVEL": "debug"}
        for name in ("ABSTRACTGATEWAY_PROVIDER", "ABSTRACTGATEWAY_MODEL", "ABSTRACTGATEWAY_BASE_URL"):
            self.env.pop(name, None)

    def runner(self, runner_id: str = "r1", *, lease_s: float = 5.0, **env: str) -> RunnerProcess:
        log = self.tmp_path / f"{runner_id}.log"
        process = RunnerProcess(
            self.db_path, log, runner_id=runner_id, lease_s=lease_s, env={**self.env, **env}
        )
        self.runners.append(process)
        return process

    def start(self, bundle: str, input_data: dict[str, Any] | None = None, **kwargs: Any) -> str:
        resolved = resolve_workflow(self.db, bundle_id=bundle)
        return enqueue_run(self.db, resolved=resolved, input_data=input_data or {}, **kwargs).run_id

    def run(self, run_id: str) -> dict[str, Any]:
        row = self.db.query_one(
            "SELECT r.status, r.paused, r.wait_reason, r.wait_key, r.ledger_len, r.output_failed, s.run_json "
            "FROM runs r JOIN run_states s USING (run_id) WHERE run_id = ?",
            (run_id,),
        )
        assert row is not None, f"no run {run_id}"
        state = decode(row[6]) if row[6] else {}
        keys = ("status", "paused", "wait_reason", "wait_key", "ledger_len", "output_failed")
        return {
            **dict(zip(keys, row[:6], strict=True)),
            "output": state.get("output"),
            "error": state.get("error"),
        }

    def ledger(self, run_id: str) -> list[tuple[int, dict[str, Any]]]:
        rows = self.db.query("SELECT seq, record FROM ledger WHERE run_id = ? ORDER BY seq", (run_id,))
        return [(int(seq), decode(record)) for seq, record in rows]

    def command(self, command_id: str) -> tuple[str, str | None]:
        row = self.db.query_one("SELECT status, error FROM commands WHERE command_id = ?", (command_id,))
        assert row is not None
        return row[0], row[1]

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Poll until predicate() holds; the timeout is only a hang guard, never the thing under test."""
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [r for r in self.runners if r.proc.poll() is not None and not r._log.closed]
            assert not dead, (
                f"runner exited ({dead[0].proc.returncode}): {dead[0].log_path.read_text()[-3000:]}"
            )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.02)

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
        self.wait(lambda: self.run(run_id)["status"] in statuses, f"{run_id} to be {statuses}", timeout)
        return self.run(run_id)

    def close(self) -> None:
        for process in self.runners:
            if process.proc.poll() is None:
                process.kill()
        self.db.close()


@pytest.fixture
def gateway(tmp_path: Path, flows: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, flows)
    yield gw
    gw.close()
