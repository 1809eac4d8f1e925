"""Prompt-cache control, the original gateway's routes. The LLM and its KV caches live in a runner
(runner_service.prompt_cache), so each request appends a durable `prompt_cache` job and waits up to
`?wait_s=` (default 60, capped by ABSTRACTGATEWAY_MAX_WAIT_S) for the runner's answer: 200 with it, or
202 `{"pending": true, "child_run_id"}` to follow on the ledger / SSE. Bad input is refused here (4xx,
no job)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from shared_store.contracts.prompt_cache import MAX_SESSION_ID, check_modules
from shared_store.media_jobs import PROMPT_CACHE

from ..access import READ, RUN
from ..errors import ApiError
from ..http import ApiRoute, json_response
from ..prompt_cache_schemas import (
    ClearRequest,
    ForkRequest,
    LoadRequest,
    PrepareModulesRequest,
    PromptCachePending,
    PromptCacheResponse,
    SaveRequest,
    SessionRequest,
    SessionsListQuery,
    SessionStatusQuery,
    SetRequest,
    TargetQuery,
    UpdateRequest,
    WaitQuery,
)
from .media import job_result, submit_job


def _session_id(request: Request) -> str:
    session_id = str(request.path_params["session_id"]).strip()
    if not session_id or len(session_id) > MAX_SESSION_ID:  # a path segment: 400, as the original
        raise ApiError(400, f"session_id must be 1..{MAX_SESSION_ID} characters")
    return session_id


def _params(value: msgspec.Struct, **extra: Any) -> dict[str, Any]:
    data = {k: v for k, v in msgspec.to_builtins(value).items() if v is not None and k != "wait_s"}
    return {**data, **extra}


async def _job(request: Request, operation: str, params: dict[str, Any], wait_s: float) -> Response:
    child, state = await submit_job(
        request,
        kind=PROMPT_CACHE,
        job_request={"operation": operation, "params": params},
        parent_run_id=None,
        request_id=None,
        wait_s=wait_s,
    )
    answer, status = job_result(state, {"child_run_id": child})
    return json_response(answer, status)


async def prompt_cache_stats(request: Request, query: TargetQuery) -> Response:
    """The provider's prompt-cache stats (`stats`) for the runner's provider/model."""
    return await _job(request, "stats", _params(query), query.wait_s)


async def prompt_cache_capabilities(request: Request, query: TargetQuery) -> Response:
    """What prompt-cache control the provider/model has (`capabilities`: supported, mode, supports_*)."""
    return await _job(request, "capabilities", _params(query), query.wait_s)


async def prompt_cache_saved(request: Request, query: TargetQuery) -> Response:
    """Saved (exported) prompt caches of the provider/model (`items`)."""
    return await _job(request, "saved", _params(query), query.wait_s)


async def prompt_cache_set(request: Request, body: SetRequest, query: WaitQuery) -> Response:
    """Create or select the cache `key` (`make_default`, `ttl_s`)."""
    return await _job(request, "set", _params(body), query.wait_s)


async def prompt_cache_update(request: Request, body: UpdateRequest, query: WaitQuery) -> Response:
    """Append `prompt` / `messages` / `system_prompt` / `tools` into the cache `key`."""
    return await _job(request, "update", _params(body), query.wait_s)


async def prompt_cache_fork(request: Request, body: ForkRequest, query: WaitQuery) -> Response:
    """Copy the cache `from_key` to `to_key`."""
    return await _job(request, "fork", _params(body), query.wait_s)


async def prompt_cache_clear(request: Request, body: ClearRequest, query: WaitQuery) -> Response:
    """Clear the cache `key`, or every cache of the provider/model when `key` is omitted."""
    return await _job(request, "clear", _params(body), query.wait_s)


async def prompt_cache_prepare_modules(
    request: Request, body: PrepareModulesRequest, query: WaitQuery
) -> Response:
    """Prepare hierarchical cache `modules` under `namespace` (at most 12, 256 kB: 400 otherwise)."""
    check_modules(body.modules)  # BadValue: 400 by the errors table, as the original
    return await _job(request, "prepare_modules", _params(body), query.wait_s)


async def prompt_cache_save(request: Request, body: SaveRequest, query: WaitQuery) -> Response:
    """Save (export) the cache `key` as `name` in the runner's data dir."""
    return await _job(request, "save", _params(body), query.wait_s)


async def prompt_cache_load(request: Request, body: LoadRequest, query: WaitQuery) -> Response:
    """Load (import) the saved cache `name` into `key`."""
    return await _job(request, "load", _params(body), query.wait_s)


async def session_status(request: Request, query: SessionStatusQuery) -> Response:
    """The session's cache identity (`namespace`, `prompt_cache_key`, `runtime_hint`), capabilities and
    stats."""
    return await _job(
        request, "session_status", _params(query, session_id=_session_id(request)), query.wait_s
    )


async def _session_post(request: Request, operation: str, body: SessionRequest, query: WaitQuery) -> Response:
    session_id = _session_id(request)
    check_modules(body.modules)  # BadValue: 400 by the errors table, as the original
    return await _job(request, operation, _params(body, session_id=session_id), query.wait_s)


async def session_prepare(request: Request, body: SessionRequest, query: WaitQuery) -> Response:
    """Prepare the session's cache from `modules` (or system_prompt / workflow_instructions / tools /
    pinned_attachments) and answer its key (`prepared`, `prefix_cache_key`, `provider_responses`)."""
    return await _session_post(request, "session_prepare", body, query)


async def session_clear(request: Request, body: SessionRequest, query: WaitQuery) -> Response:
    """Clear the session's cache key (`cleared`)."""
    return await _session_post(request, "session_clear", body, query)


async def session_rebuild(request: Request, body: SessionRequest, query: WaitQuery) -> Response:
    """Clear, then prepare again (`clear_result`, `prepare_result`)."""
    return await _session_post(request, "session_rebuild", body, query)


async def session_clear_all(request: Request, query: WaitQuery) -> Response:
    """Clear every cache the runner's LLM minted for this session (`cleared`, `count`)."""
    return await _job(request, "session_clear_all", {"session_id": _session_id(request)}, query.wait_s)


async def sessions_list(request: Request, query: SessionsListQuery) -> Response:
    """The prompt caches the runner's LLM holds, with the session each belongs to (`caches`);
    `?session_id=` filters."""
    return await _job(request, "sessions_list", _params(query), query.wait_s)


def _route(path: str, handler: Any, method: str, summary: str, *, body: type | None, query: type) -> ApiRoute:
    return ApiRoute(
        f"/api/gateway/{path}",
        handler,
        methods=[method],
        summary=summary,
        tags=["prompt_cache"],
        body=body,
        query=query,
        response=PromptCacheResponse,
        accepted=PromptCachePending,
        errors=(400, 413, 422) if body is not None else (400, 422),
        # Reading the runner's caches is `read`; changing them is LLM work, as a run's is: `run`.
        needs=READ if method == "GET" else RUN,
    )


SESSION = "sessions/{session_id}/prompt_cache"
routes = [
    _route("prompt_cache/stats", prompt_cache_stats, "GET", "Prompt cache stats", body=None, query=TargetQuery),
    _route("prompt_cache/capabilities", prompt_cache_capabilities, "GET", "Prompt cache capabilities",
           body=None, query=TargetQuery),
    _route("prompt_cache/saved", prompt_cache_saved, "GET", "Saved prompt caches", body=None, query=TargetQuery),
    _route("prompt_cache/set", prompt_cache_set, "POST", "Set a prompt cache key", body=SetRequest, query=WaitQuery),
    _route("prompt_cache/update", prompt_cache_update, "POST", "Append to a prompt cache", body=UpdateRequest,
           query=WaitQuery),
    _route("prompt_cache/fork", prompt_cache_fork, "POST", "Fork a prompt cache", body=ForkRequest, query=WaitQuery),
    _route("prompt_cache/clear", prompt_cache_clear, "POST", "Clear prompt caches", body=ClearRequest,
           query=WaitQuery),
    _route("prompt_cache/prepare_modules", prompt_cache_prepare_modules, "POST", "Prepare prompt cache modules",
           body=PrepareModulesRequest, query=WaitQuery),
    _route("prompt_cache/save", prompt_cache_save, "POST", "Save a prompt cache", body=SaveRequest, query=WaitQuery),
    _route("prompt_cache/load", prompt_cache_load, "POST", "Load a saved prompt cache", body=LoadRequest,
           query=WaitQuery),
    _route("sessions/prompt_cache", sessions_list, "GET", "Session prompt caches", body=None,
           query=SessionsListQuery),
    _route(f"{SESSION}/status", session_status, "GET", "Session prompt cache status", body=None,
           query=SessionStatusQuery),
    _route(f"{SESSION}/prepare", session_prepare, "POST", "Prepare a session prompt cache", body=SessionRequest,
           query=WaitQuery),
    _route(f"{SESSION}/clear", session_clear, "POST", "Clear a session prompt cache", body=SessionRequest,
           query=WaitQuery),
    _route(f"{SESSION}/rebuild", session_rebuild, "POST", "Rebuild a session prompt cache", body=SessionRequest,
           query=WaitQuery),
    _route(f"{SESSION}/clear_all", session_clear_all, "POST", "Clear all of a session's prompt caches",
           body=None, query=WaitQuery),
]  # fmt: skip
