"""Request rules the API and the runners share: one msgspec declaration each. Light on purpose: msgspec
and the store's own modules only (the API imports this; it must stay free of the runner and of every
ML stack).

The API validates a request with these Structs; a runner validates the stored job request or command
payload with the same Structs (`check_media_request`, `check_command_payload`) before doing any work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ..errors import BadValue, RequestInvalid
from ..media_jobs import PROMPT_CACHE
from . import prompt_cache
from .commands import COMMAND_PAYLOADS
from .media import MEDIA_REQUESTS

Refusal = Callable[[str], Exception]


def _convert(payload: Mapping[str, Any], struct: type[msgspec.Struct], where: str) -> msgspec.Struct:
    try:
        return msgspec.convert(payload, struct)
    except msgspec.ValidationError as exc:
        # msgspec names the field and the bound: "Expected `str` of length <= 20000 - at `$.text`".
        detail = str(exc)
        if where:
            detail = detail.replace("`$", f"`$.{where}")
            detail += "" if "- at `" in detail else f" - at `$.{where}`"
        raise RequestInvalid(detail) from None


def check_media_request(
    kind: str, request: Mapping[str, Any], refuse: Refusal = RequestInvalid
) -> msgspec.Struct | None:
    """The request of a `kind` job as its Struct (a prompt_cache job: its params, as the Struct of
    its operation); `refuse(reason)` is raised when the rule refuses it. None for an unknown kind."""
    if not isinstance(request, Mapping):
        raise refuse(f"a {kind} request must be an object")
    try:
        if kind == PROMPT_CACHE:
            return _prompt_cache(request)
        struct = MEDIA_REQUESTS.get(kind)
        return None if struct is None else _convert(request, struct, "")
    except (RequestInvalid, BadValue) as exc:  # BadValue: the prompt-cache modules limit
        raise refuse(str(exc)) from None


def _prompt_cache(request: Mapping[str, Any]) -> msgspec.Struct:
    job = _convert(request, prompt_cache.PromptCacheJob, "")
    assert isinstance(job, prompt_cache.PromptCacheJob)
    struct = prompt_cache.PARAMS.get(job.operation)
    if struct is None:
        raise RequestInvalid(f"unknown prompt cache operation {job.operation!r}")
    params = _convert(job.params, struct, "params")
    prompt_cache.check_modules(getattr(params, "modules", None))
    return params


def check_command_payload(
    command_type: str, payload: Any, refuse: Refusal = RequestInvalid
) -> msgspec.Struct | None:
    """A command's payload as its Struct; `refuse(reason)` is raised when the rule refuses it. None for
    a type without a client payload (the runner's internal deliver_event)."""
    struct = COMMAND_PAYLOADS.get(command_type)
    if struct is None:
        return None
    if not isinstance(payload, Mapping):
        raise refuse(f"invalid payload for {command_type}: Expected `object` - at `$.payload`")
    try:
        return _convert(payload, struct, "payload")
    except RequestInvalid as exc:
        raise refuse(f"invalid payload for {command_type}: {exc}") from None


__all__ = ["COMMAND_PAYLOADS", "MEDIA_REQUESTS", "Refusal", "check_command_payload", "check_media_request"]
