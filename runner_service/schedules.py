"""Driving a scheduled parent run: it waits until its next firing time, and the runner holding its lease
fires it — children created and schedule advanced in the parent's unit of work, committed with its
(fenced) save.

A scheduled parent is never ticked: its RunState is WAITING(UNTIL next_fire_at), so the store makes it
due at that time, pause/resume work as on any run (a paused parent is not due), and cancel ends it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState

from shared_store.codec import utc_now_iso
from shared_store.schedules import (
    Schedule,
    ScheduleInvalid,
    child_active,
    firings_due,
    get_schedule,
    iso,
    stage_advance,
    stage_firings,
    stage_spec_update,
    stage_status,
)
from shared_store.starts import GATEWAY_ACTOR

from .commands import CommandContext, Rejected


def _wait(run_id: str, next_fire_at: float) -> WaitState:
    return WaitState(
        reason=WaitReason.UNTIL,
        wait_key=f"schedule:{run_id}",
        until=iso(next_fire_at),
        details={"kind": "schedule"},
    )


def start_parent(ctx: CommandContext, run_id: str) -> None:
    """Create the parent's RunState (it was queued by the API with its schedule row)."""
    schedule = get_schedule(ctx.db, run_id)
    if schedule is None:
        raise Rejected(f"scheduled run {run_id} has no schedule")
    run = RunState(
        run_id=run_id,
        workflow_id=schedule.workflow_id,
        status=RunStatus.WAITING,
        current_node="schedule",
        waiting=_wait(run_id, schedule.next_fire_at or time.time()),
        session_id=schedule.session_id or run_id,
        actor_id=GATEWAY_ACTOR,
    )
    ctx.run_store.create_if_absent(run)


def _finish(run: RunState, schedule: Schedule, fired: int) -> None:
    run.status = RunStatus.COMPLETED
    run.waiting = None
    run.output = {"success": True, "fired_count": schedule.fired_count + fired}


def fire_due(ctx: CommandContext, run_id: str, *, now: float | None = None) -> int:
    """Fire what is due (catch-up, overlap and repeat limits applied); returns children created."""
    now = time.time() if now is None else now
    schedule = get_schedule(ctx.db, run_id)
    run = ctx.run_store.load(run_id)
    if schedule is None or run is None or run.status != RunStatus.WAITING or schedule.status != "active":
        return 0
    if run.vars.get("_runtime", {}).get("control", {}).get("paused") or schedule.next_fire_at is None:
        return 0
    if schedule.next_fire_at > now:
        return 0
    blocked = schedule.spec.overlap == "skip" and child_active(ctx.db, schedule.last_child_run_id)
    firings = firings_due(
        schedule.spec, schedule.next_fire_at, schedule.fired_count, now=now, blocked=blocked
    )
    chosen = firings.fire_times
    child_id = stage_firings(ctx.unit, schedule, chosen, now=now)
    stage_advance(
        ctx.unit,
        run_id,
        next_fire_at=firings.next_fire_at,
        fired=chosen,
        skipped=firings.skipped,
        last_child_run_id=child_id,
    )
    if firings.next_fire_at is None:
        _finish(run, schedule, len(chosen))
    else:
        run.waiting = _wait(run_id, firings.next_fire_at)
    run.updated_at = utc_now_iso()
    ctx.run_store.save(run)
    return len(chosen)


def update_schedule(ctx: CommandContext, run_id: str, changes: dict[str, Any]) -> None:
    """Apply update_schedule: new timing/limits, next firing recomputed from the last one."""
    schedule = get_schedule(ctx.db, run_id)
    if schedule is None:
        raise Rejected(f"run {run_id} is not a scheduled run; update_schedule applies to schedules")
    run = ctx.run_store.load(run_id)
    if run is None or schedule.status != "active" or run.status != RunStatus.WAITING:
        raise Rejected(f"schedule is {schedule.status}; it can no longer be updated")
    now = time.time()
    try:
        spec = schedule.spec.updated(changes, now=now)
    except ScheduleInvalid as exc:
        raise Rejected(str(exc)) from None
    # Re-anchor recurring timing on the last firing: a new interval counts from it.
    if schedule.last_fired_at is not None and spec.interval_s is not None:
        spec = replace(spec, start_at=schedule.last_fired_at)
    next_fire_at = (
        spec.next_after(max(now, spec.start_at) - 1e-6) if spec.is_recurring() else schedule.next_fire_at
    )
    limit_hit = spec.repeat_count is not None and schedule.fired_count >= spec.repeat_count
    past_until = (
        next_fire_at is not None and spec.repeat_until is not None and next_fire_at > spec.repeat_until
    )
    done = next_fire_at is None or limit_hit or past_until
    stage_spec_update(ctx.unit, run_id, spec, None if done else next_fire_at)
    if done or next_fire_at is None:
        _finish(run, schedule, 0)
    else:
        run.waiting = _wait(run_id, next_fire_at)
    run.updated_at = utc_now_iso()
    ctx.run_store.save(run)


def cancel_schedule_with_run(ctx: CommandContext, run_id: str) -> None:
    """On cancel of a scheduled parent, its schedule stops in the same transaction."""
    stage_status(ctx.unit, run_id, "cancelled")
