"""Music through AbstractMusic's Diffusers backend on a tiny random AudioLDM pipeline (built here,
placed in an offline hub-cache layout since the backend takes repo ids only; nothing downloads)."""

from __future__ import annotations

import hashlib
import io
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in ("torch", "diffusers", "transformers", "abstractmusic", "huggingface_hub"):
    pytest.importorskip(_name, reason=f"the media stack is not installed ({_name} missing)")

from runner_service.media import music  # noqa: E402
from runner_service.media.backends import BadMediaRequest, Unsupported  # noqa: E402
from runner_service.media.checks import checked  # noqa: E402

from .tiny_pipelines import cached, install_in_hub_cache  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

REPO_ID = "tiny-test/audioldm"
BASE = {"prompt": "calm piano", "duration_s": 0.5, "steps": 2}


@pytest.fixture(scope="module")
def music_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny pipeline dir; the env names it by repo id, resolved from a private offline hub cache."""
    import huggingface_hub.constants as hub

    path = cached("audioldm", tmp_path_factory)
    cache = tmp_path_factory.mktemp("hf-hub-cache")
    install_in_hub_cache(path, cache, REPO_ID)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(cache))
        mp.setattr(hub, "HF_HUB_CACHE", str(cache))  # read when huggingface_hub was imported
        mp.setenv("ABSTRACTGATEWAY_MUSIC_MODEL", REPO_ID)
        yield path


def read_wav(data: bytes) -> tuple[int, int, int, bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:16]
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.readframes(wav.getnframes())


def test_generate_music_returns_a_wav(music_model: Path) -> None:
    out = music.generate_music({**BASE, "seed": 1}, {})
    [file] = out.files
    assert (file.role, file.content_type, file.filename) == ("music_artifact", "audio/wav", "music.wav")
    rate, channels, width, frames = read_wav(file.data)
    assert (rate, channels, width) == (16000, 1, 2)
    assert len(frames) // 2 == 8000  # 0.5 s at 16 kHz
    assert frames.strip(b"\x00")  # not silence
    again = music.generate_music({**BASE, "seed": 1}, {}).files[0].data
    other = music.generate_music({**BASE, "seed": 2}, {}).files[0].data
    assert hashlib.sha256(again).digest() == hashlib.sha256(file.data).digest()
    assert other != file.data


def test_a_local_pipeline_dir_works_too(music_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABSTRACTGATEWAY_MUSIC_MODEL", str(music_model))
    [file] = music.generate_music({**BASE, "duration_s": 0.25, "seed": 3}, {}).files
    assert read_wav(file.data)[0] == 16000
    assert music.catalog() == {"music_models": [str(music_model)], "available": True}


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": ""},
        {"duration_s": 0},
        {"duration_s": 10_000},
        {"duration_s": "5"},
        {"steps": 0},
        {"steps": 500},
        {"seed": -3},
        {"format": "mp3"},
        {"music_model": "other/model"},
        {"music_provider": "suno"},
    ],
)
def test_absurd_requests_are_rejected(music_model: Path, change: dict) -> None:
    with pytest.raises(BadMediaRequest):
        request = {**BASE, **change}
        checked("music_generate", request)  # the job path: the shared rule, then the backend
        music.generate_music(request, {})


def test_no_model_configured_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSTRACTGATEWAY_MUSIC_MODEL", raising=False)
    with pytest.raises(Unsupported) as exc:
        music.generate_music(dict(BASE), {})
    assert exc.value.code == "music_unavailable"
    assert music.catalog() == {"music_models": [], "available": False}


def test_catalog(music_model: Path) -> None:
    assert music.catalog() == {"music_models": [REPO_ID], "available": True}
