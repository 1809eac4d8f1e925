"""Schedules: POST /api/gateway/runs/schedule stores a scheduled parent run; a runner fires it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from shared_store import bundles
from shared_store.db import Database
from shared_store.errors import RequestInvalid
from shared_store.flow_control import FlowControlError
from shared_store.run_filter import FilterInvalid
from shared_store.run_labels import Labels
from shared_store.schedules import ScheduleSpec, create_schedule

from ..access import RUN
from ..flow_control import flow_settings, resolve
from ..http import ApiRoute, blocking, require_input_size, require_session
from ..schemas import FlowControlFields, StartResponse, Tags, TtlS, WebhookUrl
from . import gateway
from .runs import start_response


class ScheduleRequest(FlowControlFields, forbid_unknown_fields=True, kw_only=True):
    bundle_id: str
    flow_id: str | None = None
    bundle_version: str | None = None
    input_data: dict[str, Any] = {}
    start_at: str = "now"
    interval: str | None = None
    cron: str | None = None
    timezone: str = "UTC"
    repeat_count: int | None = None
    repeat_until: str | None = None
    share_context: bool = True  # the original's default: firings share the parent's session
    session_id: str | None = None
    catch_up: str = "one"
    overlap: str = "skip"
    tags: Tags | None = None  # the parent's, inherited by every child run
    metadata: dict[str, Any] | None = None
    ttl_s: TtlS | None = None
    webhook_url: WebhookUrl | None = None


def _schedule(
    db: Database, body: ScheduleRequest, spec: ScheduleSpec, labels: Labels
) -> tuple[str, bundles.ResolvedWorkflow]:
    resolved, declared = resolve(db, body.bundle_id, body.flow_id, body.bundle_version)
    flow = flow_settings(body, declared, body.input_data)
    if flow.request.overflow not in (None, "enqueue"):
        # A firing is not a client request that can be answered 409; overlap=skip covers the rest.
        raise FlowControlError("a schedule's overflow can only be enqueue (use overlap to skip firings)")
    run_id = create_schedule(
        db,
        resolved=resolved,
        spec=spec,
        input_data=body.input_data,
        session_id=body.session_id,
        share_context=body.share_context,
        labels=labels,
        flow=flow,
    )
    return run_id, resolved


async def schedule_run(request: Request, body: ScheduleRequest) -> object:
    """Schedule a workflow: once (start_at), every interval, or on a cron in a time zone; each firing
    starts a child run of the returned scheduled parent. Bad timing values: 422, nothing stored."""
    fields = {
        "start_at": body.start_at,
        "interval": body.interval,
        "cron": body.cron,
        "timezone": body.timezone,
        "repeat_count": body.repeat_count,
        "repeat_until": body.repeat_until,
        "catch_up": body.catch_up,
        "overlap": body.overlap,
    }
    require_session(request, body.session_id)
    require_input_size(request, body.input_data)
    spec = ScheduleSpec.parse(fields)  # ScheduleInvalid -> 422 naming the field
    try:
        labels = Labels.checked(
            tags=body.tags, metadata=body.metadata, ttl_s=body.ttl_s, webhook_url=body.webhook_url
        )
    except FilterInvalid as exc:  # a filter's bad value, but here a rule of the request: invalid (422)
        raise RequestInvalid(str(exc)) from None
    run_id, resolved = await blocking(_schedule, gateway(request).db, body, spec, labels)
    request.state.audit = {"run_id": run_id, "workflow_id": resolved.workflow_id}
    return await start_response(gateway(request).db, run_id, resolved)


routes = [
    ApiRoute(
        "/api/gateway/runs/schedule",
        schedule_run,
        methods=["POST"],
        summary="Schedule runs",
        tags=["runs"],
        body=ScheduleRequest,
        response=StartResponse,
        errors=(400, 404, 409, 413, 422),
        needs=RUN,
        bound="handler",
    ),
]
