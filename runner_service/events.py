"""Durable events: emit_event (a client command, or a flow's EMIT_EVENT effect) → deliveries.

An event is never delivered by writing another run's state (one writer per run): it becomes one
`deliver_event` command per waiting run, found through the runs_event_waiters index, appended in
one transaction with deterministic ids (a retried dispatch appends nothing twice). The holder of
each run applies its delivery like any other command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import apsw
from abstractruntime.core.event_keys import build_event_wait_key
from abstractruntime.core.models import Effect, RunState
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import EffectOutcome

from shared_store import Database
from shared_store import queries as q
from shared_store.codec import encode, utc_now_iso
from shared_store.contracts import check_command_payload
from shared_store.inbox import Command, command_from_row

EVENT_SCOPES = ("session", "run", "workflow", "global")
DELIVER_EVENT = "deliver_event"


class BadEvent(ValueError):
    """An emit_event whose payload cannot name a wait key."""


def wait_keys(
    name: str, scope: str, *, session_id: str | None, workflow_id: str | None, run_id: str | None
) -> list[str]:
    """The key runs wait on for this event, and the scope's wildcard key ('*' listeners)."""
    ids = {"session_id": session_id, "workflow_id": workflow_id, "run_id": run_id}
    try:
        key = build_event_wait_key(scope=scope, name=name, **ids)
        wildcard = build_event_wait_key(scope=scope, name="*", **ids)
    except ValueError as exc:
        raise BadEvent(str(exc)) from None
    return [key] if wildcard == key else [key, wildcard]


@dataclass(frozen=True)
class EventTarget:
    """Who an event reaches: runs waiting on its scoped keys, or on its plain name within the scope."""

    name: str
    scope: str
    scope_id: str
    keys: list[str]


def event_target(
    name: str, scope: str, *, session_id: str | None, workflow_id: str | None, run_id: str | None
):
    if scope not in EVENT_SCOPES:
        raise BadEvent(f"unknown event scope {scope!r}; scopes: {', '.join(EVENT_SCOPES)}")
    keys = wait_keys(name, scope, session_id=session_id, workflow_id=workflow_id, run_id=run_id)
    scope_id = {"session": session_id, "workflow": workflow_id, "run": run_id}.get(scope) or "global"
    return EventTarget(name, scope, str(scope_id), keys)


def deliver(
    conn: apsw.Connection,
    *,
    origin: str,
    target: EventTarget,
    envelope: dict[str, Any],
    client_id: str | None,
    request_id: str | None = None,
) -> list[str]:
    """Append a deliver_event command to every unpaused run the event reaches; their run ids."""
    delivered: list[str] = []
    now = time.time()
    waiters = dict(conn.execute(q.EVENT_WAITER_IDS, (encode(target.keys).decode(),)).fetchall())
    plain = {"name": target.name, "scope": target.scope, "scope_id": target.scope_id}
    waiters.update(conn.execute(q.EVENT_WAITER_IDS_PLAIN, plain).fetchall())
    for run_id, wait_key in sorted(waiters.items()):
        params = {
            "command_id": f"{origin}>{run_id}",
            "run_id": run_id,
            "type": DELIVER_EVENT,
            "payload": encode({"wait_key": wait_key, "event": envelope}),
            "ts": utc_now_iso(),
            "client_id": client_id,
            "request_id": request_id,
        }
        conn.execute(q.INSERT_COMMAND, params).fetchall()
        conn.execute(q.WAKE_RUN, {"run_id": run_id, "now": now})
        delivered.append(str(run_id))
    return delivered


def _client_event(conn: apsw.Connection, command: Command) -> tuple[EventTarget, dict[str, Any]]:
    payload = command.payload
    check_command_payload("emit_event", payload, refuse=BadEvent)  # the API's rule (shared_store.contracts)
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadEvent("emit_event needs payload.name (the event name)")
    scope = str(payload.get("scope") or "session").strip().lower()
    row = conn.execute(q.RUN_SCOPE, (command.run_id,)).fetchone()
    run_session, run_workflow = (row[0], row[1]) if row else (None, None)
    session_id = payload.get("session_id") or run_session or command.run_id
    workflow_id = payload.get("workflow_id") or run_workflow
    target = event_target(name, scope, session_id=session_id, workflow_id=workflow_id, run_id=command.run_id)
    event_payload = payload.get("payload")
    envelope = {
        "event_id": payload.get("event_id") or command.command_id,
        "name": name,
        "scope": scope,
        "session_id": session_id if scope == "session" else None,
        "payload": event_payload if isinstance(event_payload, dict) else {"value": event_payload},
        "emitted_at": command.ts,
        "emitter": {"command_id": command.command_id, "client_id": command.client_id},
    }
    return target, envelope


def dispatch_pending_events(db: Database, *, limit: int = 100) -> int:
    """Turn pending emit_event commands into deliveries; each gets its outcome in the same transaction.

    Whichever runner's BEGIN IMMEDIATE comes first dispatches a command; the next finds it resolved."""
    with db.write() as conn:
        commands = [command_from_row(row) for row in conn.execute(q.PENDING_EVENTS, (limit,)).fetchall()]
        for command in commands:
            status, error = "applied", None
            try:
                target, envelope = _client_event(conn, command)
                deliver(
                    conn,
                    origin=command.command_id,
                    target=target,
                    envelope=envelope,
                    client_id=command.client_id,
                    request_id=command.request_id,
                )
            except BadEvent as exc:
                status, error = "rejected", str(exc)
            conn.execute(
                q.RESOLVE_COMMAND_UNLEASED,
                {"seq": command.seq, "status": status, "error": error, "applied_at": utc_now_iso()},
            )
    return len(commands)


def make_emit_event_handler(db: Database):
    """The EMIT_EVENT effect of a flow, done the durable way: deliveries appended, nothing resumed here.

    Without an explicit event_id, the event is named by the effect's idempotency key (run, node,
    payload, issuance counter): a replay after a crash recomputes the same key, so its deliveries
    (deterministic command ids) are not appended twice."""
    policy = DefaultEffectPolicy()

    def handle(run: RunState, effect: Effect, default_next_node: str | None) -> EffectOutcome:
        payload = effect.payload or {}
        name = str(payload.get("name") or payload.get("event_name") or "").strip()
        scope = str(payload.get("scope") or "session").strip().lower()
        session_id = payload.get("session_id") or run.session_id or run.run_id
        try:
            target = event_target(
                name, scope, session_id=str(session_id), workflow_id=run.workflow_id, run_id=run.run_id
            )
        except BadEvent as exc:
            return EffectOutcome.failed(f"emit_event invalid payload: {exc}", retryable=False)
        event_payload = payload.get("payload")
        event_id = payload.get("event_id") or (
            f"{run.run_id}:{policy.idempotency_key(run=run, node_id=run.current_node, effect=effect)}"
        )
        envelope = {
            "event_id": event_id,
            "name": name,
            "scope": scope,
            "session_id": str(session_id) if scope == "session" else None,
            "payload": dict(event_payload) if isinstance(event_payload, dict) else {"value": event_payload},
            "emitted_at": utc_now_iso(),
            "emitter": {"run_id": run.run_id, "workflow_id": run.workflow_id, "node_id": run.current_node},
        }
        with db.write() as conn:
            origin = f"event:{envelope['event_id']}"
            delivered = deliver(conn, origin=origin, target=target, envelope=envelope, client_id=None)
        return EffectOutcome.completed(
            {
                "wait_key": target.keys[0],
                "name": name,
                "scope": scope,
                "delivered": len(delivered),
                "delivered_to": delivered,
            }
        )

    return handle
