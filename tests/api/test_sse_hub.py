"""The SSE hub alone: one feed poll serves every subscriber; a lagging one is closed, others unaffected."""

from __future__ import annotations

import asyncio

from abstractruntime.core.models import RunState, RunStatus, StepRecord

from api_service.sse import DONE, STEP, SseHub
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.run_store import SqliteRunStore
from shared_store.run_views import RunProgress, run_progress


def _hub_on_a_new_run(
    db, run_id: str, buffer: int
) -> tuple[SqliteRunStore, SqliteLedgerStore, RunState, SseHub, RunProgress]:
    """A saved run with no records, a hub at the feed's head, and the run's row as a stream reads it."""
    runs, ledger = SqliteRunStore(db), SqliteLedgerStore(db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id=run_id)
    runs.save(run)
    hub = SseHub(db, buffer=buffer, done_grace_s=60)
    hub._cursor = hub.feed.head()
    progress = run_progress(db, run_id)
    assert progress is not None
    return runs, ledger, run, hub, progress


def test_fan_out_lagging_client_and_done(db) -> None:
    runs, ledger, run, hub, progress = _hub_on_a_new_run(db, "r1", buffer=4)
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


def _closing_record(run: RunState) -> StepRecord:
    return StepRecord.start(
        run=run, node_id="n", effect=None, idempotency_key="system:terminal_status:completed"
    )


def test_a_stream_subscribing_with_a_stale_row_still_gets_what_committed_before(db) -> None:
    """A stream reads its run's row in a thread and subscribes later: what commits in between was
    already past the hub's feed position. The track's first poll reads the row again and sends it."""
    runs, ledger = SqliteRunStore(db), SqliteLedgerStore(db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id="stale")
    runs.save(run)
    hub = SseHub(db, buffer=10, done_grace_s=60)
    stale = run_progress(db, "stale")  # the stream's read, before the run went on
    assert stale is not None and stale.ledger_len == 0 and not stale.terminal
    for _ in range(2):
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    run.status = RunStatus.COMPLETED
    runs.save(run)
    ledger.append(_closing_record(run))
    hub._cursor = hub.feed.head()  # the hub polled past those commits while nobody watched the run
    sub, track = hub.subscribe("stale", stale)
    assert not track.final
    hub.poll_once()
    items = sub.take()
    assert [(i[0], i[1]) for i in items] == [(STEP, 1), (STEP, 2), (STEP, 3), (DONE, "completed")]
    assert items[-1][2] == 3 and track.final
    hub.unsubscribe(sub)
    hub.feed.close()


def test_more_new_records_than_a_queue_holds_end_the_streams_and_the_hub_moves_on(db) -> None:
    _, ledger, run, hub, progress = _hub_on_a_new_run(db, "burst", buffer=4)
    sub, track = hub.subscribe("burst", progress)
    hub.poll_once()
    for _ in range(9):
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    hub.poll_once()
    assert sub.take() == [] and sub.end is not None and b"Last-Event-ID" in sub.end
    assert track.ledger_len == 9, "the track jumps past what nobody could have queued"
    late, _ = hub.subscribe("burst", progress)
    ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
    hub.poll_once()
    assert [(i[0], i[1]) for i in late.take()] == [(STEP, 10)]
    hub.feed.close()


def test_an_idle_hub_reads_nothing_and_a_subscription_wakes_it(db) -> None:
    """No subscriber: the poller does not query the feed at all (it used to read every committed
    entry every 0.25 s); the first subscription wakes it, and changes reach that subscriber."""
    runs, ledger = SqliteRunStore(db), SqliteLedgerStore(db)
    run = RunState.new(workflow_id="w", entry_node="n", run_id="idle")
    runs.save(run)

    async def scenario() -> None:
        hub = SseHub(db, poll_s=0.01, done_grace_s=60)
        hub.start()
        for _ in range(30):  # commits while nobody watches, and the poller's turns in between
            ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
            await asyncio.sleep(0.02)
        assert hub.feed.queries == 0
        progress = run_progress(db, "idle")
        assert progress is not None and progress.ledger_len == 30
        sub, _ = hub.subscribe("idle", progress)
        ledger.append(StepRecord.start(run=run, node_id="n", effect=None))
        for _ in range(500):
            if sub.items:
                break
            await asyncio.sleep(0.01)
        assert [(i[0], i[1]) for i in sub.take()] == [(STEP, 31)]
        hub.unsubscribe(sub)
        await hub.stop()

    asyncio.run(scenario())
