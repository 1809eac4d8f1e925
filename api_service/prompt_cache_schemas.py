"""msgspec Structs of the prompt-cache routes: the original gateway's request fields, with bounds.

Bodies ignore unknown fields (as the original's models did); queries refuse unknown names (400).
`wait_s` (query) bounds how long a request waits for the runner's answer, as for media jobs.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

Name = Annotated[str, Meta(min_length=1, max_length=256)]  # provider, model
Key = Annotated[str, Meta(min_length=1, max_length=1_000)]  # a cache key or namespace
Label = Annotated[str, Meta(max_length=160)]
Text = Annotated[str, Meta(max_length=1_000_000)]
Ttl = Annotated[float, Meta(gt=0, le=30 * 86_400)]
WaitS = Annotated[float, Meta(ge=0, le=300)]
SessionVersion = Annotated[int, Meta(ge=1, le=10)]
HashVersion = Annotated[int, Meta(ge=1, le=1_000)]
SaveName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class WaitQuery(Struct, forbid_unknown_fields=True):
    wait_s: WaitS = 60.0


class TargetQuery(Struct, forbid_unknown_fields=True):
    provider: Name
    model: Name
    wait_s: WaitS = 60.0


class SessionStatusQuery(Struct, forbid_unknown_fields=True):
    provider: Name
    model: Name
    bundle_id: Label | None = None
    bundle_version: Annotated[str, Meta(max_length=80)] | None = None
    flow_id: Label | None = None
    template_id: Label | None = None
    version: SessionVersion = 1
    wait_s: WaitS = 60.0


class SessionsListQuery(Struct, forbid_unknown_fields=True):
    session_id: Annotated[str, Meta(max_length=256)] | None = None
    wait_s: WaitS = 60.0


class _Target(Struct, kw_only=True):
    provider: Name
    model: Name


class SetRequest(_Target, kw_only=True):
    key: Key
    make_default: bool = True
    ttl_s: Ttl | None = None


class UpdateRequest(_Target, kw_only=True):
    key: Key
    prompt: Text | None = None
    messages: list[dict[str, Any]] | None = None
    system_prompt: Text | None = None
    tools: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = False
    ttl_s: Ttl | None = None


class ForkRequest(_Target, kw_only=True):
    from_key: Key
    to_key: Key
    make_default: bool = False
    ttl_s: Ttl | None = None


class ClearRequest(_Target, kw_only=True):
    key: Key | None = None  # omitted: every in-process cache of this provider/model


class PrepareModulesRequest(_Target, kw_only=True):
    namespace: Key
    modules: list[dict[str, Any]]
    make_default: bool = False
    ttl_s: Ttl | None = None
    version: HashVersion = 1
    thinking: bool | Annotated[str, Meta(max_length=32)] | None = None


class SaveRequest(_Target, kw_only=True):
    name: SaveName  # stored under the runner's DATA_DIR/prompt_cache
    key: Key
    q8: bool = False


class LoadRequest(_Target, kw_only=True):
    name: SaveName
    key: Key | None = None
    make_default: bool = False
    clear_existing: bool = False


class SessionRequest(_Target, kw_only=True):
    bundle_id: Label | None = None
    bundle_version: Annotated[str, Meta(max_length=80)] | None = None
    flow_id: Label | None = None
    template_id: Label | None = None
    version: SessionVersion = 1
    modules: list[dict[str, Any]] | None = None
    system_prompt: Annotated[str, Meta(max_length=20_000)] | None = None
    workflow_instructions: Annotated[str, Meta(max_length=20_000)] | None = None
    tools: list[dict[str, Any]] | None = None
    pinned_attachments: list[dict[str, Any]] | None = None
    make_default: bool = False
    ttl_s: Ttl | None = None


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
