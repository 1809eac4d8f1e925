"""The ledger, the source of truth: pages by cursor, a batch of pages, and the SSE stream.

Cursor = the run's ledger seq (dense from 1): `after` counts records consumed, `next_after` is the
cursor to pass next. Records leave as stored (JSON bytes spliced in), never re-encoded.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from shared_store.db import Database
from shared_store.reads import LedgerPage as LedgerPageRows
from shared_store.reads import joined_ledger_page, ledger_len, ledger_page

from ..access import READ, principal_of
from ..errors import ApiError, not_found_run
from ..http import ApiRoute, reading, require_run
from ..middleware import client_ip
from ..middleware.auth import bearer_token, token_fingerprint
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
from ..sse_reads import stream_start
from . import gateway

MAX_CURSOR_DIGITS = 18


async def ledger(request: Request, query: LedgerQuery) -> object:
    """Records after the cursor, oldest first: one range read on the (run_id, seq) key."""
    run_id = request.path_params["run_id"]
    db = gateway(request).db
    # Above the maximum: served up to it (next_after continues), never refused.
    limit = min(query.limit, LEDGER_PAGE_MAX)
    body = await reading(_page_body, db, run_id, query.after, limit)
    if body is None:
        raise not_found_run(run_id)
    return Response(body, media_type="application/json")


def _page_body(db: Database, run_id: str, after: int, limit: int) -> bytes | None:
    """The whole response body, built in the read thread (None: no such run). Joining a 1000-record
    page on the event loop instead cost a second pass over it there and the records' trip between
    cores (replay of 1000 records, in-process: ~1.7 -> ~1.5 ms); an empty page's run check rides the
    same hop."""
    records, next_after, count = joined_ledger_page(db, run_id, after=after, limit=limit)
    if not count and ledger_len(db, run_id) is None:
        return None
    return b'{"items":[%s],"next_after":%d}' % (records, next_after)


async def ledger_batch(request: Request, body: LedgerBatchRequest) -> object:
    """Pages of several runs at once; an unknown run gets an empty page and an error.

    Each run's page is served up to LEDGER_PAGE_MAX and its share of the batch's record budget
    (ABSTRACTGATEWAY_MAX_BATCH_RECORDS, at most LEDGER_BATCH_RECORDS_MAX), and the answer stops at about
    ABSTRACTGATEWAY_MAX_BATCH_BYTES (one batch was once 524 MB): a run reached after the budget is spent
    gets an empty page whose `next_after` is its own `after`, so the client asks again from there."""
    gw = gateway(request)
    for entry in body.runs:
        await require_run(request, entry.run_id)
    runs = await reading(
        _batch, gw.db, body, max_records=gw.settings.max_batch_records, max_bytes=gw.settings.max_batch_bytes
    )
    return {"runs": runs}


def _batch(db: Database, body: LedgerBatchRequest, *, max_records: int, max_bytes: int) -> dict[str, dict]:
    runs: dict[str, dict[str, object]] = {}
    budget = min(max_records, LEDGER_BATCH_RECORDS_MAX)
    share = max(1, budget // max(1, len(body.runs)))
    limit = min(body.limit, LEDGER_PAGE_MAX, share)
    records_left, bytes_left = budget, max_bytes
    for entry in body.runs:
        if records_left > 0 and bytes_left > 0:
            page = ledger_page(db, entry.run_id, after=entry.after, limit=min(limit, records_left))
        else:
            page = LedgerPageRows([], entry.after)
        records = page.records
        size = 0
        for count, record in enumerate(records):  # stop at the byte budget (always one record of progress)
            size += len(record)
            if size > bytes_left and count > 0:
                records = records[:count]
                size -= len(record)
                break
        records_left -= len(records)
        bytes_left -= size
        item: dict[str, object] = {
            "items": [msgspec.Raw(r) for r in records],
            "next_after": entry.after + len(records) if records else entry.after,
        }
        if not records and ledger_len(db, entry.run_id) is None:
            item["error"] = f"Run '{entry.run_id}' not found"
        runs[entry.run_id] = item
    return runs


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
    start = await reading(stream_start, gw.db, run_id)
    if start is None:
        raise not_found_run(run_id)
    if gw.hub.closed:
        raise ApiError(503, "server shutting down", {"Retry-After": "1"})
    if gw.hub.subscribers >= gw.settings.max_streams:
        raise ApiError(429, f"too many open streams (max {gw.settings.max_streams})", {"Retry-After": "1"})
    client = client_ip(request.scope)
    token = principal_of(request.scope).fingerprint or _fingerprint(request)
    refused = gw.streams.acquire(client, token)
    if refused is not None:
        raise ApiError(429, refused, {"Retry-After": "5"})
    # A floor, not a refusal: clients asking for fast keepalives still get a stream, at the floor's pace.
    heartbeat_s = max(query.heartbeat_s, gw.settings.min_heartbeat_s)
    return EventStream(
        gw.hub,
        run_id,
        start,
        after=after,
        heartbeat_s=heartbeat_s,
        retry_ms=gw.settings.sse_retry_ms,
        on_close=lambda: gw.streams.release(client, token),
    )


def _fingerprint(request: Request) -> str:
    token = bearer_token(request.scope)
    return token_fingerprint(token) if token else "(no token)"


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
        needs=READ,
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
        needs=READ,
        bound="handler",
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
        needs=READ,
    ),
]
