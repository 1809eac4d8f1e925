"""Knowledge graph lookups over AbstractMemory's triple store. The store and the embedder (for
`query_text`) live with the runner, so a query is a job like media work: a queued `kg:query` run
(a child of `run_id` when one is given) whose output is the answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from shared_store.media_jobs import KG_QUERY

from ..access import RUN, principal_of
from ..errors import ApiError
from ..http import ApiRoute, json_response, require_run
from ..media_schemas import JobPending, KgQueryRequest, KgQueryResponse, MediaWaitQuery
from .media import job_result, request_dict, submit_job


async def kg_query(request: Request, body: KgQueryRequest, query: MediaWaitQuery) -> Response:
    """Query triples by scope (`run` needs run_id, `session` needs session_id: 400 otherwise; another
    scope is 422), subject / predicate / object, and `query_text` (semantic, with `min_score`);
    `limit` 1..10000 (default 500), `order` asc|desc by observed_at.

    Answers 200 `{"ok", "scope", "count", "items": [{"subject", "predicate", "object", "observed_at",
    "confidence", ...}], "child_run_id"}` once the query job finished within `wait_s` (default 60 s);
    `ok: false` with `code`/`error` when the runner has no knowledge-graph backend or the job failed.
    Answers **202** `{"ok": true, "pending": true, "scope", "child_run_id"}` when it has not finished in
    time (follow the child run). An unknown run_id: 404."""
    if body.scope == "run" and not body.run_id:
        raise ApiError(400, "scope 'run' needs run_id")
    if body.scope == "session" and not body.session_id:
        raise ApiError(400, "scope 'session' needs session_id")
    principal = principal_of(request.scope)
    if principal.restricted:  # its own run (or session) only, never the global graph
        if body.scope == "run":
            await require_run(request, body.run_id)
        elif not (body.scope == "session" and body.session_id == principal.session_id):
            raise ApiError(403, f"this token is restricted to {principal.describe_restriction()}")
    child, state = await submit_job(
        request,
        kind=KG_QUERY,
        job_request=request_dict(body),
        parent_run_id=body.run_id,
        request_id=body.request_id,
        wait_s=query.wait_s,
    )
    ids = {"scope": body.scope, "child_run_id": child, "run_id": body.run_id, "request_id": body.request_id}
    answer, status = job_result(state, ids)
    if status == 200 and answer["ok"]:
        items = answer.get("items")
        answer["items"] = items if isinstance(items, list) else []
        answer.setdefault("count", len(answer["items"]))
    return json_response(answer, status)


routes = [
    ApiRoute(
        "/api/gateway/kg/query",
        kg_query,
        methods=["POST"],
        summary="Query the knowledge graph",
        tags=["kg"],
        body=KgQueryRequest,
        query=MediaWaitQuery,
        response=KgQueryResponse,
        accepted=JobPending,
        errors=(400, 404, 409, 413, 422),
        needs=RUN,
        bound="handler",
    ),
]
