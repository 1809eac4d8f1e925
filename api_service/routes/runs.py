"""Runs: start (a durable queued run; a runner picks it up), list, detail, input, history, artifacts."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from shared_store import bundles, run_views
from shared_store.blob_store import Blobs, blobs_for
from shared_store.db import Database
from shared_store.errors import RequestInvalid
from shared_store.reads import ledger_len
from shared_store.run_filter import FilterInvalid, RunFilter
from shared_store.run_labels import Labels
from shared_store.run_list import list_runs as list_runs_page
from shared_store.runners import inactive_warning
from shared_store.starts import StartResult, enqueue_run

from .. import metrics
from ..access import READ, RUN
from ..errors import ApiError, not_found_run
from ..flow_control import flow_settings, resolve
from ..http import ApiRoute, blocking, reading, require_input_size, require_session
from ..middleware import header
from ..request_context import current_request_id
from ..schemas import (
    ARTIFACTS_PAGE_MAX,
    DETAILS,
    LEDGER_MODES,
    RUNS_PAGE_MAX,
    ArtifactList,
    ArtifactQuery,
    HistoryBundle,
    HistoryQuery,
    InputDataResponse,
    ResolvedWorkflow,
    RunList,
    RunListQuery,
    RunView,
    StartRequest,
    StartResponse,
)
from . import gateway
from .bundles import input_pins

MAX_IDEMPOTENCY_KEY = 200
# Types a browser would render or run when opened from the API's origin (stored XSS with the
# viewer's token in reach): served as downloads, never inline.
ACTIVE_TYPES = ("html", "svg", "javascript", "ecmascript", "xml", "xhtml")


def _labels(body: StartRequest) -> Labels:
    """Tags, metadata, ttl and webhook target of a start or schedule request (422 when too large)."""
    try:
        return Labels.checked(
            tags=body.tags, metadata=body.metadata, ttl_s=body.ttl_s, webhook_url=body.webhook_url
        )
    except FilterInvalid as exc:  # a filter's bad value, but here a rule of the request: invalid (422)
        raise RequestInvalid(str(exc)) from None


def artifact_headers(content_type: str | None, artifact_id: str) -> dict[str, str]:
    """nosniff always (a browser must not guess `text/html` from the bytes); attachment for active types."""
    headers = {"X-Content-Type-Options": "nosniff"}
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if any(active in kind for active in ACTIVE_TYPES):
        safe = "".join(c for c in artifact_id if c.isalnum() or c in "-_.")[:100] or "artifact"
        headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        headers["Content-Security-Policy"] = "sandbox"
    return headers


def _start(
    db: Database, body: StartRequest, key: str | None, labels: Labels, request_id: str | None
) -> tuple[StartResult, bundles.ResolvedWorkflow]:
    resolved, declared = resolve(db, body.bundle_id, body.flow_id, body.bundle_version)
    flow = flow_settings(body, declared, body.input_data)
    started = enqueue_run(
        db,
        resolved=resolved,
        input_data=body.input_data,
        session_id=body.session_id,
        idempotency_key=key,
        labels=labels,
        request_id=request_id,
        flow=flow,
    )
    return started, resolved


def idempotency_key(request: Request) -> str | None:
    # From the headers dict the middlewares already made (starlette's request.headers builds its own).
    key = header(request.scope, b"idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return key


async def start_run(request: Request, body: StartRequest) -> object:
    """Start a run: durable (queued) when this returns. `Idempotency-Key`: the same key, the same run."""
    key = idempotency_key(request)
    labels = _labels(body)
    require_session(request, body.session_id)
    require_input_size(request, body.input_data)
    db = gateway(request).db
    started, resolved = await blocking(_start, db, body, key, labels, current_request_id())
    if started.created:
        metrics.STARTS.inc()
    request.state.audit = {"run_id": started.run_id, "workflow_id": resolved.workflow_id}
    return await start_response(db, started.run_id, resolved)


# Per database (tests run several in one process): (when read, the warning).
_warnings: dict[int, tuple[float, str | None]] = {}


async def start_response(db: Database, run_id: str, resolved: bundles.ResolvedWorkflow) -> StartResponse:
    """The start answer (also a schedule's): the run, what it runs and, as the original, a
    `runner_warning` when no runner is alive (read at most once a second: starts are a hot path)."""
    checked_at, warning = _warnings.get(id(db), (0.0, None))
    if time.monotonic() - checked_at > 1.0:
        # Once it was read, one request re-reads it and the others meanwhile answer with the last
        # one: each of 16 concurrent starts re-read it every second, a pool thread each.
        if checked_at:
            _warnings[id(db)] = (time.monotonic(), warning)
        try:
            warning = await reading(inactive_warning, db)
        except BaseException:
            _warnings[id(db)] = (checked_at, warning)  # not read: the next start tries again
            raise
        _warnings[id(db)] = (time.monotonic(), warning)
    return StartResponse(
        run_id,
        ResolvedWorkflow(
            resolved.workflow_id, resolved.bundle_id, resolved.bundle_version, resolved.flow_id, resolved.name
        ),
        warning,
    )


def run_filter(request: Request, query: RunListQuery) -> RunFilter:
    """The list's filters, with the `metadata.<key>` parameters the query Struct does not declare."""
    params = request.query_params
    return RunFilter.parse(
        {
            "status": query.status,
            "tag": query.tag,
            "workflow_id": query.workflow_id,
            "session_id": query.session_id,
            "parent_run_id": query.parent_run_id,
            "created_after": query.created_after,
            "created_before": query.created_before,
            "ended_after": query.ended_after,
            "ended_before": query.ended_before,
            "q": query.q,
            **{k: params[k] for k in params if k.startswith("metadata.")},
        }
    )


async def list_runs(request: Request, query: RunListQuery) -> object:
    """Run summaries (no output), newest first, filtered; paged by `cursor` (keyset) or `offset`."""
    if query.cursor is not None and query.offset:
        raise ApiError(400, "give cursor or offset, not both")
    filters = run_filter(request, query)
    limit = min(query.limit, RUNS_PAGE_MAX)  # above the maximum: served up to it, never refused
    # A page read leaves the event loop (it may read thousands of rows); reads need no writer thread.
    page = await reading(
        list_runs_page, gateway(request).db, filters, limit=limit, offset=query.offset, cursor=query.cursor
    )
    more = page.next_cursor is not None
    return {
        "items": page.items,
        "limit": limit,
        "offset": query.offset,
        "next_offset": query.offset + len(page.items) if more and query.cursor is None else None,
        "next_cursor": page.next_cursor,
        # As the original: the size of this page, and whether another follows.
        "count": len(page.items),
        "has_more": more,
    }


async def get_run(request: Request) -> object:
    """One run: status, wait, pause, output (a queued run reads running with queued: true)."""
    run_id = request.path_params["run_id"]
    view = await reading(run_views.run_view, gateway(request).db, run_id)
    if view is None:
        raise not_found_run(run_id)
    return view


async def get_input_data(request: Request) -> object:
    """What the run was started with."""
    run_id = request.path_params["run_id"]
    data = await reading(_input_data, gateway(request).db, run_id)
    if data is None:
        raise not_found_run(run_id)
    return data


def _input_data(db: Database, run_id: str) -> dict[str, Any] | None:
    data = run_views.input_data(db, run_id)
    if data is None:
        return None
    # As the original: the ids of the entry flow's input pins (empty when its bundle is gone).
    pins: list[str] = []
    if data["bundle_id"] and data["bundle_version"] and data["flow_id"]:
        try:
            flow = bundles.flow_json(db, data["bundle_id"], data["bundle_version"], data["flow_id"])
        except (bundles.UnknownBundle, bundles.UnknownFlow):
            flow = {}
        pins = [pin.id for pin in input_pins(flow)]
    data["pin_ids"] = pins
    return data


HISTORY_TIMEOUT_S = 120.0
# Each export is a Python child importing abstractruntime (~0.8 s, tens of MB): at most this many at
# once per API process, the rest wait their turn, so history requests cannot fill memory with children.
HISTORY_EXPORTS_AT_ONCE = 2
_history_slots: anyio.CapacityLimiter | None = None


async def _runtime_history(gw: Any, run_id: str, query: HistoryQuery) -> dict[str, Any]:
    """abstractruntime's RunHistoryBundle of the run, exported in a child process (the API never
    imports abstractruntime): see shared_store/history_export.py."""
    options = msgspec.json.encode(query)
    url = getattr(gw.db, "url", None)
    if url:  # PostgreSQL: the URL (a password inside) goes first on stdin, never on a command line
        options = url.encode() + b"\n" + options
    command = [
        sys.executable,
        "-m",
        "shared_store.history_export",
        "-" if url else str(gw.db.path),
        str(gw.artifacts_dir),
        run_id,
    ]
    global _history_slots
    if _history_slots is None:
        _history_slots = anyio.CapacityLimiter(HISTORY_EXPORTS_AT_ONCE)
    try:
        with anyio.fail_after(HISTORY_TIMEOUT_S):
            async with _history_slots:
                done = await anyio.run_process(command, input=options, check=False)
    except TimeoutError:
        raise ApiError(503, f"the history export took over {HISTORY_TIMEOUT_S:.0f}s; try again") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip()[-2000:] or f"exit status {done.returncode}"
        raise ApiError(503, f"the history export failed: {reason}")
    return msgspec.json.decode(done.stdout)


async def history_bundle(request: Request, query: HistoryQuery) -> object:
    """The run, its ledger, its descendants (with theirs) and its artifacts index, in one document:
    ours (`ledger`, `children`, `artifacts`, `input`) and the original's (`ledgers`, `timeline`,
    `session`, `workflow_snapshot`, ...: abstractruntime's RunHistoryBundle v1)."""
    run_id = request.path_params["run_id"]
    if query.ledger_mode not in LEDGER_MODES:
        raise ApiError(400, f"ledger_mode must be one of: {', '.join(LEDGER_MODES)}")
    if query.detail not in DETAILS:
        raise ApiError(400, f"detail must be one of: {', '.join(DETAILS)}")
    gw = gateway(request)
    # A long read: a worker thread, not the writer thread.
    ours = await reading(run_views.history_bundle, gw.db, run_id)
    if ours is None:
        raise not_found_run(run_id)
    original = await _runtime_history(gw, run_id, query)
    # The original's keys (abstractruntime's RunHistoryBundle) beside ours; `run` stays our view, which
    # carries every field of the runtime's `run` summary (status as the client reads it) and more.
    return {**original, **ours}


async def list_artifacts(request: Request, query: ArtifactQuery) -> object:
    """The run's artifacts (metadata), oldest first; `limit` above the maximum is served up to it."""
    run_id = request.path_params["run_id"]
    db = gateway(request).db
    if await reading(ledger_len, db, run_id) is None:
        raise not_found_run(run_id)
    limit = min(query.limit, ARTIFACTS_PAGE_MAX)
    # One more than asked: whether a next page exists (the original's `has_more`), not a guess.
    items = await reading(run_views.run_artifacts, db, run_id, limit=limit + 1, offset=query.offset)
    more = len(items) > limit
    items = items[:limit]
    return {
        "items": items,
        "limit": limit,
        "offset": query.offset,
        "next_offset": query.offset + len(items) if more else None,
        "has_more": more,
    }


async def artifact_content(request: Request) -> object:
    """The artifact's bytes, with its content type."""
    run_id, artifact_id = request.path_params["run_id"], request.path_params["artifact_id"]
    gw = gateway(request)
    blob = await reading(run_views.artifact_blob, gw.db, artifact_id)
    if blob is None or blob.run_id != run_id:
        raise ApiError(404, f"Artifact '{artifact_id}' not found in run '{run_id}'")
    headers = artifact_headers(blob.content_type, artifact_id)
    blobs = blobs_for(gw.db, gw.artifacts_dir)
    path = blobs.path(blob.blob_id)
    if path is None:  # PostgreSQL: the bytes are in the shared database, whoever stored them
        return await _stored_blob(blobs, blob, artifact_id, headers)
    if not path.is_file():
        raise ApiError(404, f"Artifact '{artifact_id}' has no content on this server")
    return FileResponse(path, media_type=blob.content_type, headers=headers)


async def _stored_blob(
    blobs: Blobs, blob: run_views.ArtifactBlob, artifact_id: str, headers: dict[str, str]
) -> Response:
    """A database blob: one response when it fits one piece, else streamed piece by piece (each a
    read off the event loop), so a large video never sits whole in this process."""
    pieces = blobs.chunks(blob.blob_id)
    first = await reading(next, pieces, None)
    if first is None:
        raise ApiError(404, f"Artifact '{artifact_id}' has no content in the store")
    if len(first) >= blob.size_bytes:
        return Response(first, media_type=blob.content_type, headers=headers)

    async def rest() -> Any:
        yield first
        while (piece := await reading(next, pieces, None)) is not None:
            yield piece

    length = {"Content-Length": str(blob.size_bytes)}
    return StreamingResponse(rest(), media_type=blob.content_type, headers={**headers, **length})


_TAGS = ["runs"]
routes = [
    ApiRoute(
        "/api/gateway/runs/start",
        start_run,
        methods=["POST"],
        summary="Start a run",
        tags=_TAGS,
        body=StartRequest,
        response=StartResponse,
        errors=(400, 404, 409, 413, 422),
        headers={"Idempotency-Key": "the same key answers the same run_id (409 if reused differently)"},
        needs=RUN,
        bound="handler",
    ),
    ApiRoute(
        "/api/gateway/runs",
        list_runs,
        methods=["GET"],
        summary="List runs",
        tags=_TAGS,
        query=RunListQuery,
        response=RunList,
        needs=READ,
    ),
    ApiRoute(
        "/api/gateway/runs/{run_id}",
        get_run,
        methods=["GET"],
        summary="Show a run",
        tags=_TAGS,
        response=RunView,
        errors=(404,),
        needs=READ,
    ),
    ApiRoute(
        "/api/gateway/runs/{run_id}/input_data",
        get_input_data,
        methods=["GET"],
        summary="A run's input",
        tags=_TAGS,
        response=InputDataResponse,
        errors=(404,),
        needs=READ,
    ),
    ApiRoute(
        "/api/gateway/runs/{run_id}/history_bundle",
        history_bundle,
        methods=["GET"],
        summary="Export a run",
        tags=_TAGS,
        query=HistoryQuery,
        response=HistoryBundle,
        errors=(400, 404, 422),
        needs=READ,
    ),
    ApiRoute(
        "/api/gateway/runs/{run_id}/artifacts",
        list_artifacts,
        methods=["GET"],
        summary="A run's artifacts",
        tags=_TAGS,
        query=ArtifactQuery,
        response=ArtifactList,
        errors=(400, 404, 422),
        needs=READ,
    ),
    ApiRoute(
        "/api/gateway/runs/{run_id}/artifacts/{artifact_id}/content",
        artifact_content,
        methods=["GET"],
        summary="An artifact's bytes",
        tags=_TAGS,
        content_type="application/octet-stream",
        errors=(404,),
        needs=READ,
    ),
]
