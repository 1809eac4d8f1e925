"""Applying one durable command to a run this runner holds.

A command's outcome commits in the same transaction as the state it produced (the run store's
`with_next_save`), so a crash between the two can neither lose an applied command nor apply it
twice. A command that changes nothing is resolved on its own. pause / resume / cancel reach the
run's descendants as derived commands, applied by whichever runner holds each descendant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, WaitReason
from abstractruntime.core.runtime import Runtime

from shared_store import Database
from shared_store import queries as q
from shared_store.codec import encode, utc_now_iso
from shared_store.contracts import check_command_payload
from shared_store.inbox import Command
from shared_store.leases import LeaseHolder
from shared_store.run_store import SqliteRunStore

from .bundle_host import BundleHost
from .events import DELIVER_EVENT

CLIENT_TYPES = ("pause", "resume", "cancel", "emit_event", "update_schedule", "compact_memory")
CASCADING = ("pause", "resume", "cancel")
TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class Rejected(Exception):
    """The command cannot apply to this run; the message is the reason recorded for the client."""


@dataclass
class CommandContext:
    db: Database
    runtime: Runtime
    run_store: SqliteRunStore
    fence: LeaseHolder
    host: BundleHost


def _outcome(command: Command, status: str, error: str | None, fence: LeaseHolder) -> dict[str, Any]:
    return {
        "seq": command.seq,
        "status": status,
        "error": error,
        "applied_at": utc_now_iso(),
        "owner": fence.owner,
        "epoch": fence.epoch(command.run_id),
    }


def apply_command(ctx: CommandContext, command: Command) -> tuple[str, str | None]:
    """Apply and resolve one command; returns (status, error). LeaseLost propagates."""
    run_id = command.run_id
    ctx.run_store.with_next_save(
        run_id, q.RESOLVE_COMMAND_FENCED, _outcome(command, "applied", None, ctx.fence)
    )
    try:
        with deferred_ledger(ctx, run_id):
            _apply(ctx, command)
    except Rejected as exc:
        status, error = "rejected", str(exc) or type(exc).__name__
    except (KeyError, ValueError, TypeError) as exc:  # the runtime's refusals ("Run is not waiting", ...)
        status, error = "rejected", f"{type(exc).__name__}: {exc}"
    else:
        status, error = "applied", None
    leftover = ctx.run_store.drop_pending(run_id)
    if leftover or status == "rejected":
        # No save carried the outcome (a no-op, or a refusal): record it on its own, with the records
        # of an applied command that changed no state (a refused one's records are dropped with it).
        with ctx.db.write() as conn:
            if status == "applied":
                for sql, params in leftover:
                    if sql is not q.RESOLVE_COMMAND_FENCED:
                        conn.execute(sql, params)
            conn.execute(q.RESOLVE_COMMAND_FENCED, _outcome(command, status, error, ctx.fence))
            unresolved = conn.changes() == 0 and conn.execute(q.COMMAND_STATUS, (command.seq,)).fetchone()
        if unresolved and unresolved[0] == "pending":
            raise ctx.fence.lost(run_id)  # the fenced update found the run no longer ours
    return status, error


@contextmanager
def deferred_ledger(ctx: CommandContext, run_id: str) -> Iterator[None]:
    """Ledger appends for run_id join its next save's transaction (see SqliteLedgerStore)."""
    ledger = ctx.runtime.ledger_store
    defer = getattr(ledger, "defer_until_save", None)
    if defer is None:
        yield
        return
    defer(ctx.run_store, run_id)
    try:
        yield
    finally:
        defer(ctx.run_store, None)


def _load(ctx: CommandContext, run_id: str) -> RunState:
    run = ctx.run_store.load(run_id)
    if run is None:
        raise Rejected(f"run {run_id} has not started")
    return run


def _apply(ctx: CommandContext, command: Command) -> None:
    from shared_store.schedules import get_schedule

    from . import schedules

    payload = command.payload
    kind = command.type
    check_command_payload(kind, payload, refuse=Rejected)  # the rule the API applied (shared_store.contracts)
    scheduled = get_schedule(ctx.db, command.run_id) is not None
    if kind == "pause":
        ctx.runtime.pause_run(command.run_id, reason=_text(payload.get("reason")))
    elif kind == "cancel":
        status = _load(ctx, command.run_id).status
        if status in TERMINAL:
            raise Rejected(f"run already {status.value}")
        if scheduled:
            schedules.cancel_schedule_with_run(ctx, command.run_id)
        ctx.runtime.cancel_run(
            command.run_id, reason=_text(payload.get("reason")) or "Cancelled", cancelled_by="command"
        )
    elif kind == "resume" and ("payload" in payload or "wait_key" in payload):
        _resume_wait(ctx, command.run_id, payload)
    elif kind == "resume":
        ctx.runtime.resume_run(command.run_id)
    elif kind == DELIVER_EVENT:
        _deliver(ctx, command.run_id, payload)
    elif kind == "compact_memory":
        _compact_memory(ctx, command.run_id, payload)
    elif kind == "update_schedule":
        schedules.update_schedule(ctx, command.run_id, payload)
    else:
        raise Rejected(f"unknown command type {kind!r}; types: {', '.join(CLIENT_TYPES)}")
    # A schedule's children already started finish on their own unless asked ({"cascade": true}).
    if kind in CASCADING and (not scheduled or payload.get("cascade") is True):
        cascade(ctx.db, command)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _resume_wait(ctx: CommandContext, run_id: str, payload: dict[str, Any]) -> None:
    run = _load(ctx, run_id)
    if run.status != RunStatus.WAITING or run.waiting is None:
        raise Rejected(f"run is {run.status.value}, not waiting: nothing to resume")
    data = payload.get("payload", {})
    if not isinstance(data, dict):
        raise Rejected("resume payload.payload must be an object")
    wait_key = payload.get("wait_key") or run.waiting.wait_key
    ctx.runtime.resume(
        workflow=ctx.host.spec(run.workflow_id), run_id=run_id, wait_key=wait_key, payload=data, max_steps=0
    )


def _deliver(ctx: CommandContext, run_id: str, payload: dict[str, Any]) -> None:
    run = _load(ctx, run_id)
    wait_key = payload.get("wait_key")
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or waiting.wait_key != wait_key:
        raise Rejected(f"run no longer waits on {wait_key!r}")
    ctx.runtime.resume(
        workflow=ctx.host.spec(run.workflow_id),
        run_id=run_id,
        wait_key=wait_key,
        payload=dict(payload.get("event") or {}),
        max_steps=0,
    )


def _compact_memory(ctx: CommandContext, run_id: str, payload: dict[str, Any]) -> None:
    run = _load(ctx, run_id)
    if run.status in TERMINAL:
        raise Rejected(f"run is {run.status.value}; its memory is no longer compacted")
    handler = ctx.runtime._handlers.get(EffectType.MEMORY_COMPACT)  # the runtime's own compaction
    if handler is None:
        raise Rejected("this runtime has no memory compaction")
    outcome = handler(run, Effect(type=EffectType.MEMORY_COMPACT, payload=dict(payload)), None)
    if outcome.status != "completed":
        raise Rejected(f"compact_memory failed: {outcome.error or outcome.status}")
    ctx.run_store.save(run)


def cascade(db: Database, command: Command) -> int:
    """Pass pause / resume / cancel on to the run's unfinished children (each cascades further)."""
    children = [row[0] for row in db.query(q.ACTIVE_CHILDREN, (command.run_id,))]
    if not children:
        return 0
    now = datetime.now(UTC)
    with db.write() as conn:
        for child in children:
            params = {
                "command_id": f"{command.command_id}>{child}",
                "run_id": child,
                "type": command.type,
                "payload": encode({**command.payload, "cascaded_from": command.run_id}),
                "ts": now.isoformat(),
                "client_id": command.client_id,
                "request_id": command.request_id,
            }
            conn.execute(q.INSERT_COMMAND, params).fetchall()
            conn.execute(q.WAKE_RUN, {"run_id": child, "now": now.timestamp()})
    return len(children)


def child_outcome(child: RunState) -> dict[str, Any]:
    """What a parent waiting on a finished child is resumed with (the runtime's subworkflow shape)."""
    output: dict[str, Any] = (
        dict(child.output) if isinstance(child.output, dict) else {"result": child.output}
    )
    if child.status != RunStatus.COMPLETED:
        output.setdefault("success", False)
        if child.status == RunStatus.CANCELLED:
            output.setdefault("cancelled", True)
        if child.error:
            output.setdefault("error", child.error)
    return {"sub_run_id": child.run_id, "output": output}


def resume_finished_child(ctx: CommandContext, run: RunState) -> bool:
    """Resume a parent whose awaited child has finished; False when there is nothing to do."""
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or waiting.reason != WaitReason.SUBWORKFLOW:
        return False
    from shared_store.run_store import awaited_child

    child_id = awaited_child(run)
    child = ctx.run_store.load(child_id) if child_id else None
    if child is None or child.status not in TERMINAL:
        return False
    # The resume record commits with the resumed state (a marker statement opens the deferral).
    ctx.run_store.with_next_save(run.run_id, q.NOTHING, {})
    try:
        with deferred_ledger(ctx, run.run_id):
            ctx.runtime.resume(
                workflow=ctx.host.spec(run.workflow_id),
                run_id=run.run_id,
                wait_key=waiting.wait_key,
                payload=child_outcome(child),
                max_steps=0,
            )
    finally:
        ctx.run_store.drop_pending(run.run_id)  # nothing left unless the resume raised before saving
    return True
