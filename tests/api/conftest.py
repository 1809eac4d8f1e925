"""A real Hypercorn on 127.0.0.1 (in a thread, real sockets) over a real db, and a real runner process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_service.app import create_app
from api_service.server import hypercorn_config, serve_until
from api_service.settings import ApiSettings
from shared_store import Database
from shared_store.bundles import import_flows_dir
from tests.api import loop_guard
from tests.backends import open_test_store, store_args

TOKEN = "test-token-" + "x" * 20
ALLOWED_ORIGIN = "http://ui.allowed.test"
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="session", autouse=True)
def _store_guard() -> Iterator[None]:
    with loop_guard.guarding():
        yield


@pytest.fixture(autouse=True)
def _no_store_access_on_the_event_loop(_store_guard: None) -> Iterator[None]:
    """Fails a test during which an in-process server touched the store on its event loop thread."""
    loop_guard.on_loop.clear()
    yield
    seen, loop_guard.on_loop[:] = list(loop_guard.on_loop), []
    assert not seen, "store access on the event loop:\n" + "\n".join(sorted(set(seen)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """The app under Hypercorn on its own event loop in a thread; stop() shuts it down gracefully."""

    def __init__(self, db: Database, settings: ApiSettings, artifacts_dir: Path) -> None:
        self.app = create_app(db, settings, artifacts_dir=artifacts_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="hypercorn", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(
                serve_until(
                    self.app,
                    hypercorn_config(
                        "127.0.0.1",
                        self.port,
                        graceful_timeout_s=2,
                        header_timeout_s=self.app.state.gateway.settings.header_timeout_s,
                    ),
                    self._stop,
                )
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self._loop.close()

    def start(self) -> None:
        self._thread.start()
        for _ in range(500):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        raise RuntimeError(f"server did not start: {self.error!r}")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        assert self.error is None, self.error


@contextmanager
def running_server(db: Database, settings: ApiSettings, artifacts_dir: Path) -> Iterator[ServerThread]:
    server = ServerThread(db, settings, artifacts_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_runner(db_path: Path, flows: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "abstractgateway", "runner", *store_args(db_path)]
    args += ["--flows-dir", str(flows), "--poll-s", "0.02"]
    env = {**os.environ, "ABSTRACTGATEWAY_DATA_DIR": str(db_path.parent)}
    # Logs to a file: an unread pipe fills up and blocks the runner mid-write.
    with (db_path.parent / "runner.log").open("ab") as log:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


@dataclass
class Gateway:
    url: str
    db: Database
    db_path: Path
    settings: ApiSettings
    server: ServerThread
    client: httpx.Client  # authorized

    def counts(self) -> dict[str, int]:
        """Row counts of what a request could write: compared before/after refused requests."""
        tables = ("runs", "commands", "bundles", "bundle_deprecations", "run_start_keys", "ledger")
        return {t: int(self.db.query_one(f"SELECT count(*) FROM {t}")[0]) for t in tables}  # type: ignore[index]

    def start(self, bundle_id: str, input_data: dict[str, Any] | None = None, **extra: Any) -> str:
        response = self.client.post(
            "/api/gateway/runs/start", json={"bundle_id": bundle_id, "input_data": input_data or {}, **extra}
        )
        assert response.status_code == 200, response.text
        return response.json()["run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/gateway/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(
        self, run_id: str, predicate: Callable[[dict[str, Any]], bool], *, tries: int = 1_500
    ) -> dict:
        """Poll the run view until predicate holds (bounded by a count of polls, 20 ms apart)."""
        view: dict[str, Any] = {}
        for _ in range(tries):
            view = self.run(run_id)
            if predicate(view):
                return view
            time.sleep(0.02)
        raise AssertionError(f"run {run_id} never reached the expected state; last view: {view}")

    def command(self, run_id: str, type_: str, payload: dict[str, Any] | None = None, **extra: Any) -> dict:
        body = {"command_id": f"cmd-{time.monotonic_ns()}", "run_id": run_id, "type": type_, **extra}
        body["payload"] = payload or {}
        response = self.client.post("/api/gateway/commands", json=body)
        assert response.status_code == 200, response.text
        return response.json()


def make_settings(tmp: Path, **overrides: Any) -> ApiSettings:
    base = ApiSettings(
        tokens=(TOKEN,),
        allowed_origins=(ALLOWED_ORIGIN, "http://localhost:*"),
        audit_log=tmp / "audit.jsonl",
        sse_poll_s=0.01,
        lockout_after=1_000_000,  # all tests come from 127.0.0.1: lockout is tested on its own server
    )
    return replace(base, **overrides)


@contextmanager
def make_gateway(tmp: Path, flows: Path, **settings: Any) -> Iterator[Gateway]:
    """An API server over a fresh db with the sample bundles imported (no runner)."""
    db_path = tmp / "gateway.sqlite3"
    db = open_test_store(db_path)
    assert import_flows_dir(db, flows) == []
    config = make_settings(tmp, **settings)
    try:
        with (
            running_server(db, config, tmp / "artifacts") as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ) as client,
        ):
            yield Gateway(server.url, db, db_path, config, server, client)
    finally:
        db.close()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Gateway]:
    """The session's API server (tests that need a runner add the `runner` fixture)."""
    with make_gateway(tmp_path_factory.mktemp("gateway"), flows) as gw:
        yield gw


@pytest.fixture(scope="module")
def lone_gateway(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Gateway]:
    """An API server (one per test module) with no runner ever: started runs stay queued, and
    nothing but the API writes, so row counts tell exactly what a request wrote."""
    with make_gateway(tmp_path_factory.mktemp("lone"), flows) as gw:
        yield gw


@pytest.fixture(scope="session")
def runner(gateway: Gateway, flows: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real runner process on the gateway's db (`abstractgateway runner`)."""
    process = start_runner(gateway.db_path, flows)
    time.sleep(0.2)
    if process.poll() is not None:
        err = (gateway.db_path.parent / "runner.log").read_text()
        pytest.fail(f"runner exited at start ({process.returncode}): {err[-2000:]}")
    yield process
    stop_process(process)


@pytest.fixture
def anon(gateway: Gateway) -> Iterator[httpx.Client]:
    """A client without a token."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def read_sse(
    source: httpx.Response | Iterator[str], *, stop_after_steps: int | None = None
) -> list[dict[str, Any]]:
    """Parse an SSE stream into events ({"id", "event", "data", "comments"}) until it ends, `done`
    arrives, or `stop_after_steps` step events were read. Pass `iter(response.iter_lines())` to read
    on later from where this stopped."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    steps = 0
    for line in source.iter_lines() if isinstance(source, httpx.Response) else source:
        if line == "":
            if current:
                events.append(current)
                if current.get("event") == "step":
                    steps += 1
                if current.get("event") == "done" or (
                    stop_after_steps is not None and steps >= stop_after_steps
                ):
                    return events
                current = {}
            continue
        if line.startswith(":"):
            current.setdefault("comments", []).append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        current[field] = value[1:] if value.startswith(" ") else value
    if current:
        events.append(current)
    return events
