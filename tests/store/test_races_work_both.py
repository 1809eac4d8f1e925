"""Races on the store's other claimed work, on both backends (the `db` fixture): pending-event dispatch,
webhook deliveries, bulk expansion and a concurrency key's slots. SQLite hands each to one writer at a
time; under PostgreSQL's READ COMMITTED each must lock what it takes (FOR UPDATE SKIP LOCKED, or the
key's lock) or two runners take the same thing. Counts, never durations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abstractruntime.core.models import RunStatus

from shared_store import LeaseHolder
from shared_store.bulk_ops import create_bulk, expand_some, get_bulk
from shared_store.bundles import import_flows_dir, resolve_workflow
from shared_store.event_delivery import EventTarget, dispatch_pending_events
from shared_store.flow_control import FlowRequest, FlowSettings, admit
from shared_store.inbox import append_command
from shared_store.run_filter import RunFilter
from shared_store.run_store import SqliteRunStore
from shared_store.starts import enqueue_run
from shared_store.webhooks import claim_due, create_webhook
from tests.store.races import TIMEOUT_S, due_runs, together, until_blocked


def test_concurrent_dispatchers_take_each_pending_event_once(db) -> None:
    (run_id,) = due_runs(db, 1)
    for i in range(60):
        append_command(db, command_id=f"e{i}", run_id=run_id, type="emit_event", payload={"name": "x"})
    interpreted: list[str] = []
    lock = threading.Lock()

    def interpret(command: Any, _scope: Any) -> tuple[EventTarget, dict[str, Any]]:
        with lock:
            interpreted.append(command.command_id)
        return EventTarget(name="x", scope="session", scope_id="nobody", keys=["evt:nobody"]), {"name": "x"}

    def dispatcher() -> int:
        total = empty = 0
        while empty < 3:
            n = dispatch_pending_events(db, interpret, limit=4)
            total += n
            empty = 0 if n else empty + 1
        return total

    counts = together([dispatcher] * 3)
    assert sum(counts) == 60 and sorted(interpreted) == sorted(f"e{i}" for i in range(60)), (
        "each pending event dispatched by one runner, once"
    )
    assert db.query_one("SELECT count(*) FROM commands WHERE status = 'pending'") == (0,)


def test_concurrent_senders_claim_each_webhook_delivery_once(db) -> None:
    create_webhook(db, url="http://127.0.0.1:9/hook", events=["run.completed"])
    store = SqliteRunStore(db)
    for run_id in due_runs(db, 50, prefix="h"):
        run = store.load(run_id)
        run.status = RunStatus.COMPLETED
        store.save(run)
    assert db.query_one("SELECT count(*) FROM webhook_deliveries") == (50,)

    def sender() -> list[str]:
        got: list[str] = []
        empty = 0
        while empty < 3:
            claimed = claim_due(db, n=3, claim_s=600)
            empty = 0 if claimed else empty + 1
            got.extend(c.delivery_id for c in claimed)
        return got

    per_sender = together([sender] * 3)
    claimed = [d for got in per_sender for d in got]
    assert len(claimed) == 50 and len(set(claimed)) == 50, "no delivery taken by two senders"
    assert db.query_one("SELECT count(*) FROM webhook_deliveries WHERE attempts = 1") == (50,)


def test_concurrent_expanders_expand_a_bulk_operation_once(db) -> None:
    due_runs(db, 120, prefix="b")
    _, created = create_bulk(db, bulk_id="bulk1", type="pause", run_filter=RunFilter(), payload={})
    assert created

    def expander() -> int:
        total = empty = 0
        while empty < 3:
            n = expand_some(db, batch=7)
            total += n
            empty = 0 if n else empty + 1
        return total

    counts = together([expander] * 3)
    assert sum(counts) == 120, counts
    assert get_bulk(db, "bulk1").matched == 120
    assert db.query_one("SELECT count(*) FROM commands WHERE command_id LIKE 'bulk:bulk1:%'") == (120,)


def test_a_keys_slots_are_never_over_granted_while_runs_end_and_start(db, flows: Path) -> None:
    """Starts of a limited key (ADMIT_HELD) race slots handed on by ending runs (the trigger): both
    count the key's free slots, so both must take the key's lock first."""
    assert import_flows_dir(db, flows) == []
    resolved = resolve_workflow(db, bundle_id="bench-echo")
    flow = FlowSettings.resolve(FlowRequest(concurrency_key="k", max_concurrent=2), {})

    def start() -> str:
        return enqueue_run(db, resolved=resolved, input_data={}, flow=flow).run_id

    def live_slots() -> int:
        row = db.query_one(
            "SELECT count(*) FROM runs WHERE concurrency_key = 'k' AND slot = 1 "
            "AND status NOT IN ('completed', 'failed', 'cancelled')"
        )
        return int(row[0])

    holding = [start(), start()]
    for round_ in range(4):
        assert live_slots() == 2, round_

        def end(run_id: str) -> Callable[[], int]:
            return lambda: db.execute_write(
                "UPDATE runs SET status = 'completed' WHERE run_id = ?", (run_id,)
            )

        results = together([end(run_id) for run_id in holding] + [start] * 4)
        assert live_slots() == 2, f"round {round_}: slots over-granted"
        holding = [
            row[0]
            for row in db.query(
                "SELECT run_id FROM runs WHERE concurrency_key = 'k' AND slot = 1 "
                "AND status NOT IN ('completed', 'failed', 'cancelled')"
            )
        ]
        assert len(results) == 6
    # 18 started, 8 ended: 2 of the 10 live runs hold the slots, the other 8 wait held (none lost).
    assert db.query_one("SELECT count(*) FROM runs WHERE concurrency_key = 'k' AND hold = 1") == (8,)


def test_two_runners_admitting_runs_of_a_key_never_take_one_free_slot_twice(db, flows: Path) -> None:
    assert import_flows_dir(db, flows) == []
    resolved = resolve_workflow(db, bundle_id="bench-echo")

    def start(**fields: Any) -> str:
        flow = FlowSettings.resolve(FlowRequest(concurrency_key="k", **fields), {})
        return enqueue_run(db, resolved=resolved, input_data={}, flow=flow).run_id

    x, y = start(), start()  # started before the key had a limit: neither held nor holding a slot
    first = start(max_concurrent=2)  # sets the limit and takes one of its 2 slots at once
    assert db.query_one("SELECT slot, hold FROM runs WHERE run_id = ?", (first,)) == (1, 0)
    runner = LeaseHolder(db, "r", lease_s=300)
    assert {lease.run_id for lease in runner.claim(10)} == {x, y, first}
    outcome: dict[str, Any] = {}
    admitting = threading.Event()

    def admit_y() -> None:
        admitting.set()
        outcome["y"] = admit(db, runner, y)

    other = threading.Thread(target=admit_y)
    with db.group():  # x's admission, committed when this block ends
        assert admit(db, runner, x).go
        other.start()
        assert admitting.wait(TIMEOUT_S)
        until_blocked(db, other)
    other.join(TIMEOUT_S)
    assert (outcome["y"].go, outcome["y"].why) == (False, "held"), outcome
    assert db.query_one("SELECT count(*) FROM runs WHERE concurrency_key = 'k' AND slot = 1") == (2,)
