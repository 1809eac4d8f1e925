"""A flow's emit_event delivers durably, once: a replayed emission appends no second delivery."""

from __future__ import annotations

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, WaitReason, WaitState

from runner_service.events import make_emit_event_handler
from shared_store.run_store import SqliteRunStore


def test_a_replayed_emission_delivers_once(db) -> None:
    store = SqliteRunStore(db)
    waiter = RunState(
        run_id="waiter",
        workflow_id="w@1:f",
        status=RunStatus.WAITING,
        current_node="wait",
        session_id="s1",
        waiting=WaitState(reason=WaitReason.EVENT, wait_key="evt:session:s1:ping"),
    )
    store.save(waiter)
    emitter = RunState(
        run_id="emitter", workflow_id="w@1:g", status=RunStatus.RUNNING, current_node="emit", session_id="s1"
    )
    effect = Effect(type=EffectType.EMIT_EVENT, payload={"name": "ping", "payload": {"n": 1}})
    handle = make_emit_event_handler(db)
    first = handle(emitter, effect, None)
    replay = handle(emitter, effect, None)  # the same issuance again, as after a crash before the save
    assert first.status == "completed" and first.result["delivered_to"] == ["waiter"]
    assert replay.result["delivered_to"] == ["waiter"]
    rows = db.query("SELECT command_id, type, status FROM commands WHERE run_id = 'waiter'")
    assert len(rows) == 1 and rows[0][1:] == ("deliver_event", "pending")
    emitter.vars["_runtime"] = {"effect_seq": 1}  # a genuine later emission is a new event
    handle(emitter, effect, None)
    assert db.query_one("SELECT count(*) FROM commands WHERE run_id = 'waiter'") == (2,)
