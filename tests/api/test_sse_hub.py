"""The SSE hub alone: one feed poll serves every subscriber; a lagging one is closed, others unaffected."""

from __future__ import annotations

import asyncio

from abstractruntime.core.models import RunState, RunStatus, StepRecord

from api_service.sse import DONE, STEP, SseHub
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from shared_store.run_views import run_progress


def test_fan_out_lagging_client_and_done(db) -> None:
    runs, ledger = SqliteRunStore(db), SqliteLedgerStore(db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id="r1")
    runs.save(run)
    hub = SseHub(db, buffer=4, done_grace_s=60)
    hub._cursor = hub.feed.head()
    progress = run_progress(db, "r1")
    assert progress is not None
    fast, track = hub.subscribe("r1", progress)
    slow, _ = hub.subscribe("r1", progress)
    assert hub.subscribers == 2 and track.ledger_len == 0

    for _ in range(3):
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    hub.poll_once()
    got = fast.take()
    assert [(kind, seq) for kind, seq, _ in got] == [(STEP, 1), (STEP, 2), (STEP, 3)]
    assert got[0][2].startswith(b'id: 1\nevent: step\ndata: {"cursor":1,"record":{')
    assert fast.end is None and slow.end is None

    for _ in range(3):  # slow has 3 queued of 4: the 5th item overflows it
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    hub.poll_once()
    assert slow.end is not None and b"Last-Event-ID" in slow.end
    assert [item[1] for item in fast.take()] == [4, 5, 6], "the fast client got everything"
    polls = hub.feed.queries
    hub.poll_once()
    assert hub.feed.queries == polls, "nothing committed: no query"

    run.status = RunStatus.COMPLETED
    runs.save(run)
    hub.poll_once()
    assert not track.final, "terminal, but the closing status record is not there yet"
    rec = StepRecord.start(
        run=run, node_id="n", effect=None, idempotency_key="system:terminal_status:completed"
    )
    ledger.append(rec)
    hub.poll_once()
    items = fast.take()
    assert [(i[0], i[1]) for i in items] == [(STEP, 7), (DONE, "completed")] and items[1][2] == 7
    hub.unsubscribe(fast)
    hub.unsubscribe(slow)
    assert hub.subscribers == 0 and hub.runs == {}
    hub.feed.close()


def test_subscriber_wakes_its_stream_on_an_item_or_its_end_and_times_out_otherwise() -> None:
    from api_service.sse import Subscriber

    async def scenario() -> None:
        sub = Subscriber("r1", buffer=2)
        assert await sub.wait(0.01) is False, "nothing came: the heartbeat's turn"
        waiting = asyncio.ensure_future(sub.wait(60))
        await asyncio.sleep(0)
        assert sub.put((STEP, 1, b"a")) and await waiting is True
        assert sub.put((STEP, 2, b"b")) and not sub.put((STEP, 3, b"c")), "a third item overflows 2"
        assert [item[1] for item in sub.take()] == [1, 2] and sub.take() == []
        waiting = asyncio.ensure_future(sub.wait(60))
        await asyncio.sleep(0)
        sub.close("bye")
        assert await waiting is True and sub.end == b": bye\n\n"
        assert sub.waiter is None, "no future kept between waits"

    asyncio.run(scenario())
