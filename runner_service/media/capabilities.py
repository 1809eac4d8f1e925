"""What this runner can actually do: `GET /api/gateway/discovery/capabilities`.

Cheap by design: packages are looked up (importlib.util.find_spec + importlib.metadata), never
imported, so probing loads neither torch nor diffusers. Each modality's own catalog
(runner_service.media.voice/vision/music `catalog()`) answers for it where that module exists; it
is expected to be just as cheap.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any

# module name -> distribution name (where they differ)
PACKAGES: dict[str, str] = {
    "abstractvoice": "abstractvoice",
    "abstractvision": "abstractvision",
    "abstractmusic": "abstractmusic",
    "abstractmemory": "abstractmemory",
    "lancedb": "lancedb",
    "diffusers": "diffusers",
    "torch": "torch",
    "faster_whisper": "faster-whisper",
    "piper": "piper-tts",
    "sentence_transformers": "sentence-transformers",
    "vllm": "vllm",
}

MODALITIES = ("voice", "vision", "music")


def package_info(module: str, distribution: str | None = None) -> dict[str, Any]:
    """{"installed", "version"} for a top-level module, found without importing it."""
    try:
        installed = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        installed = False
    version: str | None = None
    if installed:
        for name in dict.fromkeys((distribution or module, module, module.replace("_", "-"))):
            try:
                version = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return {"installed": installed, "version": version}


def _import_backend(name: str) -> Any:
    return importlib.import_module(f"{__package__}.{name}")


def _modality(name: str) -> dict[str, Any]:
    """runner_service.media.<name>.catalog(), or why there is none."""
    try:
        module = _import_backend(name)
    except ImportError as exc:
        return {"available": False, "code": f"{name}_unavailable", "error": f"no {name} backend: {exc}"}
    catalog = getattr(module, "catalog", None)
    if not callable(catalog):
        return {"available": False, "code": f"{name}_unavailable", "error": f"no {name} catalog"}
    try:
        result = catalog()
    except Exception as exc:  # a broken backend reports itself, it does not break discovery
        return {"available": False, "code": f"{name}_unavailable", "error": f"{type(exc).__name__}: {exc}"}
    return dict(result) if isinstance(result, dict) else {"available": bool(result)}


def _kg(packages: dict[str, dict[str, Any]], settings: Any = None) -> dict[str, Any]:
    from .kg import packaged_embedder_dir
    from .settings import MediaSettings

    settings = settings or MediaSettings.from_env()
    available = packages["abstractmemory"]["installed"] and packages["lancedb"]["installed"]
    semantic = available and packages["sentence_transformers"]["installed"]
    embedder = settings.embedder_model or (str(packaged_embedder_dir() or "") or None)
    info: dict[str, Any] = {
        "available": available,
        "store": "lancedb",
        "semantic": bool(semantic and embedder),
        "embedder": embedder if semantic else None,
        "scopes": ["run", "session", "global", "all"],
    }
    if not available:
        info["code"] = "kg_unavailable"
        info["error"] = "the knowledge graph needs abstractmemory and lancedb"
    return info


def probe(settings: Any = None) -> dict[str, Any]:
    """The capabilities object (the route wraps it as {"capabilities": ...})."""
    packages = {module: package_info(module, dist) for module, dist in PACKAGES.items()}
    out: dict[str, Any] = dict(packages)
    for name in MODALITIES:
        out[name] = _modality(name)
    vision = out["vision"]
    video = vision.get("video") if isinstance(vision, dict) else None
    out["video"] = video if isinstance(video, dict) else {"available": False, "code": "video_unavailable"}
    out["kg"] = _kg(packages, settings)
    return out
