"""The ledger, the source of truth: pages by cursor, a batch of pages, and the SSE stream.

Cursor = the run's ledger seq (dense from 1): `after` counts records consumed, `next_after` is the
cursor to pass next. Records leave as stored (JSON bytes spliced in), never re-encoded.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from shared_store.reads import ledger_len, ledger_page
from shared_store.run_views import run_progress

from ..errors import ApiError, not_found_run
from ..http import ApiRoute
from ..schemas import (
    LEDGER_BATCH_RECORDS_MAX,
    LEDGER_PAGE_MAX,
    DoneEvent,
    LedgerBatchRequest,
    LedgerBatchResponse,
    LedgerPage,
    LedgerQuery,
    StepEvent,
    StreamQuery,
)
from ..sse import EventStream
from . import gateway

MAX_CURSOR_DIGITS = 18


async def ledger(request: Request, query: LedgerQuery) -> object:
    """Records after the cursor, oldest first: one range read on the (run_id, seq) key."""
    run_id = request.path_params["run_id"]
    db = gateway(request).db
    # Above the maximum: served up to it (next_after continues), never refused.
    page = ledger_page(db, run_id, after=query.after, limit=min(query.limit, LEDGER_PAGE_MAX))
    if not page.records and ledger_len(db, run_id) is None:
        raise not_found_run(run_id)
    body = b'{"items":[%s],"next_after":%d}' % (b",".join(page.records), page.next_after)
    return Response(body, media_type="application/json")


async def ledger_batch(request: Request, body: LedgerBatchRequest) -> object:
    """Pages of several runs at once; an unknown run gets an empty page and an error.

    Each run's page is served up to LEDGER_PAGE_MAX, and up to its share of LEDGER_BATCH_RECORDS_MAX so
    one batch stays bounded; next_after continues each."""
    db = gateway(request).db
    share = max(1, LEDGER_BATCH_RECORDS_MAX // max(1, len(body.runs)))
    limit = min(body.limit, LEDGER_PAGE_MAX, share)
    runs: dict[str, dict[str, object]] = {}
    for entry in body.runs:
        page = ledger_page(db, entry.run_id, after=entry.after, limit=limit)
        item: dict[str, object] = {
            "items": [msgspec.Raw(r) for r in page.records],
            "next_after": page.next_after,
        }
        if not page.records and ledger_len(db, entry.run_id) is None:
            item["error"] = f"Run '{entry.run_id}' not found"
        runs[entry.run_id] = item
    return {"runs": runs}


def _cursor(value: str, name: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_CURSOR_DIGITS):
        raise ApiError(400, f"{name} must be a ledger cursor (an integer >= 0)")
    return int(text)


async def ledger_stream(request: Request, query: StreamQuery) -> object:
    """SSE: `event: step` per record (id = cursor), `event: done` when terminal and caught up.

    Last-Event-ID (header, or last_event_id query) resumes after that cursor and wins over `after`."""
    run_id = request.path_params["run_id"]
    gw = gateway(request)
    after = query.after
    last_event_id = request.headers.get("last-event-id") or query.last_event_id
    if last_event_id is not None:
        after = _cursor(last_event_id, "Last-Event-ID")
    progress = run_progress(gw.db, run_id)
    if progress is None:
        raise not_found_run(run_id)
    if gw.hub.closed:
        raise ApiError(503, "server shutting down", {"Retry-After": "1"})
    if gw.hub.subscribers >= gw.settings.max_streams:
        raise ApiError(429, f"too many open streams (max {gw.settings.max_streams})", {"Retry-After": "1"})
    return EventStream(
        gw.hub, run_id, after=after, heartbeat_s=query.heartbeat_s, retry_ms=gw.settings.sse_retry_ms
    )


_TAGS = ["ledger"]
routes = [
    ApiRoute(
        "/api/gateway/runs/{run_id}/ledger",
        ledger,
        methods=["GET"],
        summary="A page of a run's ledger",
        tags=_TAGS,
        query=LedgerQuery,
        response=LedgerPage,
        errors=(404,),
    ),
    ApiRoute(
        "/api/gateway/runs/ledger/batch",
        ledger_batch,
        methods=["POST"],
        summary="Pages of several runs",
        tags=_TAGS,
        body=LedgerBatchRequest,
        response=LedgerBatchResponse,
        errors=(413, 422),
    ),
    ApiRoute(
        "/api/gateway/runs/{run_id}/ledger/stream",
        ledger_stream,
        methods=["GET"],
        summary="Stream a run's ledger (SSE)",
        tags=_TAGS,
        query=StreamQuery,
        stream=True,
        events={"step": StepEvent, "done": DoneEvent},
        content_type="text/event-stream",
        errors=(404,),
        headers={"Last-Event-ID": "resume after this cursor (wins over `after`)"},
    ),
]
