"""Video (text→video, image→video) through AbstractVision's local Diffusers backend.

The models are `ABSTRACTGATEWAY_VIDEO_MODEL` (text→video) and `ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL`
(image→video; default: the video model): local diffusers pipeline dirs. Frames are encoded to H.264
mp4 by AbstractVision's exporter, which runs the `ffmpeg` executable (Debian's `ffmpeg`, installed by
the project's `.ci/apt-packages.txt`), or to GIF with Pillow.

abstractvision 0.3.34 gates local text→video behind an allow-list of hub ids (only cogvideox-2b, and
that one "temporarily disabled") and has no local image→video at all. The operator's configured pipeline
dir is what this runner serves, so `_LocalVideoBackend` lifts the gate for it and adds image→video on
the same loaded components: a text→video pipeline whose class has an image→video sibling in diffusers
(LTXPipeline → LTXImageToVideoPipeline, ...) is re-wrapped with `from_pipe` (shares the weights), a dir
that already holds an image→video pipeline is used as is. Pipelines are not thread-safe: one lock.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import warnings
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from shared_store.contracts.media import MAX_FRAMES, MIN_SIDE

from .backends import BadMediaRequest, MediaFile, MediaInput, MediaOutput
from .checks import configured_model, is_dir, number, resolvable, text_field, whole
from .settings import MediaSettings
from .vision import _decode

DEFAULT_FPS = 8
PROVIDERS = {"diffusers", "huggingface", "huggingface-diffusers", "abstractvision", "local"}
FORMATS = {"mp4": ("video/mp4", "mp4"), "gif": ("image/gif", "gif")}
ROLE = "video_artifacts"

_lock = threading.Lock()  # guards the cache and every pipeline call
_backends: dict[str, Any] = {}  # model dir -> _LocalVideoBackend


# --- settings and what works ---------------------------------------------------------------------------
def _models() -> tuple[str | None, str | None]:
    settings = MediaSettings.from_env()
    return settings.video_model, settings.image_to_video_model or settings.video_model


def _stack_installed() -> bool:
    return all(find_spec(n) is not None for n in ("torch", "diffusers", "transformers", "abstractvision"))


def _model_index(model: str) -> dict[str, Any]:
    """A local dir's model_index.json (cheap: no import); {} when there is none."""
    if not is_dir(model):
        return {}
    try:
        data = json.loads((Path(model).expanduser() / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pipeline_class(model: str) -> str | None:
    name = _model_index(model).get("_class_name")
    return name if isinstance(name, str) else None


def _is_video_pipeline(model: str) -> bool:
    """Whether the pipeline makes video: its class or a component's says so (LTXPipeline's transformer is
    LTXVideoTransformer3DModel, CogVideoX / Wan / Hunyuan have 3D transformers, AnimateDiff a motion
    adapter); an image pipeline named as the video model is not reported as video."""
    index = _model_index(model)
    names = [str(index.get("_class_name") or "")]
    names += [str(v[1]) for v in index.values() if isinstance(v, list) and len(v) == 2]
    return any(word in name for name in names for word in ("Video", "3D", "Motion"))


@cache
def _diffusers_has(name: str) -> bool:
    """Whether diffusers exports `name`, read from its `__init__.py` (importing diffusers imports torch,
    and discovery must stay cheap)."""
    spec = find_spec("diffusers")
    if spec is None or not spec.origin:
        return False
    try:
        return f'"{name}"' in Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return False


def _i2v_class_name(pipeline_class: str) -> str | None:
    if "ImageToVideo" in pipeline_class:
        return pipeline_class
    if pipeline_class.endswith("Pipeline"):
        return pipeline_class[: -len("Pipeline")] + "ImageToVideoPipeline"
    return None


def _usable(model: str | None, *, image_to_video: bool) -> str | None:
    """Why `model` cannot serve video here, or None when it can."""
    if not model:
        setting = "ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL" if image_to_video else "ABSTRACTGATEWAY_VIDEO_MODEL"
        return f"no video model is configured (set {setting})"
    if not _stack_installed():
        return "video needs torch, diffusers, transformers and abstractvision installed"
    if shutil.which("ffmpeg") is None:
        return "video export needs the ffmpeg executable on PATH (Debian package ffmpeg)"
    if not is_dir(model) or not resolvable(model):
        return f"{model!r} is not a local diffusers pipeline dir (model_index.json missing)"
    pipeline_class = _pipeline_class(model) or ""
    if not _is_video_pipeline(model):
        return f"{pipeline_class or model!r} is not a video pipeline"
    if image_to_video:
        sibling = _i2v_class_name(pipeline_class)
        if sibling is None or not _diffusers_has(sibling):
            return f"{pipeline_class or model!r} has no image-to-video pipeline in diffusers"
    elif "ImageToVideo" in pipeline_class:
        return (
            f"{pipeline_class} is an image-to-video pipeline (set it as ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL)"
        )
    return None


def catalog() -> dict[str, Any]:
    """What this runner offers for video (cheap: reads model_index.json, imports no model code)."""
    t2v, i2v = _models()
    t2v_why, i2v_why = _usable(t2v, image_to_video=False), _usable(i2v, image_to_video=True)
    models = [m for m, why in ((t2v, t2v_why), (i2v, i2v_why)) if m and why is None]
    info: dict[str, Any] = {
        "available": t2v_why is None or i2v_why is None,
        "text_to_video": t2v_why is None,
        "image_to_video": i2v_why is None,
        "video_models": list(dict.fromkeys(models)),
        "formats": list(FORMATS),
    }
    if not info["available"]:
        info["code"] = "video_unavailable"
        info["error"] = t2v_why
    return info


# --- request checks ------------------------------------------------------------------------------------
def _format(request: dict[str, Any]) -> tuple[str, str]:
    fmt = request.get("format") or "mp4"
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise BadMediaRequest(f"format must be one of {', '.join(FORMATS)}")
    return FORMATS[fmt.lower()]


def _values(request: dict[str, Any], *, prompt_required: bool) -> dict[str, Any]:
    provider = request.get("video_provider")
    if provider is not None and str(provider).strip().lower() not in PROVIDERS:
        raise BadMediaRequest(f"unknown video_provider {provider!r} (this runner has: diffusers)")
    fps = whole(request, "fps") or DEFAULT_FPS
    frames = whole(request, "num_frames")
    duration = number(request, "duration_s")
    if frames is None and duration is not None:
        frames = max(1, min(MAX_FRAMES, round(duration * fps)))
    return {
        "prompt": text_field(request, "prompt", required=prompt_required),
        "negative_prompt": text_field(request, "negative_prompt", required=False),
        "width": whole(request, "width"),
        "height": whole(request, "height"),
        "steps": whole(request, "steps"),
        "seed": whole(request, "seed"),
        "guidance_scale": number(request, "guidance_scale"),
        "fps": fps,
        "num_frames": frames,
        "format": _format(request),
    }


def _model(request: dict[str, Any], *, image_to_video: bool) -> str:
    t2v, i2v = _models()
    configured = i2v if image_to_video else t2v
    setting = "ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL" if image_to_video else "ABSTRACTGATEWAY_VIDEO_MODEL"
    return configured_model(
        request,
        configured=configured,
        field="video_model",
        code="video_unavailable",
        setting=setting,
        stack=_usable(configured, image_to_video=image_to_video),
    )


# --- the backend ---------------------------------------------------------------------------------------
def _backend_class() -> type:
    from abstractvision.backends import huggingface_diffusers as hfd
    from abstractvision.errors import CapabilityNotSupportedError
    from abstractvision.types import GeneratedAsset

    class _LocalVideoBackend(hfd.HuggingFaceDiffusersVisionBackend):
        """AbstractVision's Diffusers backend serving the operator's own pipeline dir (see module doc)."""

        def _supports_local_text_to_video(self, model_id: str | None = None) -> bool:
            return True  # the dir was checked by _usable(); abstractvision's hub-id allow-list does not apply

        def _supports_local_image_to_video(self, model_id: str | None = None) -> bool:
            return True

        def image_to_video(self, request: Any) -> GeneratedAsset:
            with self._backend_lock:
                pipe = self._get_or_load_pipeline("t2v")  # DiffusionPipeline.from_pretrained(dir), cached
                if "image" not in (self._call_params.get("t2v") or ()):
                    import diffusers

                    name = _i2v_class_name(type(pipe).__name__) or ""
                    i2v_class = getattr(diffusers, name, None)
                    if i2v_class is None:
                        raise CapabilityNotSupportedError(
                            f"{type(pipe).__name__} has no image-to-video pipeline"
                        )
                    pipe = self._pipelines.get("i2v") or self._set_pipeline("i2v", i2v_class.from_pipe(pipe))
                params = hfd._call_param_names(pipe.__call__) or set()
                kwargs: dict[str, Any] = {"image": self._pil_from_bytes(request.image)}
                optional = {
                    "prompt": request.prompt or "",
                    "negative_prompt": request.negative_prompt,
                    "width": request.width,
                    "height": request.height,
                    "num_frames": request.num_frames,
                    "num_inference_steps": request.steps,
                    "guidance_scale": request.guidance_scale,
                    "output_type": "pil",
                    "generator": self._seed_generator(request.seed),
                    **dict(request.extra or {}),
                }
                kwargs.update({k: v for k, v in optional.items() if v is not None and k in params})
                out, _ = self._pipe_call(pipe, kwargs)
                frames = self._video_frames(out)
                fps = int(request.fps or DEFAULT_FPS)
                width, height = frames[0].size
                meta = {"fps": fps, "frame_count": len(frames), "width": width, "height": height}
                return GeneratedAsset(
                    media_type="video",
                    data=hfd._frames_to_mp4_bytes(frames, fps=fps),
                    mime_type="video/mp4",
                    metadata=meta,
                )

    return _LocalVideoBackend


def _backend(model: str) -> Any:
    backend = _backends.get(model)
    if backend is None:
        from abstractvision.backends.huggingface_diffusers import HuggingFaceDiffusersBackendConfig

        config = HuggingFaceDiffusersBackendConfig(model_id=model, device="auto", allow_download=False)
        backend = _backends[model] = _backend_class()(config=config)
    return backend


def _run(model: str, call: str, request: Any) -> Any:
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecation chatter is not the job's business
        backend = _backend(model)
        asset = getattr(backend, call)(request)
        for pipe in getattr(backend, "_pipelines", {}).values():  # quiet the runner's log from now on
            if callable(getattr(pipe, "set_progress_bar_config", None)):
                pipe.set_progress_bar_config(disable=True)
        return asset


def _gif(mp4: bytes, fps: int) -> bytes:
    """Re-encode the mp4's frames as a looping GIF (Pillow; PyAV decodes)."""
    import av

    with av.open(io.BytesIO(mp4), mode="r") as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    out = io.BytesIO()
    frames[0].save(
        out, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
    )
    return out.getvalue()


def _output(asset: Any, values: dict[str, Any]) -> MediaOutput:
    content_type, ext = values["format"]
    meta = dict(asset.metadata or {})
    data = asset.data if ext == "mp4" else _gif(asset.data, int(meta.get("fps") or values["fps"]))
    fields = {k: meta[k] for k in ("fps", "frame_count", "width", "height") if k in meta}
    return MediaOutput(files=[MediaFile(data, content_type, f"video-1.{ext}", ROLE)], fields=fields)


def generate_video(request: dict[str, Any], inputs: dict[str, MediaInput]) -> MediaOutput:
    """Text to video: one clip; the same seed gives the same frames."""
    values = _values(request, prompt_required=True)
    model = _model(request, image_to_video=False)
    from abstractvision.types import VideoGenerationRequest

    asset = _run(
        model,
        "generate_video",
        VideoGenerationRequest(
            prompt=values["prompt"],
            negative_prompt=values["negative_prompt"],
            width=values["width"],
            height=values["height"],
            fps=values["fps"],
            num_frames=values["num_frames"],
            seed=values["seed"],
            steps=values["steps"],
            guidance_scale=values["guidance_scale"],
        ),
    )
    return _output(asset, values)


def video_from_image(request: dict[str, Any], inputs: dict[str, MediaInput]) -> MediaOutput:
    """Image to video: `image_artifact` is the first frame (resized to width x height when given,
    else kept, rounded down to a multiple of 8)."""
    values = _values(request, prompt_required=False)
    item = inputs.get("image_artifact")
    if item is None:
        raise BadMediaRequest("image_artifact is required")
    if not str(item.content_type or "").lower().startswith("image/"):
        raise BadMediaRequest(f"image_artifact must be an image (got {item.content_type!r})")
    model = _model(request, image_to_video=True)
    image = _decode(item.data, "image_artifact").convert("RGB")
    width = values["width"] or max(MIN_SIDE, image.width // 8 * 8)
    height = values["height"] or max(MIN_SIDE, image.height // 8 * 8)
    if image.size != (width, height):
        image = image.resize((width, height))
    png = io.BytesIO()
    image.save(png, format="PNG")
    from abstractvision.types import ImageToVideoRequest

    asset = _run(
        model,
        "image_to_video",
        ImageToVideoRequest(
            image=png.getvalue(),
            prompt=values["prompt"],
            negative_prompt=values["negative_prompt"],
            width=width,
            height=height,
            fps=values["fps"],
            num_frames=values["num_frames"],
            seed=values["seed"],
            steps=values["steps"],
            guidance_scale=values["guidance_scale"],
        ),
    )
    return _output(asset, values)
