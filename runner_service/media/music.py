"""Music through AbstractMusic's Diffusers text-to-audio backend (AudioLDM-style pipelines), WAV out.

The model is `ABSTRACTGATEWAY_MUSIC_MODEL` (MediaSettings.music_model): a Hugging Face repo id whose
snapshot is already in the hub cache (`HF_HUB_CACHE`; run with `HF_HUB_OFFLINE=1`), which is what
AbstractMusic's backend takes, or a local pipeline dir, which this module loads itself and hands to
the same backend. Nothing downloads. One backend per model per process; generation runs under a lock.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .backends import BadMediaRequest, MediaFile, MediaInput, MediaOutput, Unsupported
from .checks import configured_model, is_dir, number, resolvable, text_field, whole
from .settings import MediaSettings

DEFAULT_DURATION_S = 10.0
PROVIDERS = {"diffusers", "huggingface", "abstractmusic", "local", "audioldm"}
ROLE = "music_artifact"

_lock = threading.Lock()  # guards the cache and every pipeline call
_backends: dict[str, Any] = {}  # model id -> abstractmusic DiffusersAudioBackend


def _stack_installed() -> bool:
    return all(
        find_spec(name) is not None for name in ("torch", "diffusers", "transformers", "abstractmusic")
    )


def _model(request: dict[str, Any]) -> str:
    stack = None if _stack_installed() else "music needs torch, diffusers and abstractmusic installed"
    return configured_model(
        request,
        configured=MediaSettings.from_env().music_model,
        field="music_model",
        code="music_unavailable",
        setting="ABSTRACTGATEWAY_MUSIC_MODEL",
        stack=stack,
    )


def _device_and_dtype() -> tuple[str, str]:
    import torch

    return ("cuda", "float16") if torch.cuda.is_available() else ("cpu", "float32")


@contextmanager
def _offline() -> Iterator[None]:
    """Hub offline mode while a repo id loads, whatever the process environment says: diffusers would
    otherwise ask the Hub for the repo's latest revision (and fetch files newer than the cache)."""
    import huggingface_hub.constants as hub

    old_constant, old_env = hub.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    hub.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = old_constant
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _backend(model: str) -> Any:
    """AbstractMusic's Diffusers audio backend for `model`, one per process (caller holds _lock)."""
    backend = _backends.get(model)
    if backend is not None:
        return backend
    from abstractmusic.backends.diffusers_audio import DiffusersAudioBackend, DiffusersAudioBackendConfig

    device, dtype = _device_and_dtype()
    if not is_dir(model):  # a repo id: the backend loads it from the hub cache (offline)
        config = DiffusersAudioBackendConfig(model_id=model, device=device, torch_dtype=dtype)
        backend = DiffusersAudioBackend(config=config)
        with _offline():
            backend.preload()
    else:  # the backend takes repo ids only: load the dir here and hand it the pipeline
        import torch
        from diffusers import DiffusionPipeline

        path = Path(model).expanduser()
        if not (path / "model_index.json").is_file():
            raise Unsupported("music_unavailable", f"music model dir {model!r} has no model_index.json")
        pipe = DiffusionPipeline.from_pretrained(
            str(path), torch_dtype=getattr(torch, dtype), local_files_only=True
        ).to(device)
        name = "local/" + "".join(c if c.isalnum() or c in "-_." else "-" for c in path.name)[:96]
        config = DiffusersAudioBackendConfig(model_id=name, device=device, torch_dtype=dtype)
        backend = DiffusersAudioBackend(config=config)
        backend._pipe, backend._pipe_device = pipe, device
    pipe = getattr(backend, "_pipe", None)
    if pipe is not None and callable(getattr(pipe, "set_progress_bar_config", None)):
        pipe.set_progress_bar_config(disable=True)
    _backends[model] = backend
    return backend


def generate_music(request: dict[str, Any], inputs: dict[str, MediaInput]) -> MediaOutput:
    """Text to music: one WAV (16-bit PCM) of `duration_s` seconds; same seed, same bytes."""
    prompt = text_field(request, "prompt", required=True)
    negative = text_field(request, "negative_prompt", required=False)
    duration = number(request, "duration_s")
    steps = whole(request, "steps")
    seed = whole(request, "seed")
    guidance = number(request, "guidance_scale")
    fmt = request.get("format") or "wav"
    if fmt != "wav":
        raise BadMediaRequest("format must be wav (this runner has no mp3 encoder)")
    provider = request.get("music_provider")
    if provider is not None and str(provider).strip().lower() not in PROVIDERS:
        raise BadMediaRequest(f"unknown music_provider {provider!r} (this runner has: diffusers)")
    model = _model(request)
    from abstractmusic.types import AudioGenerationRequest

    audio_request = AudioGenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        duration_s=DEFAULT_DURATION_S if duration is None else duration,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=seed,
        format="wav",
    )
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecation chatter is not the job's business
        asset = _backend(model).generate_audio(audio_request)
    if not asset.data.startswith(b"RIFF"):
        raise RuntimeError("the music backend returned no WAV data")
    return MediaOutput(files=[MediaFile(asset.data, "audio/wav", "music.wav", ROLE)])


def catalog() -> dict[str, Any]:
    """What this runner offers for music (cheap: no ML import, no model load)."""
    model = MediaSettings.from_env().music_model
    return {
        "music_models": [model] if model else [],
        "available": bool(model and _stack_installed() and resolvable(model)),
    }
