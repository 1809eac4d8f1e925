"""Durable commands: appended idempotently by command_id, applied by the runner in seq order per run.

The API validates the type and its payload now (400 / 422) so a typo never waits in the inbox.
`emit_event` may name a session id instead of a run, so its run_id is not looked up.
"""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from shared_store.contracts import COMMAND_PAYLOADS, check_command_payload
from shared_store.inbox import append_command, get_command
from shared_store.reads import ledger_len

from .. import metrics
from ..access import READ, RUN
from ..errors import ApiError, not_found_run
from ..http import ApiRoute, blocking, reading, require_run
from ..request_context import current_request_id
from ..schemas import CommandRequest, CommandResponse, CommandState, CommandStatus
from . import gateway

COMMAND_TYPES = tuple(COMMAND_PAYLOADS)


async def post_command(request: Request, body: CommandRequest) -> object:
    """Append a command; the same command_id again answers duplicate with the original seq."""
    if body.type not in COMMAND_PAYLOADS:
        raise ApiError(400, f"unknown command type {body.type!r}; valid types: {', '.join(COMMAND_TYPES)}")
    check_command_payload(body.type, body.payload)  # RequestInvalid: 422, the rule runners apply too
    await require_run(request, body.run_id)
    db = gateway(request).db
    if body.type != "emit_event" and await reading(ledger_len, db, body.run_id) is None:
        raise not_found_run(body.run_id)
    request.state.audit = {"run_id": body.run_id, "command_id": body.command_id, "type": body.type}
    result = await blocking(
        append_command,
        db,
        command_id=body.command_id,
        run_id=body.run_id,
        type=body.type,
        payload=body.payload,
        client_id=body.client_id,
        request_id=current_request_id(),
    )
    metrics.COMMANDS.labels(body.type, "duplicate" if result.duplicate else "accepted").inc()
    return CommandResponse(result.accepted, result.duplicate, result.seq)


async def command_status(request: Request) -> object:
    """What became of a command: pending, applied or rejected (with the reason)."""
    command_id = request.path_params["command_id"]
    command = await reading(get_command, gateway(request).db, command_id)
    if command is None:
        raise ApiError(404, f"Command '{command_id}' not found")
    await require_run(request, command.run_id)
    return CommandStatus(
        command.command_id,
        command.seq,
        command.run_id,
        command.type,
        cast(CommandState, command.status),  # the store's column holds only these three
        command.error,
        command.applied_at,
    )


_TAGS = ["commands"]
routes = [
    ApiRoute(
        "/api/gateway/commands",
        post_command,
        methods=["POST"],
        summary="Send a durable command",
        tags=_TAGS,
        body=CommandRequest,
        response=CommandResponse,
        errors=(400, 404, 413, 422),
        needs=RUN,
        bound="handler",
    ),
    ApiRoute(
        "/api/gateway/commands/{command_id}",
        command_status,
        methods=["GET"],
        summary="A command's outcome",
        tags=_TAGS,
        response=CommandStatus,
        errors=(404,),
        needs=READ,
        bound="handler",
    ),
]
