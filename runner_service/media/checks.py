"""Request checks and model resolution the diffusers-based backends (vision, music) share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared_store.contracts import check_media_request

from .backends import BadMediaRequest, Unsupported


def checked(kind: str, request: dict[str, Any]) -> None:
    """Refuse (BadMediaRequest, naming the field and the bound) a job request the shared rule
    (shared_store.contracts.media, which the API applied on arrival) refuses. Called on the request as
    the backend will see it, a capability default's options merged in, before any work; the backends
    below then read values that are in bounds and declare no bound of their own."""
    check_media_request(kind, request, refuse=BadMediaRequest)


def text_field(request: dict[str, Any], name: str, *, required: bool) -> str | None:
    """A text value; a required one must not be blank (the API answers 400 for a blank prompt)."""
    value = request.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadMediaRequest(
            f"{name} must be a non-empty string" if required else f"{name} must be a string"
        )
    return value


def whole(request: dict[str, Any], name: str) -> int | None:
    """An integer the shared rule checked (None when absent)."""
    value = request.get(name)
    return None if value is None else int(value)


def number(request: dict[str, Any], name: str) -> float | None:
    """A number the shared rule checked (None when absent); JSON may carry it as an int."""
    value = request.get(name)
    return None if value is None else float(value)


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
