"""abstractruntime's real Runtime on our stores, driven through the sample bundles."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from abstractruntime import Runtime
from abstractruntime.core.models import RunStatus, WaitReason

from shared_store import LeaseHolder
from shared_store.artifact_store import SqliteArtifactStore
from shared_store.ledger_store import SqliteLedgerStore
from shared_store.reads import ledger_page
from shared_store.run_store import SqliteRunStore
from tests.conftest import load_spec


@pytest.fixture(params=["fenced", "unleased"])
def runtime(request, db, tmp_path: Path) -> Runtime:
    fence = LeaseHolder(db, "conformance") if request.param == "fenced" else None
    return Runtime(
        run_store=SqliteRunStore(db, fence=fence),
        ledger_store=SqliteLedgerStore(db, fence=fence),
        artifact_store=SqliteArtifactStore(db, tmp_path / "artifacts", fence=fence),
    )


def _seqs(db, run_id: str) -> list[int]:
    return [row[0] for row in db.query("SELECT seq FROM ledger WHERE run_id = ? ORDER BY seq", (run_id,))]


def test_bench_echo_completes(runtime: Runtime, db, flows: Path) -> None:
    spec = load_spec(flows, "bench-echo@1.0.0")
    run_id = runtime.start(workflow=spec, vars={"message": "hello"})
    state = runtime.tick(workflow=spec, run_id=run_id)
    assert state.status == RunStatus.COMPLETED
    assert state.output == {"result": "hello", "success": True}
    reloaded = runtime.run_store.load(run_id)
    assert reloaded.status == RunStatus.COMPLETED and reloaded.output == state.output
    records = runtime.ledger_store.list(run_id)
    assert records and records[-1]["status"] == "completed"
    assert _seqs(db, run_id) == list(range(1, len(records) + 1))


def test_bench_ask_waits_then_resume_completes(runtime: Runtime, db, flows: Path) -> None:
    spec = load_spec(flows, "bench-ask@1.0.0")
    run_id = runtime.start(workflow=spec, vars={})
    state = runtime.tick(workflow=spec, run_id=run_id)
    assert state.status == RunStatus.WAITING
    assert state.waiting.reason == WaitReason.USER and state.waiting.prompt == "continue?"
    # A user wait is not due: no runner should pick it up until a command arrives.
    assert db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,)) == (None,)
    state = runtime.resume(
        workflow=spec, run_id=run_id, wait_key=state.waiting.wait_key, payload={"response": "yes"}
    )
    assert state.status == RunStatus.COMPLETED
    statuses = [r["status"] for r in runtime.ledger_store.list(run_id)]
    assert statuses[:2] == ["started", "waiting"] and statuses[-1] == "completed"


def test_demo_wait_goes_through_ask_user_and_wait_event(runtime: Runtime, db, flows: Path) -> None:
    spec = load_spec(flows, "demo-wait@0.1.0")
    run_id = runtime.start(workflow=spec, vars={"x": 4})
    state = runtime.tick(workflow=spec, run_id=run_id)
    assert state.waiting.reason == WaitReason.USER and state.waiting.choices == ["yes", "no"]
    state = runtime.resume(
        workflow=spec, run_id=run_id, wait_key=state.waiting.wait_key, payload={"response": "yes"}
    )
    assert state.waiting.reason == WaitReason.EVENT and state.waiting.wait_key == "demo:approval"
    store = runtime.run_store
    assert [r.run_id for r in store.list_event_waiters(wait_keys=["demo:approval"])] == [run_id]
    assert store.list_event_waiters(wait_keys=["other"]) == []
    assert [r.run_id for r in store.list_event_waiters_by_prefix(prefix="demo:")] == [run_id]
    state = runtime.resume(workflow=spec, run_id=run_id, wait_key="demo:approval", payload={"approved": True})
    assert state.status == RunStatus.COMPLETED
    assert state.output == {
        "doubled": 8.0,
        "y": 9.0,
        "answer": "yes",
        "event": {"approved": True},
        "success": True,
    }
    assert store.list_event_waiters(wait_keys=["demo:approval"]) == []


def test_pause_resume_cancel(runtime: Runtime, db, flows: Path) -> None:
    spec = load_spec(flows, "bench-tick@1.0.0")
    run_id = runtime.start(workflow=spec, vars={"n": 3, "delay": 3600})
    state = runtime.tick(workflow=spec, run_id=run_id)
    assert state.status == RunStatus.WAITING and state.waiting.reason == WaitReason.UNTIL
    due = db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,))[0]
    assert due is not None, "a wait_until run is due at its deadline"

    runtime.pause_run(run_id, reason="maintenance")
    assert runtime.run_store.probe_control(run_id) == ("waiting", True)
    assert db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,)) == (None,)
    # A paused run does not advance when ticked.
    assert runtime.tick(workflow=spec, run_id=run_id).status == RunStatus.WAITING
    runtime.resume_run(run_id)
    assert runtime.run_store.probe_control(run_id) == ("waiting", False)
    assert db.query_one("SELECT due_at FROM runs WHERE run_id = ?", (run_id,)) == (due,)

    runtime.cancel_run(run_id, reason="stop")
    assert runtime.run_store.load(run_id).status == RunStatus.CANCELLED
    assert runtime.tick(workflow=spec, run_id=run_id).status == RunStatus.CANCELLED
    assert db.query_one("SELECT status, due_at FROM runs WHERE run_id = ?", (run_id,)) == ("cancelled", None)


def test_queryable_run_store(runtime: Runtime, flows: Path) -> None:
    ask = load_spec(flows, "bench-ask@1.0.0")
    echo = load_spec(flows, "bench-echo@1.0.0")
    waiting = [runtime.start(workflow=ask, vars={}) for _ in range(3)]
    for run_id in waiting:
        runtime.tick(workflow=ask, run_id=run_id)
    done = runtime.start(workflow=echo, vars={"message": "x"}, parent_run_id=waiting[0])
    runtime.tick(workflow=echo, run_id=done)
    store = runtime.run_store
    assert {r.run_id for r in store.list_runs(status=RunStatus.WAITING)} == set(waiting)
    assert {r.run_id for r in store.list_runs(wait_reason=WaitReason.USER)} == set(waiting)
    assert [r.run_id for r in store.list_runs(workflow_id=echo.workflow_id)] == [done]
    assert len(store.list_runs(limit=2)) == 2
    assert [r.run_id for r in store.list_children(parent_run_id=waiting[0])] == [done]
    assert store.list_children(parent_run_id=waiting[0], status=RunStatus.RUNNING) == []
    assert store.list_due_wait_until(now_iso="9999-01-01T00:00:00+00:00") == []


def test_wait_until_due_listing(runtime: Runtime, flows: Path) -> None:
    spec = load_spec(flows, "bench-tick@1.0.0")
    run_id = runtime.start(workflow=spec, vars={"n": 2, "delay": 60})
    state = runtime.tick(workflow=spec, run_id=run_id)
    store = runtime.run_store
    assert store.list_due_wait_until(now_iso="2000-01-01T00:00:00+00:00") == []
    assert [r.run_id for r in store.list_due_wait_until(now_iso="9999-01-01T00:00:00+00:00")] == [run_id]
    assert store.next_wait_deadline() == state.waiting.until


def test_find_completed_result_is_indexed(runtime: Runtime, db, flows: Path) -> None:
    spec = load_spec(flows, "chain-effects-200@0.1.0")
    run_id = runtime.start(workflow=spec, vars={})
    assert runtime.tick(workflow=spec, run_id=run_id, max_steps=1000).status == RunStatus.COMPLETED
    records = runtime.ledger_store.list(run_id)
    completed = [r for r in records if r["status"] == "completed" and r.get("idempotency_key")]
    assert completed, "chain-effects-200 writes keyed effect records"
    probe = completed[len(completed) // 2]
    assert runtime.ledger_store.find_completed_result(run_id, probe["idempotency_key"]) == probe["result"]
    assert runtime.ledger_store.find_completed_result(run_id, "no-such-key") is None
    assert _seqs(db, run_id) == list(range(1, len(records) + 1))


def test_ledger_pages_follow_the_cursor(runtime: Runtime, db, flows: Path) -> None:
    spec = load_spec(flows, "bench-loop@1.0.0")
    run_id = runtime.start(workflow=spec, vars={"n": 20})
    runtime.tick(workflow=spec, run_id=run_id, max_steps=1000)
    everything = runtime.ledger_store.list(run_id)
    seen: list[dict] = []
    after = 0
    while True:
        page = ledger_page(db, run_id, after=after, limit=7)
        if not page.records:
            assert page.next_after == after
            break
        seen.extend(json.loads(r) for r in page.records)
        after = page.next_after
    assert seen == everything and after == len(everything)
    with pytest.raises(ValueError, match="after must be >= 0"):
        ledger_page(db, run_id, after=-1)


def test_second_process_sees_the_same_state(runtime: Runtime, db, db_path: Path, flows: Path) -> None:
    spec = load_spec(flows, "demo-wait@0.1.0")
    run_id = runtime.start(workflow=spec, vars={"x": 5})
    state = runtime.tick(workflow=spec, run_id=run_id)
    script = textwrap.dedent(
        f"""
        import json
        from shared_store import open_database
        from shared_store.run_store import SqliteRunStore
        from shared_store.ledger_store import SqliteLedgerStore
        db = open_database({getattr(db, "url", None) or str(db_path)!r})
        run = SqliteRunStore(db).load({run_id!r})
        ledger = SqliteLedgerStore(db).list({run_id!r})
        print(json.dumps({{"status": run.status.value, "wait_key": run.waiting.wait_key,
                          "vars_x": run.vars.get("x"), "ledger": ledger}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["status"] == "waiting" and seen["wait_key"] == state.waiting.wait_key and seen["vars_x"] == 5
    assert seen["ledger"] == runtime.ledger_store.list(run_id)
