"""Prompt-cache control jobs: the `/api/gateway/prompt_cache/*` and `/sessions/.../prompt_cache/*` routes
append a `prompt_cache` job; a runner executes it here, against the same abstractcore provider its
llm_calls use (runner_service.llm.shared_provider: the KV caches live in that object).

The answers keep the original gateway's fields (`supported`, `operation`, `capabilities`, `code`,
`error`, and for sessions `namespace`, `prompt_cache_key`, `runtime_hint`, `identity`, `mode`, ...).
No usable control here (no LLM configured, another provider/model asked for, or a provider whose
capabilities say it has none, e.g. a remote OpenAI-compatible server) answers
`{"supported": false, "code": "prompt_cache_unavailable", "error", "capabilities"}`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from .llm import ENV_MODEL, ENV_PROVIDER, LLMSettings, make_client
from .media.backends import BadMediaRequest, MediaInput, MediaOutput

EMPTY_CAPS = {"supported": False, "mode": "none"}
MAX_PROVIDER_PAYLOAD_BYTES = 40_000
MAX_MODULES = 12
MAX_MODULES_BYTES = 256_000
# No principals in this gateway: every caller shares one scope (a bearer token is not an identity).
PRINCIPAL_SCOPE = "anonymous"

_lock = threading.Lock()  # one control operation at a time; the cache dicts are the provider's


# --- the control client ---------------------------------------------------------------------------------
def _control(provider: str | None, model: str | None) -> tuple[Any, str | None]:
    """(client, None), or (None, why there is no prompt-cache control for provider/model here)."""
    settings = LLMSettings.from_env()
    if not settings.configured:
        return None, f"no LLM is configured on the runner (set {ENV_PROVIDER} and {ENV_MODEL})"
    if provider is not None and (
        provider.strip().lower() != str(settings.provider).lower() or (model or "").strip() != settings.model
    ):
        return None, (
            f"this gateway's runners serve provider {settings.provider!r} model {settings.model!r}; "
            f"{provider!r} / {model!r} has no prompt cache here"
        )
    try:  # a thin client over the process's shared provider: cheap once the provider exists
        return make_client(settings), None
    except Exception as exc:  # abstractcore raises assorted types for an unusable provider
        return None, f"could not set up provider {settings.provider!r}: {type(exc).__name__}: {exc}"


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _bounded(value: Any, max_bytes: int = MAX_PROVIDER_PAYLOAD_BYTES) -> Any:
    raw = json.dumps(value, default=str, sort_keys=True, separators=(",", ":"))
    size = len(raw.encode("utf-8"))
    if size <= max_bytes:
        return json.loads(raw)
    return {"omitted": True, "reason": "provider response exceeded the response budget", "size_bytes": size,
            "max_bytes": max_bytes}  # fmt: skip


def _caps(client: Any, provider: str, model: str) -> dict[str, Any]:
    try:
        info = client.get_prompt_cache_capabilities(provider=provider, model=model)
    except Exception as exc:
        return {"supported": False, "error": str(exc), "capabilities": dict(EMPTY_CAPS)}
    caps = info.get("capabilities") if isinstance(info, dict) else None
    if not isinstance(caps, dict):
        return {"supported": False, "capabilities": dict(EMPTY_CAPS)}
    out = {"supported": bool(info.get("supported")), "capabilities": dict(caps)}
    if info.get("error"):
        out["error"] = str(info["error"])
    return out


def _unavailable(operation: str, error: str, caps: dict[str, Any] | None = None, **extra: Any) -> dict:
    return {"ok": False, "supported": False, "operation": operation, "code": "prompt_cache_unavailable",
            "error": error, "capabilities": caps or dict(EMPTY_CAPS), **extra}  # fmt: skip


def _call(
    client: Any, method: str, operation: str, provider: str, model: str, payload: dict | None = None
) -> dict:
    """One client operation, answered like the original: the client's dict (operation and capabilities
    filled in), or supported=false with a code."""
    caps = _caps(client, provider, model)["capabilities"]
    fn = getattr(client, method, None)
    if not callable(fn):
        return {"supported": False, "operation": operation, "code": "prompt_cache_unsupported",
                "error": "the runner's LLM client does not expose this prompt cache operation",
                "capabilities": caps}  # fmt: skip
    try:
        result = fn(**{**(payload or {}), "provider": provider, "model": model})
    except Exception as exc:
        return {"supported": False, "operation": operation, "code": "prompt_cache_error", "error": str(exc),
                "capabilities": caps}  # fmt: skip
    if isinstance(result, dict):
        result.setdefault("operation", operation)
        result.setdefault("capabilities", caps)
        return _json_safe(result)
    if isinstance(result, bool):
        return {"supported": True, "operation": operation, "ok": result, "capabilities": caps}
    return _json_safe({"supported": True, "operation": operation, "result": result, "capabilities": caps})


def _ok(answer: dict[str, Any]) -> dict[str, Any]:
    """`ok` as the job's answer needs it (the original omits it on some operations)."""
    answer.setdefault("ok", bool(answer.get("supported")) and answer.get("code") is None)
    return answer


# --- provider-level operations -------------------------------------------------------------------------
# operation -> (client method, the name the answer reports, the request fields passed on)
CLIENT_OPERATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "stats": ("get_prompt_cache_stats", "stats", ()),
    "set": ("prompt_cache_set", "set", ("key", "make_default", "ttl_s")),
    "update": ("prompt_cache_update", "update",
               ("key", "prompt", "messages", "system_prompt", "tools", "add_generation_prompt", "ttl_s")),
    "fork": ("prompt_cache_fork", "fork", ("from_key", "to_key", "make_default", "ttl_s")),
    "clear": ("prompt_cache_clear", "clear", ("key",)),
    "prepare_modules": ("prompt_cache_prepare_modules", "prepare_modules",
                        ("namespace", "modules", "make_default", "ttl_s", "version", "thinking")),
    "saved": ("list_prompt_cache_exports", "list_exports", ()),
    "save": ("prompt_cache_export", "export", ("name", "key", "q8")),
    "load": ("prompt_cache_import", "import", ("name", "key", "make_default", "clear_existing")),
}  # fmt: skip
ADMIN = {"saved", "save", "load"}  # answered with `source` and `route_available`, as the original does


def _provider_operation(operation: str, params: dict[str, Any]) -> dict[str, Any]:
    provider, model = str(params["provider"]), str(params["model"])
    method, reported, fields = CLIENT_OPERATIONS.get(operation, ("", operation, ()))
    client, why = _control(provider, model)
    if client is None:
        extra: dict[str, Any] = {"items": []} if operation == "saved" else {}
        answer = _unavailable(reported, str(why), None, **extra)
    else:
        caps = _caps(client, provider, model)
        if not caps["supported"]:
            why = caps.get("error") or f"provider {provider!r} has no prompt-cache control"
            answer = _unavailable(reported, str(why), caps["capabilities"])
        elif operation == "capabilities":
            answer = {"supported": True, "operation": "capabilities", "capabilities": caps["capabilities"]}
        else:
            payload = {name: params.get(name) for name in fields if name in params}
            if operation == "update":
                payload["prompt"] = str(payload.get("prompt") or "")
            answer = _call(client, method, reported, provider, model, payload)
    if operation in ADMIN:
        answer.setdefault("source", "abstractruntime.host_facade")
        answer.setdefault("route_available", True)
    return _ok(answer)


# --- session operations --------------------------------------------------------------------------------
def _label(value: Any, *, fallback: str, max_len: int = 36) -> str:
    safe = re.sub(r"[^a-zA-Z0-9._-]+", "_", str(value or "").strip()).strip("._-").lower()
    return (safe[:max_len].rstrip("._-") or fallback) if safe else fallback


def session_identity(session_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The session's cache namespace and key: readable labels plus a digest of the whole identity (so
    two sessions whose labels collide after sanitising still get different keys)."""
    version = int(params.get("version") or 1)
    identity = {
        "session_id": session_id,
        "bundle_id": str(params.get("bundle_id") or "").strip(),
        "bundle_version": str(params.get("bundle_version") or "").strip(),
        "flow_id": str(params.get("flow_id") or "").strip(),
        "provider": str(params["provider"]).strip(),
        "model": str(params["model"]).strip(),
        "template_id": str(params.get("template_id") or "").strip(),
        "version": version,
    }
    raw = json.dumps({**identity, "_principal_scope": PRINCIPAL_SCOPE}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    labels = [
        f"s-{_label(session_id, fallback='session')}",
        f"b-{_label(identity['bundle_id'], fallback='bundle')}",
        f"v-{_label(identity['bundle_version'], fallback='latest', max_len=24)}",
        f"f-{_label(identity['flow_id'], fallback='flow')}",
        f"t-{_label(identity['template_id'], fallback='template')}",
        f"p-{_label(identity['provider'], fallback='provider', max_len=28)}",
        f"m-{_label(identity['model'], fallback='model', max_len=48)}",
    ]
    namespace = f"agw.pc.v{version}." + ".".join(labels) + f".h-{digest[:16]}"
    if len(namespace) > 240:
        namespace = f"agw.pc.v{version}.{labels[0]}.{labels[5]}.h-{digest[:24]}"
    return {"identity": identity, "namespace": namespace, "prompt_cache_key": f"{namespace}:session"}


def _mode(caps: dict[str, Any]) -> str:
    if not caps.get("supported"):
        return "unsupported"
    mode = str(caps.get("mode") or "").strip().lower()
    if mode in {"keyed", "local_control_plane"}:
        return mode
    if caps.get("supports_prepare_modules") or caps.get("supports_update") or caps.get("supports_fork"):
        return "local_control_plane"
    return "keyed"


def _hint(key: str, namespace: str, mode: str) -> dict[str, Any]:
    return {
        "prompt_cache_key": key,
        "_runtime": {"prompt_cache": {"key": key, "namespace": namespace, "mode": mode, "version": 1}},
    }


def _session_base(operation: str, session_id: str, params: dict, caps: dict, **extra: Any) -> dict:
    ident = session_identity(session_id, params)
    mode = _mode(caps)
    key, namespace = ident["prompt_cache_key"], ident["namespace"]
    return {
        "supported": bool(caps.get("supported")),
        "operation": operation,
        "mode": mode,
        "session_id": session_id,
        "namespace": namespace,
        "prompt_cache_key": key,
        "runtime_hint": _hint(key, namespace, mode),
        "identity": ident["identity"],
        "capabilities": caps,
        **{k: v for k, v in extra.items() if v is not None},
    }


def session_modules(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's modules, or modules made from its convenience fields (system prompt, workflow
    instructions, tools, pinned attachments), in that order."""
    if params.get("modules") is not None:
        return [dict(m) for m in params["modules"] if isinstance(m, dict)]
    modules: list[dict[str, Any]] = []
    if str(params.get("system_prompt") or "").strip():
        modules.append(
            {"module_id": "system", "system_prompt": params["system_prompt"].strip(), "scope": "shared"}
        )
    if str(params.get("workflow_instructions") or "").strip():
        modules.append(
            {"module_id": "workflow", "prompt": params["workflow_instructions"].strip(), "scope": "shared"}
        )
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict)]
    if tools:
        modules.append({"module_id": "tools", "tools": tools, "scope": "shared"})
    pins = [p for p in params.get("pinned_attachments") or [] if isinstance(p, dict)]
    if pins:
        text = json.dumps(
            {"pinned_attachments": pins}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
        modules.append({"module_id": "pinned_attachments", "prompt": text, "scope": "private"})
    return modules


def _session_start(operation: str, session_id: str, params: dict) -> tuple[Any, dict, dict | None]:
    """(client, capabilities, None) or (None, {}, the unavailable answer)."""
    provider, model = str(params["provider"]), str(params["model"])
    client, why = _control(provider, model)
    if client is None:
        caps = dict(EMPTY_CAPS)
        return None, caps, _session_base(operation, session_id, params, caps, code="prompt_cache_unavailable",
                                         error=why, ok=False)  # fmt: skip
    info = _caps(client, provider, model)
    caps = info["capabilities"]
    if not caps.get("supported"):
        why = info.get("error") or f"provider {provider!r} has no prompt-cache control"
        return None, caps, _session_base(operation, session_id, params, caps, code="prompt_cache_unavailable",
                                         error=why, ok=False)  # fmt: skip
    return client, caps, None


def _session_status(session_id: str, params: dict) -> dict:
    client, caps, answer = _session_start("status", session_id, params)
    if answer is not None:
        return answer
    payload = _session_base("status", session_id, params, caps, ok=True)
    if caps.get("supports_stats"):
        stats = _call(client, "get_prompt_cache_stats", "stats", params["provider"], params["model"])
        payload["stats"] = _bounded(stats.get("stats") if "stats" in stats else stats)
    return payload


def _failed(payload: dict, result: dict, code: str) -> None:
    payload["code"] = str(result.get("code") or code)
    if result.get("error"):
        payload["error"] = str(result["error"])


def _session_prepare(session_id: str, params: dict) -> dict:
    client, caps, answer = _session_start("prepare", session_id, params)
    if answer is not None:
        return answer
    payload = _session_base("prepare", session_id, params, caps)
    provider, model = params["provider"], params["model"]
    modules, mode = session_modules(params), payload["mode"]
    ttl_s, make_default = params.get("ttl_s"), bool(params.get("make_default", False))
    responses: dict[str, Any] = {}
    key = payload["prompt_cache_key"]
    if mode == "local_control_plane" and modules and caps.get("supports_prepare_modules"):
        prepared = _call(client, "prompt_cache_prepare_modules", "prepare_modules", provider, model,
                         {"namespace": payload["namespace"], "modules": modules, "make_default": False,
                          "ttl_s": ttl_s, "version": int(params.get("version") or 1)})  # fmt: skip
        responses["prepare_modules"] = _bounded(prepared)
        if not prepared.get("supported"):
            payload.update(ok=False, provider_responses=responses)
            _failed(payload, prepared, "prompt_cache_prepare_failed")
            return payload
        prefix = str(prepared.get("final_cache_key") or "").strip() or None
        if prefix and caps.get("supports_fork"):
            forked = _call(client, "prompt_cache_fork", "fork", provider, model,
                           {"from_key": prefix, "to_key": key, "make_default": make_default, "ttl_s": ttl_s})  # fmt: skip
            responses["fork"] = _bounded(forked)
            ok = bool(forked.get("supported")) and bool(forked.get("ok", True))
            payload.update(ok=ok, prepared=ok, prefix_cache_key=prefix, provider_responses=responses)
            if not ok:
                _failed(payload, forked, "prompt_cache_fork_failed")
            return payload
        if prefix:
            payload["prompt_cache_key"] = prefix
            payload["runtime_hint"] = _hint(prefix, payload["namespace"], mode)
        payload.update(ok=True, prepared=True, prefix_cache_key=prefix, provider_responses=responses)
        return payload
    if mode == "local_control_plane" and not modules and caps.get("supports_set"):
        selected = _call(client, "prompt_cache_set", "set", provider, model,
                         {"key": key, "make_default": make_default, "ttl_s": ttl_s})  # fmt: skip
        responses["set"] = _bounded(selected)
        ok = bool(selected.get("supported")) and bool(selected.get("ok", True))
        payload.update(ok=ok, prepared=ok, provider_responses=responses)
        if not ok:
            _failed(payload, selected, "prompt_cache_set_failed")
        return payload
    payload.update(ok=True, prepared=False, code="prompt_cache_key_hint_only",
                   hint="Provider does not expose module preparation here; pass runtime_hint.prompt_cache_key "
                        "with run input.")  # fmt: skip
    return payload


def _session_clear(session_id: str, params: dict) -> dict:
    client, caps, answer = _session_start("clear", session_id, params)
    if answer is not None:
        return answer
    payload = _session_base("clear", session_id, params, caps)
    if not caps.get("supports_clear"):
        payload.update(ok=False, code="prompt_cache_clear_unsupported",
                       error="Provider does not support clearing prompt-cache keys through this control plane.")  # fmt: skip
        return payload
    cleared = _call(client, "prompt_cache_clear", "clear", params["provider"], params["model"],
                    {"key": payload["prompt_cache_key"]})  # fmt: skip
    ok = bool(cleared.get("supported")) and bool(cleared.get("ok", True))
    payload.update(ok=ok, cleared=ok, provider_responses={"clear": _bounded(cleared)})
    if not ok:
        _failed(payload, cleared, "prompt_cache_clear_failed")
    return payload


def _session_rebuild(session_id: str, params: dict) -> dict:
    cleared = _session_clear(session_id, params)
    prepared = _session_prepare(session_id, params)
    out = {**prepared, "operation": "rebuild", "ok": bool(prepared.get("ok"))}
    out["clear_result"] = _bounded(cleared)
    out["prepare_result"] = _bounded(prepared)
    if not cleared.get("ok") and str(cleared.get("code") or "") != "prompt_cache_clear_failed":
        out.setdefault("warnings", []).append(
            "clear was unsupported or unavailable; rebuild returned a fresh prepare/key hint"
        )
    return out


def _enumerated(method: str, operation: str, session_id: str | None) -> dict:
    """list / clear_all: the runner's own client enumerates the caches it minted (session read from
    each key's metadata)."""
    client, why = _control(None, None)
    fn = getattr(client, method, None) if client is not None else None
    if not callable(fn):
        return {"ok": False, "route_available": True, "available": False, "operation": operation,
                "code": "session_caches_unavailable",
                "error": why or "the runner's LLM client does not enumerate session prompt caches"}  # fmt: skip
    try:
        result = fn(session_id=session_id)
    except Exception as exc:
        return {"ok": False, "route_available": True, "available": False, "operation": operation,
                "code": "session_caches_error", "error": str(exc)}  # fmt: skip
    out = _json_safe(dict(result) if isinstance(result, dict) else {"ok": True, "data": result})
    out.setdefault("ok", True)
    out.update(operation=operation, route_available=True, available=True)
    out.setdefault("source", "abstractruntime.host_facade")
    return out


def _sessions_list(params: dict) -> dict:
    out = _enumerated("list_session_prompt_caches", "list", params.get("session_id") or None)
    out.setdefault("caches", [])
    return out


def _session_clear_all(session_id: str, params: dict) -> dict:
    out = _enumerated("clear_session_prompt_caches", "clear_all", session_id)
    out.setdefault("cleared", [])
    if "count" not in out:
        out["count"] = len(out["cleared"]) if isinstance(out["cleared"], list) else 0
    return out


SESSION_OPERATIONS: dict[str, Callable[[str, dict], dict]] = {
    "session_status": _session_status,
    "session_prepare": _session_prepare,
    "session_clear": _session_clear,
    "session_rebuild": _session_rebuild,
    "session_clear_all": _session_clear_all,
}
OPERATIONS = (*CLIENT_OPERATIONS, "capabilities", *SESSION_OPERATIONS, "sessions_list")


def run_operation(operation: str, params: dict[str, Any]) -> dict[str, Any]:
    with _lock:
        if operation == "sessions_list":
            return _sessions_list(params)
        if operation in SESSION_OPERATIONS:
            session_id = str(params.get("session_id") or "").strip()
            if not session_id:
                raise BadMediaRequest("session_id is required")
            return SESSION_OPERATIONS[operation](session_id, params)
        if operation in CLIENT_OPERATIONS or operation == "capabilities":
            if not str(params.get("provider") or "").strip() or not str(params.get("model") or "").strip():
                raise BadMediaRequest("provider and model are required")
            return _provider_operation(operation, params)
    raise BadMediaRequest(f"unknown prompt cache operation {operation!r}")


def execute(request: dict[str, Any], inputs: dict[str, MediaInput]) -> MediaOutput:
    """The job backend: {"operation", "params"} → the operation's answer as the job's output."""
    params: dict[str, Any] = request["params"] if isinstance(request.get("params"), dict) else {}
    return MediaOutput(fields=run_operation(str(request.get("operation") or ""), dict(params)))
