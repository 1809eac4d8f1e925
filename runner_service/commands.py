"""Applying one durable command to a run this runner holds.

A command's outcome is staged in the worker's unit of work (shared_store.run_unit) and commits in
the same transaction as the state it produced and the ledger records it caused, so a crash between
them can neither lose an applied command nor apply it twice. A command that changes nothing (or is
refused) is resolved by the unit's flush, on its own. pause / resume / cancel reach the run's
descendants as derived commands, committed with the parent's unit and applied by whichever runner
holds each descendant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, WaitReason
from abstractruntime.core.runtime import Runtime

from shared_store import Database
from shared_store.contracts import check_command_payload
from shared_store.inbox import Command
from shared_store.leases import LeaseHolder
from shared_store.run_store import SqliteRunStore, awaited_child
from shared_store.run_unit import RunUnit

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
    unit: RunUnit


def apply_command(
    ctx: CommandContext, command: Command, *, scheduled: bool = False
) -> tuple[str, str | None]:
    """Apply and resolve one command; returns (status, error). LeaseLost propagates.

    `scheduled`: the run is a scheduled parent (its schedule moves with pause / cancel)."""
    unit = ctx.unit
    mark = unit.mark()
    unit.resolve_command(command, "applied")
    status: str
    error: str | None
    try:
        _apply(ctx, command, scheduled)
    except Rejected as exc:
        status, error = "rejected", str(exc) or type(exc).__name__
    except (KeyError, ValueError, TypeError) as exc:  # the runtime's refusals ("Run is not waiting", ...)
        status, error = "rejected", f"{type(exc).__name__}: {exc}"
    else:
        status, error = "applied", None
    if status == "rejected":
        unit.rollback_to(mark)  # a refused command's records and its staged outcome are dropped
        unit.resolve_command(command, status, error)
    # No save carried the outcome (a no-op, or a refusal): it commits on its own, with the records
    # of an applied command that changed no state.
    unit.flush()
    return status, error


def _load(ctx: CommandContext, run_id: str) -> RunState:
    run = ctx.run_store.load(run_id)
    if run is None:
        raise Rejected(f"run {run_id} has not started")
    return run


def _apply(ctx: CommandContext, command: Command, scheduled: bool) -> None:
    from . import schedules

    payload = command.payload
    kind = command.type
    check_command_payload(kind, payload, refuse=Rejected)  # the rule the API applied (shared_store.contracts)
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
        ctx.unit.cascade(command)


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
    child_id = awaited_child(run)
    child = ctx.run_store.load(child_id) if child_id else None
    if child is None or child.status not in TERMINAL:
        return False
    # The resume record is staged in the unit: it commits with the resumed state, or not at all.
    ctx.runtime.resume(
        workflow=ctx.host.spec(run.workflow_id),
        run_id=run.run_id,
        wait_key=waiting.wait_key,
        payload=child_outcome(child),
        max_steps=0,
    )
    return True
