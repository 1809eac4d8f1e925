"""Prompt-cache job requests: one declaration for the API and the runner.

A prompt-cache request becomes a `prompt_cache` job whose request is `{"operation", "params"}`; the
params are the route's body or query fields (without wait_s) plus the session id of the path. The API
decodes the body / query with these Structs; the runner converts the stored params with the Struct of
their operation (PARAMS) before it touches the LLM.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from msgspec import Meta, Struct

from ..errors import BadValue

Name = Annotated[str, Meta(min_length=1, max_length=256)]  # provider, model
Key = Annotated[str, Meta(min_length=1, max_length=1_000)]  # a cache key or namespace
Label = Annotated[str, Meta(max_length=160)]
Text = Annotated[str, Meta(max_length=1_000_000)]
Ttl = Annotated[float, Meta(gt=0, le=30 * 86_400)]
SessionVersion = Annotated[int, Meta(ge=1, le=10)]
HashVersion = Annotated[int, Meta(ge=1, le=1_000)]
SaveName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
MAX_SESSION_ID = 256
SessionId = Annotated[str, Meta(min_length=1, max_length=MAX_SESSION_ID)]
# A session's cache modules: each is prefilled into the KV cache of the runner's one LLM, under its
# lock; 12 modules / 256 kB is the original gateway's limit, kept (the API answers 400 past it).
MAX_MODULES = 12
MAX_MODULES_BYTES = 256_000


def check_modules(
    modules: list[dict[str, Any]] | None, refuse: Callable[[str], Exception] = BadValue
) -> None:
    """At most MAX_MODULES modules, MAX_MODULES_BYTES as compact JSON; `refuse(reason)` otherwise."""
    if modules is None:
        return
    if len(modules) > MAX_MODULES:
        raise refuse(f"modules must contain at most {MAX_MODULES} items")
    size = len(json.dumps(modules, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_MODULES_BYTES:
        raise refuse(f"modules payload is too large ({size} bytes; max {MAX_MODULES_BYTES})")


class Target(Struct, kw_only=True):
    provider: Name
    model: Name


class SessionTarget(Target, kw_only=True):
    bundle_id: Label | None = None
    bundle_version: Annotated[str, Meta(max_length=80)] | None = None
    flow_id: Label | None = None
    template_id: Label | None = None
    version: SessionVersion = 1


class SessionsFilter(Struct, kw_only=True):
    session_id: Annotated[str, Meta(max_length=MAX_SESSION_ID)] | None = None


class SetRequest(Target, kw_only=True):
    key: Key
    make_default: bool = True
    ttl_s: Ttl | None = None


class UpdateRequest(Target, kw_only=True):
    key: Key
    prompt: Text | None = None
    messages: list[dict[str, Any]] | None = None
    system_prompt: Text | None = None
    tools: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = False
    ttl_s: Ttl | None = None


class ForkRequest(Target, kw_only=True):
    from_key: Key
    to_key: Key
    make_default: bool = False
    ttl_s: Ttl | None = None


class ClearRequest(Target, kw_only=True):
    key: Key | None = None  # omitted: every in-process cache of this provider/model


class PrepareModulesRequest(Target, kw_only=True):
    namespace: Key
    modules: list[dict[str, Any]]
    make_default: bool = False
    ttl_s: Ttl | None = None
    version: HashVersion = 1
    thinking: bool | Annotated[str, Meta(max_length=32)] | None = None


class SaveRequest(Target, kw_only=True):
    name: SaveName  # stored under the runner's DATA_DIR/prompt_cache
    key: Key
    q8: bool = False


class LoadRequest(Target, kw_only=True):
    name: SaveName
    key: Key | None = None
    make_default: bool = False
    clear_existing: bool = False


class SessionRequest(Target, kw_only=True):
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


# --- what the runner receives: the fields above, plus the session id of the route's path -------------
class SessionStatusParams(SessionTarget, kw_only=True):
    session_id: SessionId


class SessionParams(SessionRequest, kw_only=True):
    session_id: SessionId


class SessionClearAllParams(Struct, kw_only=True):
    session_id: SessionId


PARAMS: dict[str, type[Struct]] = {
    "stats": Target,
    "capabilities": Target,
    "saved": Target,
    "set": SetRequest,
    "update": UpdateRequest,
    "fork": ForkRequest,
    "clear": ClearRequest,
    "prepare_modules": PrepareModulesRequest,
    "save": SaveRequest,
    "load": LoadRequest,
    "session_status": SessionStatusParams,
    "session_prepare": SessionParams,
    "session_clear": SessionParams,
    "session_rebuild": SessionParams,
    "session_clear_all": SessionClearAllParams,
    "sessions_list": SessionsFilter,
}


class PromptCacheJob(Struct):
    """A stored prompt_cache job request."""

    operation: str
    params: dict[str, Any] = {}
