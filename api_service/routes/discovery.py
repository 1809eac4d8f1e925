"""Discovery: what this deployment can do, from the capabilities its live runners publish.

Each runner publishes a dict at registration (runner_service/media/capabilities.probe()):
`{"<package>": {"installed", "version"}, "voice": {...}, "vision": {...}, "music": {...}, "video": {...},
"kg": {...}}` with catalogs inside the modality sections (`voice.voices`, `voice.speech_models`,
`vision.vision_models`, `music.music_models`). The API merges the live runners' dicts (a boolean is
true if any runner says so, lists are unioned, the first runner's value wins otherwise) and reads
every key defensively: a runner of another version may publish less.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from shared_store.capability_defaults import list_defaults
from shared_store.runners import live_runners

from ..access import READ
from ..http import ApiRoute, reading
from ..llm_probe import text_endpoint
from ..media_schemas import CapabilitiesResponse, CatalogResponse
from . import gateway

NO_RUNNER = "no live runner: start `abstractgateway runner` (capabilities come from the runners)"


def merge(a: Any, b: Any) -> Any:
    """Merge two capability values: dicts key by key, booleans OR, lists unioned, else the first."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out[key], value) if key in out else value
        return out
    if isinstance(a, bool) and isinstance(b, bool):
        return a or b
    if isinstance(a, list) and isinstance(b, list):
        out_list, seen = [], set()
        for item in (*a, *b):
            key = _key(item)
            if key not in seen:
                seen.add(key)
                out_list.append(item)
        return out_list
    return b if a is None else a


def _key(item: Any) -> bytes:
    try:
        return msgspec.json.encode(item, order="sorted")
    except (TypeError, msgspec.EncodeError):
        return repr(item).encode()


async def merged_capabilities(request: Request) -> tuple[dict[str, Any], list[str]]:
    runners = await reading(live_runners, gateway(request).db)
    merged: dict[str, Any] = {}
    for runner in runners:
        if isinstance(runner.capabilities, dict):
            merged = merge(merged, runner.capabilities)
    return merged, [r.runner_id for r in runners]


async def capabilities(request: Request) -> object:
    """The merged capabilities of the live runners (a modality is available if any live runner has
    it), and their ids, plus `capability_defaults` (config set-default) and `llm` (the output.text
    default's endpoint: answers, served models). No live runner: `available: false` and a `detail`."""
    caps, runner_ids = await merged_capabilities(request)
    db = gateway(request).db
    # What the operator routed where (config set-default), and whether the text endpoint answers.
    configured = {
        "capability_defaults": [d.to_json() for d in await reading(list_defaults, db)],
        "llm": await reading(text_endpoint, db, detailed=True),
    }
    if not runner_ids:
        return CapabilitiesResponse(configured, [], False, NO_RUNNER)
    return CapabilitiesResponse({**caps, **configured}, runner_ids, True)


# path -> (modality section, catalog key, the flags (`<flag>: bool` or `<flag>: {"available"}`) that say
# this catalog's backend works; without any, the section's own `available`, or a non-empty catalog)
CATALOGS = {
    "voice/voices": ("voice", "voices", ("tts_available", "tts")),
    "audio/speech/models": ("voice", "speech_models", ("stt_available", "stt")),
    "vision/models": ("vision", "vision_models", ()),
    "audio/music/models": ("music", "music_models", ()),
}


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict) and isinstance(value.get("available"), bool):
        return value["available"]
    return None


async def catalog(request: Request, path: str) -> CatalogResponse:
    section_name, items_key, flag_keys = CATALOGS[path]
    caps, runner_ids = await merged_capabilities(request)
    if not runner_ids:
        return CatalogResponse([], False, [], NO_RUNNER)
    section = caps.get(section_name)
    section = section if isinstance(section, dict) else {}
    items = section.get(items_key)
    items = items if isinstance(items, list) else []
    flags = [f for f in (_flag(section.get(key)) for key in flag_keys) if f is not None]
    if flags:
        available = any(flags)
    elif isinstance(section.get("available"), bool):
        available = section["available"]
    else:
        available = bool(items)
    detail = None
    if not available:
        why = section.get("error")
        detail = f"no live runner has a usable {section_name} backend" + (f": {why}" if why else "")
    return CatalogResponse(items, available, runner_ids, detail)


async def voice_voices(request: Request) -> object:
    """TTS voices the live runners offer (`voice.voices`)."""
    return await catalog(request, "voice/voices")


async def speech_models(request: Request) -> object:
    """Speech-to-text models the live runners offer (`voice.speech_models`)."""
    return await catalog(request, "audio/speech/models")


async def vision_models(request: Request) -> object:
    """Image generation / edit models the live runners offer (`vision.vision_models`)."""
    return await catalog(request, "vision/models")


async def music_models(request: Request) -> object:
    """Music generation models the live runners offer (`music.music_models`)."""
    return await catalog(request, "audio/music/models")


def _get(path: str, handler: Any, summary: str, response: type) -> ApiRoute:
    return ApiRoute(
        f"/api/gateway/{path}",
        handler,
        methods=["GET"],
        summary=summary,
        tags=["discovery"],
        response=response,
        needs=READ,
        bound="open",
    )


routes = [
    _get("discovery/capabilities", capabilities, "What this deployment can do", CapabilitiesResponse),
    _get("voice/voices", voice_voices, "TTS voices", CatalogResponse),
    _get("audio/speech/models", speech_models, "Speech-to-text models", CatalogResponse),
    _get("vision/models", vision_models, "Image models", CatalogResponse),
    _get("audio/music/models", music_models, "Music models", CatalogResponse),
]
