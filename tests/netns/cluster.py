"""A gateway spread over namespace hosts for the multi-host test: PostgreSQL on one host, API hosts
(`serve --no-runner`), runner hosts (`runner`) and a client host (tests/netns/sse_client.py), every
process this tree's own `abstractgateway`, pointed at the database by `--db-url`; plus
the test's own read-only view of the database through the server's unix socket (a file: no network,
so a cut link never hides the truth from the test)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared_store.postgres.migrate import migrate
from tests.netns.harness import Host, Netns
from tests.pg.server import PgServer

REPO = Path(__file__).resolve().parents[2]
API_PORT = 8080
TERMINAL = ("completed", "failed", "cancelled")


class Deadline:
    """One budget for every wait of a test (a hang guard, never the thing measured)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def wait(
        self, predicate: Callable[[], bool], what: str, *, check: Callable[[], None] = lambda: None
    ) -> float:
        """Poll until predicate() holds; `check` raises when a process the wait depends on died.
        Returns the seconds it took."""
        began = time.monotonic()
        while not predicate():
            check()
            if self.left() <= 0:
                pytest.fail(f"timed out (test budget {self.seconds:.0f} s) waiting for {what}")
            time.sleep(0.05)
        return time.monotonic() - began


@dataclass(frozen=True)
class RunRow:
    status: str
    owner: str | None
    epoch: int
    ledger_len: int


class Store:
    """The test's view of the database (autocommit reads through the unix socket)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def held_by(self, owner: str) -> dict[str, int]:
        """Unfinished runs `owner` holds a lease on (the one it ticks and the rest of its claimed
        batch): run id -> lease epoch."""
        rows = self.rows(
            "SELECT run_id, lease_epoch FROM runs WHERE lease_owner = %s AND NOT status = ANY(%s)",
            (owner, list(TERMINAL)),
        )
        return {run_id: int(epoch) for run_id, epoch in rows}

    def runs(self, run_ids: list[str] | set[str]) -> dict[str, RunRow]:
        rows = self.rows(
            "SELECT run_id, status, lease_owner, lease_epoch, ledger_len FROM runs WHERE run_id = ANY(%s)",
            (list(run_ids),),
        )
        return {r[0]: RunRow(r[1], r[2], int(r[3]), int(r[4])) for r in rows}

    def seqs(self, run_id: str) -> list[int]:
        return [
            int(s) for (s,) in self.rows("SELECT seq FROM ledger WHERE run_id = %s ORDER BY seq", (run_id,))
        ]

    def completed_twice(self, run_ids: list[str]) -> list[tuple[Any, ...]]:
        """(run, step idempotency key, count) of steps with more than one `completed` record."""
        return self.rows(
            "SELECT run_id, idempotency_key, count(*) FROM ledger WHERE run_id = ANY(%s) "
            "AND step_status = 'completed' AND idempotency_key IS NOT NULL "
            "GROUP BY run_id, idempotency_key HAVING count(*) > 1",
            (run_ids,),
        )

    def runner_metrics(self, runner_id: str) -> str:
        rows = self.rows("SELECT metrics FROM runners WHERE runner_id = %s", (runner_id,))
        return str(rows[0][0] or "") if rows else ""


@dataclass
class Process:
    """A long-running gateway process on a host, its JSON log lines in a file."""

    name: str
    host: Host
    process: subprocess.Popen[bytes]
    log: Path

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                events.append(event)
        return events

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}): {self.tail()}")


class Client:
    """The client host's program: JSON events on its stdout, its stderr in a file."""

    def __init__(self, net: Netns, host: Host, config: dict[str, Any], workdir: Path, env: dict[str, str]):
        self.config = config
        config_path = workdir / "client-config.json"
        config_path.write_text(json.dumps(config))
        self.stderr = workdir / "client.log"
        with self.stderr.open("wb") as err:
            self.process = net.interactive(
                host, [sys.executable, "-m", "tests.netns.sse_client", str(config_path)], env=env, stderr=err
            )
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._events.put(json.loads(line))

    def next(
        self, want: str, deadline: Deadline, *, check: Callable[[], None] = lambda: None
    ) -> dict[str, Any]:
        """The client's next `want` event; fails when the client exits first, when `check` raises
        (a process it depends on died), or at the deadline."""
        while True:
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self._events.empty():
                    pytest.fail(
                        f"the client host's program exited ({self.process.returncode}) before `{want}`: "
                        f"{self.stderr.read_text()[-3000:]}"
                    )
                check()
                if deadline.left() <= 0:
                    pytest.fail(
                        f"no `{want}` from the client host in time: {self.stderr.read_text()[-3000:]}"
                    )
                continue
            if event.get("event") == want:
                return event

    def results(self) -> dict[str, dict[str, Any]]:
        return json.loads(Path(self.config["out"]).read_text())


class Cluster:
    """PostgreSQL on host `db` (database `gw`, migrated), then processes on other hosts."""

    def __init__(self, net: Netns, workdir: Path, *, pg_settings: dict[str, str]) -> None:
        self.net = net
        self.workdir = workdir
        self.db_host = net.add_host("db")
        self.server = PgServer(
            host=self.db_host.ip,
            port=5432,
            wrap=net.wrap(self.db_host),
            allow_cidr=str(net.subnet),
            settings=pg_settings,
        )
        self.processes: list[Process] = []
        self.dead: set[str] = set()  # hosts killed on purpose

    def start(self) -> Store:
        self.server.start()
        local = f"host={self.server.sockdir} port={self.server.port} user=postgres"
        with psycopg.connect(f"{local} dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE gw")
        migrate(f"{local} dbname=gw")
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        self.db_url = f"postgresql://postgres@{self.db_host.ip}:{self.server.port}/gw"
        for name in (
            "ABSTRACTGATEWAY_PROVIDER",
            "ABSTRACTGATEWAY_FLOWS_DIR",
            "ABSTRACTGATEWAY_DATA_DIR",
            "ABSTRACTGATEWAY_DB_URL",
        ):
            self.env.pop(name, None)
        return Store(f"{local} dbname=gw")

    def stop_processes(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every gateway process still running (runners release their leases), SIGKILL what
        outlives `timeout`; returns each one's exit code (-9: killed, by the test or here)."""
        for process in self.processes:
            if process.process.poll() is None:
                process.process.terminate()
        codes = {}
        for process in self.processes:
            try:
                codes[process.name] = process.process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.process.kill()
                codes[process.name] = process.process.wait()
        return codes

    def stop(self) -> None:
        """The gateway's processes first (so none logs a lost database), then PostgreSQL."""
        try:
            self.stop_processes()
        finally:
            self.server.stop()

    def gateway(self, name: str, args: list[str], **env: str) -> Process:
        """`abstractgateway ARGS --data-dir <its own dir>` on a new host `name`."""
        return self._launch(self.net.add_host(name), args, env)

    def api(self, name: str, *args: str, token: str) -> Process:
        """`serve --no-runner` on a new host `name`, listening on the host's address."""
        host = self.net.add_host(name)
        serve = ["serve", "--no-runner", "--host", host.ip, "--port", str(API_PORT), *args]
        return self._launch(host, serve, {"ABSTRACTGATEWAY_AUTH_TOKEN": token})

    def _launch(self, host: Host, args: list[str], env: dict[str, str]) -> Process:
        log = self.workdir / f"{host.name}.log"
        command = [sys.executable, "-m", "abstractgateway", *args, "--db-url", self.db_url]
        command += ["--data-dir", str(self.workdir / host.name)]  # each host's own (secrets, workspaces)
        process = Process(
            host.name, host, self.net.popen(host, command, log=log, env={**self.env, **env}), log
        )
        self.processes.append(process)
        return process

    def url(self, process: Process) -> str:
        return f"http://{process.host.ip}:{API_PORT}"

    def client(self, config: dict[str, Any]) -> Client:
        return Client(self.net, self.net.add_host("cli"), config, self.workdir, self.env)

    def all_alive(self) -> None:
        for process in self.processes:
            if process.name not in self.dead:
                process.alive()

    def kill_host(self, process: Process) -> list[int]:
        """Process's host dies (every process on it SIGKILLed)."""
        self.dead.add(process.name)
        killed = self.net.kill_host(process.host)
        process.process.wait(30)
        return killed
