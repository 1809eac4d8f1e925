"""msgspec Structs of the prompt-cache routes: the original gateway's request fields, with bounds.

The bodies and the queries' fields are the shared rules of shared_store.contracts.prompt_cache, which
the runner applies to the stored job too. Bodies ignore unknown fields (as the original's models did);
queries refuse unknown names (400). `wait_s` (query) bounds how long a request waits for the runner's
answer, as for media jobs.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from shared_store.contracts.prompt_cache import (
    ClearRequest,
    ForkRequest,
    LoadRequest,
    PrepareModulesRequest,
    SaveRequest,
    SessionRequest,
    SessionsFilter,
    SessionTarget,
    SetRequest,
    Target,
    UpdateRequest,
)

WaitS = Annotated[float, Meta(ge=0, le=300)]


class WaitQuery(Struct, forbid_unknown_fields=True):
    wait_s: WaitS = 60.0


# The queries are the shared params (what the runner checks again) plus wait_s.
class TargetQuery(Target, forbid_unknown_fields=True, kw_only=True):
    wait_s: WaitS = 60.0


class SessionStatusQuery(SessionTarget, forbid_unknown_fields=True, kw_only=True):
    wait_s: WaitS = 60.0


class SessionsListQuery(SessionsFilter, forbid_unknown_fields=True, kw_only=True):
    wait_s: WaitS = 60.0


class PromptCacheResponse(Struct, omit_defaults=True):
    """The runner's answer (the original's fields; which appear depends on the operation), plus
    `child_run_id` (the job). `supported: false` with `code: prompt_cache_unavailable` where this
    gateway has no prompt-cache control for that provider/model."""

    ok: bool
    child_run_id: str
    supported: bool | None = None
    operation: str | None = None
    code: str | None = None
    error: str | None = None
    capabilities: dict[str, Any] | None = None
    stats: Any = None
    session_id: str | None = None
    namespace: str | None = None
    prompt_cache_key: str | None = None
    mode: str | None = None
    runtime_hint: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    caches: list[Any] | None = None
    cleared: Any = None
    count: int | None = None
    items: list[Any] | None = None


class PromptCachePending(Struct):
    """202: the job is durable but the runner has not answered within wait_s (follow child_run_id)."""

    ok: bool
    pending: bool
    child_run_id: str


__all__ = [
    "ClearRequest",
    "ForkRequest",
    "LoadRequest",
    "PrepareModulesRequest",
    "SaveRequest",
    "SessionRequest",
    "SetRequest",
    "UpdateRequest",
]
