"""Schedules: parsing and validating a schedule request, computing firing times, storing the parent.

API-safe (no abstractruntime). The API validates with `ScheduleSpec.parse` (422 on a bad value, nothing
stored) and stores the parent run + schedule row with `create_schedule`; the runner holding the parent's
lease fires it (runner_service/schedules.py) using `firings_due`.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from . import queries as q
from .bundles import ResolvedWorkflow
from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import Invalid
from .flow_control import FlowSettings, child_statements, store_key_limits
from .ids import new_run_id
from .run_labels import INHERIT_LABELS, Labels, write_labels

if TYPE_CHECKING:
    from .run_unit import RunUnit

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CATCH_UP = ("skip", "one", "all")
OVERLAP = ("skip", "allow")
MAX_CATCH_UP_FIRINGS = 1000  # catch_up=all creates at most this many children in one pass
ON_TIME_S = 5.0
MIN_INTERVAL_S = 0.1
MAX_SPAN_S = (
    100 * 365.25 * 86400
)  # intervals and how far ahead a time may be  # a firing later than this after its time counts as missed (catch-up policy)


class ScheduleInvalid(Invalid):
    """A schedule request value that cannot be used; `field` names it."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def parse_interval(value: str) -> float:
    """'30s' | '15m' | '1h' | '2d' → seconds, between MIN_INTERVAL_S and MAX_SPAN_S."""
    match = _INTERVAL.match(value) if isinstance(value, str) else None
    if not match:
        raise ScheduleInvalid("interval", f"{value!r} is not an interval like '30s', '15m', '1h', '2d'")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not MIN_INTERVAL_S <= seconds <= MAX_SPAN_S:
        # A near-zero interval would fire continuously; an absurd one overflows date arithmetic.
        raise ScheduleInvalid("interval", f"{value!r} must be between {MIN_INTERVAL_S}s and 100 years")
    return seconds


def parse_instant(value: str, field: str) -> float:
    """ISO 8601 (a naive time is UTC) → unix seconds, at most 100 years ahead."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if isinstance(value, str) else value)
        ts = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except (TypeError, ValueError, OverflowError):
        raise ScheduleInvalid(field, f"{value!r} is not an ISO 8601 time") from None
    if ts > time.time() + MAX_SPAN_S:
        raise ScheduleInvalid(field, f"{value!r} is more than 100 years ahead")
    return ts


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class ScheduleSpec:
    start_at: float
    interval_s: float | None = None
    cron: str | None = None
    timezone: str = "UTC"
    repeat_count: int | None = None
    repeat_until: float | None = None
    catch_up: str = "one"
    overlap: str = "skip"
    interval: str | None = None  # as the client sent it ("2s"): shown back unchanged

    @classmethod
    def parse(cls, request: dict[str, Any], *, now: float | None = None) -> ScheduleSpec:
        """Validate the schedule fields of a request; raises ScheduleInvalid naming the field."""
        now = time.time() if now is None else now
        start = request.get("start_at") or "now"
        start_at = now if start == "now" else parse_instant(start, "start_at")
        interval = request.get("interval")
        cron = request.get("cron")
        if interval is not None and cron is not None:
            raise ScheduleInvalid("cron", "give interval or cron, not both")
        timezone = request.get("timezone") or "UTC"
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ScheduleInvalid("timezone", f"{timezone!r} is not an IANA time zone") from None
        if cron is not None:
            try:
                CronSim(cron, datetime.now(ZoneInfo(timezone)))
            except (CronSimError, TypeError, AttributeError) as exc:
                raise ScheduleInvalid("cron", f"{cron!r} is not a 5-field cron expression: {exc}") from None
        repeat_count = request.get("repeat_count")
        if repeat_count is not None and (
            not isinstance(repeat_count, int)
            or isinstance(repeat_count, bool)
            or not 1 <= repeat_count <= 2**63 - 1  # stored in an SQLite INTEGER
        ):
            raise ScheduleInvalid("repeat_count", "must be a positive integer (at most 2**63 - 1)")
        repeat_until = request.get("repeat_until")
        until = None if repeat_until is None else parse_instant(repeat_until, "repeat_until")
        if until is not None and until <= now:
            raise ScheduleInvalid("repeat_until", f"{repeat_until!r} is in the past")
        if until is not None and until < start_at:
            raise ScheduleInvalid("repeat_until", "is before start_at")
        catch_up = request.get("catch_up") or "one"
        if catch_up not in CATCH_UP:
            raise ScheduleInvalid("catch_up", f"must be one of {', '.join(CATCH_UP)}")
        overlap = request.get("overlap") or "skip"
        if overlap not in OVERLAP:
            raise ScheduleInvalid("overlap", f"must be one of {', '.join(OVERLAP)}")
        return cls(
            start_at=start_at,
            interval_s=None if interval is None else parse_interval(interval),
            cron=cron,
            timezone=timezone,
            repeat_count=repeat_count,
            repeat_until=until,
            catch_up=catch_up,
            overlap=overlap,
            interval=interval,
        )

    def updated(self, changes: dict[str, Any], *, now: float) -> ScheduleSpec:
        """This spec with update_schedule's changes (interval, cron, timezone, repeat_count, repeat_until)."""
        known = ("interval", "cron", "timezone", "repeat_count", "repeat_until", "catch_up", "overlap")
        unknown = sorted(set(changes) - set(known) - {"cascaded_from"})
        if unknown:
            raise ScheduleInvalid(unknown[0], f"cannot be updated; updatable: {', '.join(known)}")
        merged: dict[str, Any] = {"start_at": iso(self.start_at), "timezone": self.timezone}
        merged.update(catch_up=self.catch_up, overlap=self.overlap, repeat_count=self.repeat_count)
        if self.interval_s is not None and "cron" not in changes:
            merged["interval"] = self.interval_text()
        if self.cron is not None and "interval" not in changes:
            merged["cron"] = self.cron
        if self.repeat_until is not None:
            merged["repeat_until"] = iso(self.repeat_until)
        merged.update(changes)
        merged.pop("cascaded_from", None)
        # A repeat_until already passed would only end the schedule: allowed on update.
        parsed = ScheduleSpec.parse(
            {k: v for k, v in merged.items() if v is not None and k != "repeat_until"}, now=now
        )
        until = merged.get("repeat_until")
        return replace(parsed, repeat_until=None if until is None else parse_instant(until, "repeat_until"))

    def interval_text(self) -> str | None:
        """The interval as sent; for a row stored before the text was kept, from interval_s."""
        if self.interval is not None or self.interval_s is None:
            return self.interval
        return f"{self.interval_s:g}s"

    def is_recurring(self) -> bool:
        return self.interval_s is not None or self.cron is not None

    def next_after(self, ts: float) -> float | None:
        """The first firing time strictly after ts (None: a one-off schedule has no next)."""
        if self.interval_s is not None:
            if ts < self.start_at:
                return self.start_at
            steps = int((ts - self.start_at) // self.interval_s) + 1
            while self.start_at + steps * self.interval_s <= ts:  # float rounding can land on ts itself
                steps += 1
            return self.start_at + steps * self.interval_s
        if self.cron is not None:
            zone = ZoneInfo(self.timezone)
            base = datetime.fromtimestamp(max(ts, self.start_at - 1e-6), zone)
            # cronsim matches whole minutes: start from the minute of `base`, skip times <= ts.
            for moment in CronSim(self.cron, base.replace(second=0, microsecond=0)):
                if moment.timestamp() > ts:
                    return moment.timestamp()
        return None

    def first_fire_at(self) -> float:
        if self.cron is not None:
            return self.next_after(self.start_at - 1e-6) or self.start_at
        return self.start_at

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["start_at"] = iso(self.start_at)
        data["repeat_until"] = iso(self.repeat_until)
        data["interval"] = self.interval_text()
        return data


@dataclass(frozen=True)
class Firings:
    """What a due schedule does now: fire these times, skip that many, then wait until next_fire_at."""

    fire_times: list[float]
    skipped: int
    next_fire_at: float | None


def firings_due(
    spec: ScheduleSpec, next_fire_at: float, fired_count: int, *, now: float, blocked: bool = False
) -> Firings:
    """Apply repeat limits and the catch-up policy to the firing times from next_fire_at up to now.

    blocked: the previous child still runs and overlap is 'skip': the due firings are skipped."""
    due: list[float] = []
    moment: float | None = next_fire_at
    while moment is not None and moment <= now and len(due) <= MAX_CATCH_UP_FIRINGS:
        due.append(moment)
        moment = spec.next_after(moment) if spec.is_recurring() else None
    # Never past the limits: repeat_until bounds the times, repeat_count the number of firings.
    in_window = [t for t in due if spec.repeat_until is None or t <= spec.repeat_until]
    on_time = [t for t in in_window if now - t <= ON_TIME_S]
    if spec.catch_up == "all":
        chosen = in_window
    elif spec.catch_up == "one":
        chosen = in_window[-1:]  # one firing stands for every missed one
    else:
        chosen = on_time[-1:]  # missed firings are dropped
    remaining = None if spec.repeat_count is None else max(0, spec.repeat_count - fired_count)
    if remaining is not None:
        chosen = chosen[:remaining]
    if blocked:
        chosen = []
    fired = fired_count + len(chosen)
    done = (spec.repeat_count is not None and fired >= spec.repeat_count) or moment is None
    if moment is not None and spec.repeat_until is not None and moment > spec.repeat_until:
        done = True
    return Firings(chosen, len(in_window) - len(chosen), None if done else moment)


def create_schedule(
    db: Database,
    *,
    resolved: ResolvedWorkflow,
    spec: ScheduleSpec,
    input_data: dict[str, Any],
    session_id: str | None = None,
    share_context: bool = True,
    labels: Labels | None = None,
    flow: FlowSettings | None = None,
) -> str:
    """Store the scheduled parent run (queued: a runner starts it) and its schedule; returns its id.
    labels (tags, metadata, ttl, webhook target) are the parent's, inherited by every child;
    `flow`: what each firing's child gets (priority, labels, concurrency key and its limits)."""
    run_id = new_run_id()
    now = time.time()
    created_at = datetime.now(UTC).isoformat()
    start = {"workflow_id": resolved.workflow_id, "schedule": True, "session_id": session_id}
    with db.write() as conn:
        conn.execute(
            q.ENQUEUE_RUN,
            {
                "run_id": run_id,
                "workflow_id": resolved.workflow_id,
                "session_id": session_id or run_id,  # its own session when none is given (as the original)
                "parent_run_id": None,
                "created_at": created_at,
                "now": now,
            },
        )
        conn.execute(q.ENQUEUE_RUN_STATE, {"run_id": run_id, "start_json": encode(start)})
        conn.execute(
            q.INSERT_SCHEDULE,
            {
                "run_id": run_id,
                "workflow_id": resolved.workflow_id,
                "bundle_id": resolved.bundle_id,
                "bundle_version": resolved.bundle_version,
                "flow_id": resolved.flow_id,
                "input_data": encode(input_data),
                "session_id": session_id,
                "share_context": int(share_context),
                **{k: v for k, v in asdict(spec).items()},
                "next_fire_at": spec.first_fire_at(),
                "created_at": created_at,
            },
        )
        if labels is not None:
            write_labels(conn, run_id, created_at, labels)
        if flow is not None and not flow.empty:
            if flow.concurrency_key is not None:
                store_key_limits(conn, flow)
            stored = {
                "priority": flow.priority,
                "concurrency_key": flow.concurrency_key,
                "requires": flow.requires,
            }
            conn.execute(q.SET_SCHEDULE_FLOW, {"run_id": run_id, "flow": encode(stored).decode()})
    return run_id


@dataclass(frozen=True)
class Schedule:
    run_id: str
    workflow_id: str
    input_data: dict[str, Any]
    session_id: str | None
    share_context: bool
    spec: ScheduleSpec
    next_fire_at: float | None
    fired_count: int
    skipped_count: int
    last_fired_at: float | None
    last_child_run_id: str | None
    status: str
    bundle_ref: str
    flow_id: str
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        remaining = (
            None if self.spec.repeat_count is None else max(0, self.spec.repeat_count - self.fired_count)
        )
        return {
            # The original gateway's fields, which its clients read ...
            "kind": "scheduled_run",
            "target_workflow_id": self.workflow_id,
            "target_bundle_ref": self.bundle_ref,
            "target_flow_id": self.flow_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            # ... and ours (interval, repeat_count, repeat_until, start_at, share_context are both).
            **self.spec.to_json(),
            "status": self.status,
            "next_fire_at": iso(self.next_fire_at),
            "fired_count": self.fired_count,
            "skipped_count": self.skipped_count,
            "remaining": remaining,
            "last_fired_at": iso(self.last_fired_at),
            "last_child_run_id": self.last_child_run_id,
            "share_context": self.share_context,
            "session_id": self.session_id,
        }


def get_schedule(db: Database, run_id: str) -> Schedule | None:
    row = db.query_one(q.SCHEDULE_OF, (run_id,))
    return None if row is None else schedule_from_row(row)


def schedule_from_row(row: tuple[Any, ...]) -> Schedule:
    """A Schedule from the columns of q.SCHEDULE_OF (also selected by the runs list's join)."""
    (run_id, workflow_id, input_data, session_id, share, start_at, interval_s, cron, tz, count, until) = row[
        :11
    ]
    catch_up, overlap, next_fire_at, fired, skipped, last_fired, last_child, status = row[11:19]
    interval, bundle_id, bundle_version, flow_id, created_at, updated_at = row[19:]
    spec = ScheduleSpec(start_at, interval_s, cron, tz, count, until, catch_up, overlap, interval)
    return Schedule(
        run_id, workflow_id, decode(input_data), session_id, bool(share), spec,
        next_fire_at, int(fired), int(skipped), last_fired, last_child, status,
        f"{bundle_id}@{bundle_version}", flow_id, created_at, updated_at,
    )  # fmt: skip


# --- runner side: what firing a schedule writes, staged in the parent's unit of work ---------------
# (shared_store/run_unit.py: it commits with the parent's fenced save, or not at all.)
_ACTIVE = ("queued", "running", "waiting")


def child_active(db: Database, run_id: str | None) -> bool:
    """Whether a schedule's last child is still queued or going (overlap=skip)."""
    if not run_id:
        return False
    row = db.query_one(q.RUN_STATUS, (run_id,))
    return row is not None and row[0] in _ACTIVE


def stage_firings(unit: RunUnit, schedule: Schedule, fire_times: list[float], *, now: float) -> str | None:
    """One queued child run per firing time (labels and flow control inherited); the last child's id."""
    run_id = schedule.run_id
    flow_row = unit.db.query_one(q.SCHEDULE_FLOW, (run_id,))
    flow = decode(flow_row[0]) if flow_row and flow_row[0] else None
    child_id = None
    for fire_at in fire_times:
        child_id = new_run_id()
        # Shared context: the parent's session; otherwise the child is its own (as the original).
        session = (schedule.session_id or run_id) if schedule.share_context else child_id
        start = {
            "workflow_id": schedule.workflow_id,
            "input_data": schedule.input_data,
            "session_id": session,
            "parent_run_id": run_id,
            "scheduled_for": iso(fire_at),
        }
        params = {
            "run_id": run_id,
            "child_run_id": child_id,
            "workflow_id": schedule.workflow_id,
            "session_id": session,
            "created_at": utc_now_iso(),
            "now": now,
            "start_json": encode(start),
        }
        unit.stage(run_id, q.ENQUEUE_CHILD_RUN, params)
        unit.stage(run_id, q.ENQUEUE_CHILD_STATE, params)
        for statement in INHERIT_LABELS:  # tags, metadata, ttl, webhook target
            unit.stage(run_id, statement, params)
        for sql, flow_params in child_statements(flow, child_id, now=now) if flow else ():
            unit.stage(run_id, sql, flow_params)
    return child_id


def stage_advance(
    unit: RunUnit,
    run_id: str,
    *,
    next_fire_at: float | None,
    fired: list[float],
    skipped: int,
    last_child_run_id: str | None,
) -> None:
    unit.stage(
        run_id,
        q.ADVANCE_SCHEDULE,
        {
            "run_id": run_id,
            "next_fire_at": next_fire_at,
            "fired": len(fired),
            "skipped": skipped,
            "last_fired_at": fired[-1] if fired else None,
            "last_child_run_id": last_child_run_id,
            "status": "finished" if next_fire_at is None else "active",
            "updated_at": utc_now_iso(),
        },
    )


def stage_spec_update(unit: RunUnit, run_id: str, spec: ScheduleSpec, next_fire_at: float | None) -> None:
    """New timing / limits (update_schedule); next_fire_at None finishes the schedule."""
    params = {
        "run_id": run_id,
        "interval_s": spec.interval_s,
        "interval": spec.interval,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "repeat_count": spec.repeat_count,
        "repeat_until": spec.repeat_until,
        "catch_up": spec.catch_up,
        "overlap": spec.overlap,
        "start_at": spec.start_at,
        "next_fire_at": next_fire_at,
        "status": "finished" if next_fire_at is None else "active",
        "updated_at": utc_now_iso(),
    }
    unit.stage(run_id, q.UPDATE_SCHEDULE_SPEC, params)


def stage_status(unit: RunUnit, run_id: str, status: str) -> None:
    """The schedule stops with its parent (cancel)."""
    unit.stage(
        run_id, q.SET_SCHEDULE_STATUS, {"run_id": run_id, "status": status, "updated_at": utc_now_iso()}
    )
