"""Fuzz fixtures: the real API under Hypercorn on 127.0.0.1 (no runner), with a request counter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from shared_store import Database, migrate
from shared_store.bundles import import_flows_dir

from ..api.conftest import TERMINAL, TOKEN, Gateway, ServerThread, make_settings, start_runner, stop_process

# Requests the fuzz servers answered, by test module, and those schemathesis sent, by operation and
# status: over the whole session, quoted by the terminal summary.
SERVED: dict[str, int] = {}
SENT: dict[str, int] = {}


class CountRequests:
    """Outermost ASGI middleware: counts every HTTP request the server answers, by test module."""

    def __init__(self, app: ASGIApp, counter: dict[str, int], key: str) -> None:
        self.app = app
        self.counter = counter
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counter[self.key] = self.counter.get(self.key, 0) + 1
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def fuzz_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, flows: Path
) -> Iterator[Gateway]:
    """A runner-less API server over a fresh db with the sample bundles, one per test module."""
    tmp = tmp_path_factory.mktemp("fuzz")
    db = Database(tmp / "gateway.sqlite3")
    migrate(db)
    assert import_flows_dir(db, flows) == []
    # No runner here: job routes (media, KG) answer 202 at once instead of holding a connection.
    settings = make_settings(tmp, max_wait_s=0.0)
    server = ServerThread(db, settings, tmp / "artifacts")
    server.app.add_middleware(CountRequests, counter=SERVED, key=request.module.__name__.rsplit(".", 1)[-1])
    server.start()
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            yield Gateway(server.url, db, db.path, settings, server, client)
    finally:
        server.stop()
        db.close()


@pytest.fixture(scope="module")
def sample_runs(fuzz_gateway: Gateway, flows: Path) -> dict[str, str]:
    """Runs a runner (for a moment) made: `done` completed with a ledger, `ask` waits on a user."""
    gw = fuzz_gateway
    runner = start_runner(gw.db_path, flows)
    try:
        done = gw.start("bench-echo", {"message": "fuzz"})
        ask = gw.start("bench-ask")
        gw.wait_for(done, lambda view: view["status"] in TERMINAL)
        gw.wait_for(ask, lambda view: view["status"] == "waiting")
    finally:
        stop_process(runner)
    return {"done": done, "ask": ask}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if SENT:
        statuses: dict[str, int] = {}
        for key, n in SENT.items():
            status = key.rsplit(" ", 1)[-1]
            statuses[status] = statuses.get(status, 0) + n
        shown = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        terminalreporter.write_line(f"fuzz: schemathesis sent {sum(SENT.values())} requests ({shown})")
        if config.getoption("verbose") > 0:
            for key in sorted(SENT):
                terminalreporter.write_line(f"  {key}: {SENT[key]}")
    if SERVED:
        counts = ", ".join(f"{name}: {n}" for name, n in sorted(SERVED.items()))
        terminalreporter.write_line(f"fuzz: HTTP requests served: {sum(SERVED.values())} ({counts})")
