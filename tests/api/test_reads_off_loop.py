"""Every store read leaves the event loop (issue 20). tests/api/conftest.py fails any test of this
directory during which an in-process server touched the store on its loop thread (tests/api/loop_guard);
here: that guard does see such an access, and an SSE stream's reads (its first row read, the hub's feed
polls and ledger pages, the terminal checks), counted per thread, all ran in read threads."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter

import httpx
from abstractruntime.core.models import RunState, RunStatus, StepRecord

from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from tests.api import loop_guard
from tests.api.conftest import TOKEN, Gateway
from tests.api.loop_guard import LOOP_THREAD


def _follow(gw: Gateway, run_id: str, events: list[str], done: threading.Event) -> None:
    url = f"{gw.url}/api/gateway/runs/{run_id}/ledger/stream"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.stream("GET", url, headers=headers, params={"after": 0}, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    events.append(line[len("event: ") :])
                    if line == "event: done":
                        return
    finally:
        done.set()


def test_a_streams_store_reads_all_leave_the_event_loop(lone_gateway: Gateway) -> None:
    gw = lone_gateway
    runs, ledger = SqliteRunStore(gw.db), SqliteLedgerStore(gw.db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id=f"off-loop-{uuid.uuid4().hex[:8]}")
    runs.save(run)
    ledger.append(StepRecord.start(run=run, node_id="n", effect=None))  # a backlog of one record

    before = Counter(loop_guard.calls)

    events: list[str] = []
    ended = threading.Event()
    follower = threading.Thread(target=_follow, args=(gw, run.run_id, events, ended), daemon=True)
    follower.start()
    for _ in range(1_500):  # the backlog arrived: the stream is subscribed
        if events or ended.wait(0.02):
            break
    assert events == ["step"]
    for _ in range(2):
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    run.status = RunStatus.COMPLETED
    runs.save(run)
    ledger.append(
        StepRecord.start(
            run=run, node_id="n", effect=None, idempotency_key="system:terminal_status:completed"
        )
    )
    assert ended.wait(30)
    assert events == ["step"] * 4 + ["done"]

    # A second stream, on the run now complete: its backlog and `done` at once, read off the loop too.
    again: list[str] = []
    _follow(gw, run.run_id, again, threading.Event())
    assert again == ["step"] * 4 + ["done"]

    reads = loop_guard.calls - before  # by thread; the conftest fails the test on any loop-thread one
    assert reads[LOOP_THREAD] == 0, reads
    assert sum(n for name, n in reads.items() if name.startswith("api-read")) >= 4, reads


def test_the_guard_sees_a_store_read_made_on_the_event_loop(lone_gateway: Gateway) -> None:
    """Without this, a renamed loop thread or an unguarded connection would make every test of this
    directory pass whatever the API reads on its loop."""
    gw = lone_gateway

    async def read_on_the_loop() -> None:
        gw.db.query_one("SELECT count(*) FROM runs")

    loop = gw.server._loop
    asyncio.run_coroutine_threadsafe(read_on_the_loop(), loop).result(30)
    seen, loop_guard.on_loop[:] = list(loop_guard.on_loop), []
    assert len(seen) == 1 and "read_on_the_loop" in seen[0], seen
