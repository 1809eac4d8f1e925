"""Rerun a run: the same workflow version (or the newest) with the same or patched input."""

from __future__ import annotations

from starlette.requests import Request

from shared_store.reruns import rerun

from ..access import RUN
from ..http import ApiRoute, blocking
from ..ops_schemas import RerunRequest, RerunResponse
from . import gateway
from .runs import idempotency_key


async def rerun_run(request: Request, body: RerunRequest) -> object:
    """Start a new run linked to this one (`rerun_of`; the original lists it in `reruns`).
    `Idempotency-Key`: the same key, the same rerun."""
    run_id = request.path_params["run_id"]
    key = idempotency_key(request)
    started, resolved = await blocking(
        rerun,
        gateway(request).db,
        run_id,
        input_patch=body.input_data,
        latest=body.latest,
        idempotency_key=key,
    )
    request.state.audit = {"run_id": started.run_id, "rerun_of": run_id}
    return RerunResponse(
        started.run_id,
        run_id,
        {
            "workflow_id": resolved.workflow_id,
            "bundle_id": resolved.bundle_id,
            "bundle_version": resolved.bundle_version,
            "flow_id": resolved.flow_id,
        },
    )


routes = [
    ApiRoute(
        "/api/gateway/runs/{run_id}/rerun",
        rerun_run,
        methods=["POST"],
        summary="Rerun a run",
        tags=["runs"],
        body=RerunRequest,
        response=RerunResponse,
        errors=(404, 409, 413, 422),
        headers={"Idempotency-Key": "the same key answers the same rerun (409 if reused differently)"},
        needs=RUN,
    ),
]
