"""Does the LLM endpoint of the output.text capability default answer? (health and discovery)

One `GET {base_url}/models` (the OpenAI-compatible listing vLLM, LM Studio and llama.cpp servers serve),
with a short timeout, from the worker thread the route's store reads run in, remembered for PROBE_TTL_S so a polled /api/health costs no
request most of the time. Plain urllib: the API process imports no LLM client library.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from shared_store.capability_defaults import CapabilityDefault, default_for
from shared_store.db import Database

PROBE_TIMEOUT_S = 2.0
PROBE_TTL_S = 10.0
# Where these providers listen when the default names no base URL (AbstractCore's own defaults).
LOCAL_BASE_URLS = {
    "vllm": "http://localhost:8000/v1",
    "lmstudio": "http://localhost:1234/v1",
    "ollama": "http://localhost:11434/v1",
}


@dataclass(frozen=True)
class Probe:
    answers: bool | None  # None: nothing to probe (a hosted provider without a base URL)
    detail: str
    models: list[str] = field(default_factory=list)


_cache: dict[str, tuple[float, Probe]] = {}
_lock = threading.Lock()


def _get_models(base_url: str) -> Probe:
    # Imported at the first probe: ~330 KB that a gateway without an LLM endpoint never needs.
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            body = json.loads(response.read(1_000_000) or b"{}")
    except urllib.error.HTTPError as exc:
        # An answer all the same (an auth-protected listing, say): the server is up.
        return Probe(True, f"GET {url} answered {exc.code}")
    except (OSError, ValueError) as exc:
        return Probe(False, f"GET {url} failed: {exc}")
    data = body.get("data") if isinstance(body, dict) else None
    models = [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")] if data else []
    return Probe(True, f"GET {url} answered", models)


def probe(base_url: str) -> Probe:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(base_url)
        if cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
    found = _get_models(base_url)
    with _lock:
        _cache[base_url] = (time.monotonic(), found)
    return found


def _base_url(default: CapabilityDefault) -> str | None:
    return default.base_url or LOCAL_BASE_URLS.get(default.provider)


def text_endpoint(db: Database, *, detailed: bool) -> dict[str, Any] | None:
    """The output.text default and whether its endpoint answers; None when there is no default.
    Blocking (a store read, maybe one HTTP probe): callers run it in a worker thread (`reading`).
    `detailed` adds the URL and the served models (discovery; health leaves them out)."""
    default = default_for(db, "output.text")
    if default is None:
        return None
    base_url = _base_url(default)
    found = probe(base_url) if base_url else Probe(None, "a hosted provider: not probed")
    out: dict[str, Any] = {"route": "output.text", "provider": default.provider, "answers": found.answers}
    if detailed:
        out.update(model=default.model, base_url=base_url, detail=found.detail, served_models=found.models)
        if found.models and default.model:
            out["model_served"] = default.model in found.models
    return out
