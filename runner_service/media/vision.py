"""Images through AbstractVision's local Diffusers backend (video: runner_service.media.video).

The model is `ABSTRACTGATEWAY_IMAGE_MODEL` (MediaSettings.image_model): a local diffusers pipeline dir (or
a repo id already in the Hugging Face cache). Downloads stay off: AbstractVision loads with
`local_files_only`. One backend per model id per process, loaded on first use; pipelines are not
thread-safe, so generation runs under a lock. torch / diffusers / abstractvision load on first call.
"""

from __future__ import annotations

import io
import threading
import warnings
from importlib.util import find_spec
from typing import Any

from shared_store.contracts.media import MAX_SEED, MAX_SIDE, MIN_SIDE

from .backends import BadMediaRequest, MediaFile, MediaInput, MediaOutput
from .checks import configured_model, number, resolvable, text_field, whole
from .settings import MediaSettings

MAX_INPUT_PIXELS = MAX_SIDE * MAX_SIDE * 4  # an input image is refused over this, before decoding
PROVIDERS = {"diffusers", "huggingface", "huggingface-diffusers", "abstractvision", "local"}
FORMATS = {
    "png": ("PNG", "image/png", "png"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "webp": ("WEBP", "image/webp", "webp"),
}
ROLE = "image_artifacts"

_lock = threading.Lock()  # guards the cache and every pipeline call
_backends: dict[str, Any] = {}  # model id -> HuggingFaceDiffusersVisionBackend


# --- request values (checked against shared_store.contracts.media before a backend runs) -------------
def _format(request: dict[str, Any]) -> tuple[str, str, str]:
    fmt = request.get("format") or "png"
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise BadMediaRequest(f"format must be one of {', '.join(FORMATS)}")
    return FORMATS[fmt.lower()]


def _common(request: dict[str, Any]) -> dict[str, Any]:
    """The checks generate and edit share; returns the normalised values."""
    provider = request.get("image_provider")
    if provider is not None and str(provider).strip().lower() not in PROVIDERS:
        raise BadMediaRequest(f"unknown image_provider {provider!r} (this runner has: diffusers)")
    return {
        "prompt": text_field(request, "prompt", required=True),
        "negative_prompt": text_field(request, "negative_prompt", required=False),
        "width": whole(request, "width"),
        "height": whole(request, "height"),
        "steps": whole(request, "steps"),
        "seed": whole(request, "seed"),
        "count": whole(request, "count") or 1,
        "guidance_scale": number(request, "guidance_scale"),
        "format": _format(request),
    }


def _model(request: dict[str, Any]) -> str:
    """The configured image model; a requested `image_model` must name it (no arbitrary paths)."""
    stack = None if _stack_installed() else "images need torch, diffusers and abstractvision installed"
    return configured_model(
        request,
        configured=MediaSettings.from_env().image_model,
        field="image_model",
        code="image_unavailable",
        setting="ABSTRACTGATEWAY_IMAGE_MODEL",
        stack=stack,
    )


def _stack_installed() -> bool:
    return all(
        find_spec(name) is not None for name in ("torch", "diffusers", "transformers", "abstractvision")
    )


# --- the backend ---------------------------------------------------------------------------------------
def _backend(model_id: str) -> Any:
    """AbstractVision's Diffusers backend for `model_id`, one per process (caller holds _lock)."""
    backend = _backends.get(model_id)
    if backend is None:
        from abstractvision.backends.huggingface_diffusers import (
            HuggingFaceDiffusersBackendConfig,
            HuggingFaceDiffusersVisionBackend,
        )

        config = HuggingFaceDiffusersBackendConfig(model_id=model_id, device="auto", allow_download=False)
        backend = _backends[model_id] = HuggingFaceDiffusersVisionBackend(config=config)
    return backend


def _encode(png: bytes, fmt: tuple[str, str, str]) -> bytes:
    if fmt[0] == "PNG":
        return png
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format=fmt[0])
        return out.getvalue()


def _files(images: list[bytes], fmt: tuple[str, str, str]) -> MediaOutput:
    _, content_type, ext = fmt
    return MediaOutput(
        files=[
            MediaFile(_encode(data, fmt), content_type, f"image-{i}.{ext}", ROLE)
            for i, data in enumerate(images, start=1)
        ]
    )


def _run(model_id: str, call: str, requests: list[Any]) -> list[bytes]:
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecation chatter is not the job's business
        backend = _backend(model_id)
        images = [getattr(backend, call)(req).data for req in requests]
        for pipe in getattr(backend, "_pipelines", {}).values():  # quiet the runner's log from now on
            if callable(getattr(pipe, "set_progress_bar_config", None)):
                pipe.set_progress_bar_config(disable=True)
        return images


def generate_image(request: dict[str, Any], inputs: dict[str, MediaInput]) -> MediaOutput:
    """Text to image: `count` images; with a seed, image i uses seed + i (same seed, same bytes)."""
    values = _common(request)
    model_id = _model(request)
    from abstractvision.types import ImageGenerationRequest

    seed = values["seed"]
    requests = [
        ImageGenerationRequest(
            prompt=values["prompt"],
            negative_prompt=values["negative_prompt"],
            width=values["width"],
            height=values["height"],
            seed=None if seed is None else (seed + i) % (MAX_SEED + 1),
            steps=values["steps"],
            guidance_scale=values["guidance_scale"],
        )
        for i in range(values["count"])
    ]
    return _files(_run(model_id, "generate_image", requests), values["format"])


def _image_input(inputs: dict[str, MediaInput], name: str, *, required: bool) -> MediaInput | None:
    item = inputs.get(name)
    if item is None:
        if required:
            raise BadMediaRequest(f"{name} is required")
        return None
    if not str(item.content_type or "").lower().startswith("image/"):
        raise BadMediaRequest(f"{name} must be an image (got {item.content_type!r})")
    return item


def _decode(data: bytes, name: str) -> Any:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_INPUT_PIXELS:  # checked before decoding the pixels
            raise BadMediaRequest(f"{name} is too large ({width}x{height})")
        image.load()
    except BadMediaRequest:
        raise
    except Exception as exc:  # not an image PIL can read
        raise BadMediaRequest(f"{name} is not a readable image: {exc}") from None
    return image


def _png(image: Any, size: tuple[int, int], mode: str) -> bytes:
    from PIL import Image

    image = image.convert(mode)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def edit_image(request: dict[str, Any], inputs: dict[str, MediaInput]) -> MediaOutput:
    """Image to image (inpainting with a mask): the source is resized to width x height when given,
    else kept (rounded down to a multiple of 8); the output has that size."""
    values = _common(request)
    strength = number(request, "strength")
    source = _image_input(inputs, "image_artifact", required=True)
    assert source is not None  # required: _image_input raised otherwise
    mask = _image_input(inputs, "mask_artifact", required=False)
    model_id = _model(request)
    image = _decode(source.data, "image_artifact")
    width = values["width"] or max(MIN_SIDE, min(MAX_SIDE, image.width // 8 * 8))
    height = values["height"] or max(MIN_SIDE, min(MAX_SIDE, image.height // 8 * 8))
    if strength is not None and values["steps"] is not None and int(values["steps"] * strength) < 1:
        raise BadMediaRequest("steps x strength must be at least 1 (no denoising step would run)")
    image_png = _png(image, (width, height), "RGB")
    mask_png = _png(_decode(mask.data, "mask_artifact"), (width, height), "L") if mask else None
    from abstractvision.types import ImageEditRequest

    extra: dict[str, Any] = {"width": width, "height": height}
    if strength is not None:
        extra["strength"] = strength
    seed = values["seed"]
    requests = [
        ImageEditRequest(
            prompt=values["prompt"],
            image=image_png,
            mask=mask_png,
            negative_prompt=values["negative_prompt"],
            seed=None if seed is None else (seed + i) % (MAX_SEED + 1),
            steps=values["steps"],
            guidance_scale=values["guidance_scale"],
            extra=dict(extra),
        )
        for i in range(values["count"])
    ]
    return _files(_run(model_id, "edit_image", requests), values["format"])


def catalog() -> dict[str, Any]:
    """What this runner offers for images and video (cheap: no model load). `vision_models` lists the
    image model and the video models that really work; `video` says which video tasks do."""
    from .video import catalog as video_catalog

    model = MediaSettings.from_env().image_model
    usable = bool(model and _stack_installed() and resolvable(model))
    video = video_catalog()
    return {
        "vision_models": list(dict.fromkeys([*([model] if model else []), *video["video_models"]])),
        "available": usable or video["available"],
        "image_available": usable,
        "video": video,
    }
