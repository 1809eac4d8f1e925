"""Bulk commands: one request stores an operation; runners expand it into ordinary commands."""

from __future__ import annotations

from starlette.requests import Request

from shared_store.bulk_ops import BulkOp, bulk_counts, create_bulk, get_bulk
from shared_store.codec import decode
from shared_store.contracts import check_command_payload
from shared_store.errors import RequestInvalid
from shared_store.run_filter import FilterInvalid, RunFilter

from ..access import ADMIN
from ..errors import ApiError
from ..http import ApiRoute, blocking, reading
from ..ops_schemas import BulkRequest, BulkStatus
from . import gateway


def _status(op: BulkOp, counts: dict[str, int], duplicate: bool = False) -> BulkStatus:
    return BulkStatus(
        op.bulk_id, op.type, decode(op.filter.to_json()), op.status,  # type: ignore[arg-type]
        op.matched, counts["pending"], counts["applied"], counts["rejected"], op.created_at,
        op.updated_at, duplicate,
    )  # fmt: skip


async def post_bulk(request: Request, body: BulkRequest) -> object:
    """Apply cancel, pause or resume to every run the filter matches (idempotent by bulk_id)."""
    check_command_payload(body.type, body.payload)  # RequestInvalid: 422, the rule runners apply too
    try:
        run_filter = RunFilter.parse(body.filter)
    except FilterInvalid as exc:  # a filter's bad value, but here a rule of the request: invalid (422)
        raise RequestInvalid(f"filter: {exc}") from None
    if run_filter.is_empty():
        raise ApiError(422, "filter: name at least one condition (a bulk command never means every run)")
    db = gateway(request).db
    op, created = await blocking(
        create_bulk, db, bulk_id=body.bulk_id, type=body.type, run_filter=run_filter, payload=body.payload
    )
    request.state.audit = {"bulk_id": op.bulk_id, "type": op.type}
    return _status(op, await reading(bulk_counts, db, op.bulk_id), duplicate=not created)


async def bulk_status(request: Request) -> object:
    """How far a bulk operation is: runs matched, and its commands pending / applied / rejected."""
    bulk_id = request.path_params["bulk_id"]
    db = gateway(request).db
    op = await reading(get_bulk, db, bulk_id)
    if op is None:
        raise ApiError(404, f"Bulk operation '{bulk_id}' not found")
    return _status(op, await reading(bulk_counts, db, bulk_id))


_TAGS = ["commands"]
routes = [
    ApiRoute(
        "/api/gateway/commands/bulk",
        post_bulk,
        methods=["POST"],
        summary="Send a command to every run a filter matches",
        tags=_TAGS,
        body=BulkRequest,
        response=BulkStatus,
        errors=(409, 413, 422),
        needs=ADMIN,
    ),
    ApiRoute(
        "/api/gateway/commands/bulk/{bulk_id}",
        bulk_status,
        methods=["GET"],
        summary="A bulk operation's counts",
        tags=_TAGS,
        response=BulkStatus,
        errors=(404,),
        needs=ADMIN,
    ),
]
