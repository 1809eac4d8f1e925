"""Request checks and model resolution the diffusers-based backends (vision, music) share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .backends import BadMediaRequest, Unsupported

MAX_PROMPT = 10_000


def text_field(request: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = request.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadMediaRequest(
            f"{name} must be a non-empty string" if required else f"{name} must be a string"
        )
    if len(value) > MAX_PROMPT:
        raise BadMediaRequest(f"{name} is longer than {MAX_PROMPT} characters")
    return value


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def is_dir(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().is_dir()


def resolvable(model: str) -> bool:
    """Cheap: a pipeline dir exists, or the repo id has a snapshot in the hub cache."""
    if is_dir(model):
        return (Path(model).expanduser() / "model_index.json").is_file()
    return (hub_cache() / ("models--" + model.replace("/", "--")) / "snapshots").is_dir()


def configured_model(
    request: dict[str, Any], *, configured: str | None, field: str, code: str, setting: str, stack: str | None
) -> str:
    """The operator's model; a requested one must name it (clients never pick paths). `stack`: why the
    stack is unusable, or None when it is installed."""
    if not configured:
        raise Unsupported(code, f"no {field.split('_')[0]} model is configured (set {setting})")
    wanted = request.get(field)
    if wanted is not None and str(wanted).strip() not in {"", configured, Path(configured).name}:
        raise BadMediaRequest(f"unknown {field} {wanted!r} (this runner has {configured!r})")
    if stack is not None:
        raise Unsupported(code, stack)
    return configured
