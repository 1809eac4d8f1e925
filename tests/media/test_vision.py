"""Images through AbstractVision's Diffusers backend on a tiny random Stable Diffusion pipeline (built
here, ~0.5 MB, a few seconds; nothing downloads). Video: test_video.py."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in ("torch", "diffusers", "transformers", "abstractvision", "PIL"):
    pytest.importorskip(_name, reason=f"the media stack is not installed ({_name} missing)")

from runner_service.media import vision  # noqa: E402
from runner_service.media.backends import BadMediaRequest, MediaInput, Unsupported  # noqa: E402
from runner_service.media.checks import checked  # noqa: E402

from .tiny_pipelines import cached  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

BASE = {"prompt": "a red bicycle", "width": 32, "height": 48, "steps": 2}


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = cached("sd", tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("ABSTRACTGATEWAY_IMAGE_MODEL", str(path))
        yield path


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_generate_png_of_the_requested_size_and_seed_deterministic(image_model: Path) -> None:
    first = vision.generate_image({**BASE, "seed": 7}, {})
    again = vision.generate_image({**BASE, "seed": 7}, {})
    other = vision.generate_image({**BASE, "seed": 8}, {})
    [file] = first.files
    assert (file.role, file.content_type, file.filename) == ("image_artifacts", "image/png", "image-1.png")
    assert png_size(file.data) == (32, 48)
    assert sha(again.files[0].data) == sha(file.data)
    assert sha(other.files[0].data) != sha(file.data)


def test_generate_count_names_each_image(image_model: Path) -> None:
    out = vision.generate_image({**BASE, "seed": 1, "count": 2, "guidance_scale": 3.0}, {})
    assert [f.filename for f in out.files] == ["image-1.png", "image-2.png"]
    assert sha(out.files[0].data) != sha(out.files[1].data)  # image i uses seed + i
    single = vision.generate_image({**BASE, "seed": 2, "guidance_scale": 3.0}, {})
    assert sha(single.files[0].data) == sha(out.files[1].data)


def test_generate_jpeg(image_model: Path) -> None:
    [file] = vision.generate_image({**BASE, "seed": 1, "format": "jpeg"}, {}).files
    assert (file.content_type, file.filename) == ("image/jpeg", "image-1.jpg")
    assert file.data[:3] == b"\xff\xd8\xff"


def test_edit_from_a_generated_png(image_model: Path) -> None:
    source = vision.generate_image({**BASE, "seed": 3}, {}).files[0].data
    inputs = {"image_artifact": MediaInput(source, "image/png")}
    request = {"prompt": "a blue bicycle", "steps": 2, "seed": 5, "strength": 0.5}
    [file] = vision.edit_image(request, inputs).files
    assert (file.role, file.content_type, file.filename) == ("image_artifacts", "image/png", "image-1.png")
    assert png_size(file.data) == (32, 48)
    assert sha(vision.edit_image(request, inputs).files[0].data) == sha(file.data)
    resized = vision.edit_image({**request, "width": 40, "height": 24}, inputs).files[0]
    assert png_size(resized.data) == (40, 24)


def test_edit_with_a_mask(image_model: Path) -> None:
    from PIL import Image

    source = vision.generate_image({**BASE, "seed": 4}, {}).files[0].data
    buf = io.BytesIO()
    Image.new("L", (32, 48), 255).save(buf, format="PNG")
    inputs = {
        "image_artifact": MediaInput(source, "image/png"),
        "mask_artifact": MediaInput(buf.getvalue(), "image/png"),
    }
    [file] = vision.edit_image({"prompt": "a tree", "steps": 2, "seed": 1}, inputs).files
    assert png_size(file.data) == (32, 48)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": ""},
        {"prompt": None},
        {"width": 4},
        {"width": 4096},
        {"height": 36},  # not a multiple of 8
        {"width": "32"},
        {"steps": 0},
        {"steps": 1000},
        {"count": 0},
        {"count": 9},
        {"seed": -1},
        {"guidance_scale": 500},
        {"format": "gif"},
        {"image_model": "/etc"},
        {"image_provider": "dall-e"},
    ],
)
def test_absurd_requests_are_rejected(image_model: Path, change: dict) -> None:
    with pytest.raises(BadMediaRequest):
        request = {**BASE, **change}
        checked("image_generate", request)  # the job path: the shared rule, then the backend
        vision.generate_image(request, {})


def test_bad_edit_inputs_are_rejected(image_model: Path) -> None:
    request = {"prompt": "x", "steps": 2}
    with pytest.raises(BadMediaRequest, match="image_artifact is required"):
        vision.edit_image(request, {})
    with pytest.raises(BadMediaRequest, match="must be an image"):
        vision.edit_image(request, {"image_artifact": MediaInput(b"RIFF....", "audio/wav")})
    with pytest.raises(BadMediaRequest, match="not a readable image"):
        vision.edit_image(request, {"image_artifact": MediaInput(b"not a png", "image/png")})
    with pytest.raises(BadMediaRequest, match="strength"):  # the shared rule, on the job path
        checked("image_edit", {**request, "strength": 0, "image_artifact": {"$artifact": "a1"}})


def test_no_model_configured_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSTRACTGATEWAY_IMAGE_MODEL", raising=False)
    monkeypatch.delenv("ABSTRACTGATEWAY_VIDEO_MODEL", raising=False)
    monkeypatch.delenv("ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL", raising=False)
    with pytest.raises(Unsupported) as exc:
        vision.generate_image(dict(BASE), {})
    assert exc.value.code == "image_unavailable"
    catalog = vision.catalog()
    assert (catalog["vision_models"], catalog["available"], catalog["image_available"]) == ([], False, False)
    assert catalog["video"]["available"] is False and catalog["video"]["code"] == "video_unavailable"


def test_catalog(image_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSTRACTGATEWAY_VIDEO_MODEL", raising=False)
    catalog = vision.catalog()
    assert (catalog["vision_models"], catalog["available"], catalog["image_available"]) == (
        [str(image_model)],
        True,
        True,
    )
    assert catalog["video"]["available"] is False


@pytest.mark.gpu
def test_generate_on_cuda(image_model: Path) -> None:
    """The GPU path (device auto picks CUDA): same request, same PNG size; seed-deterministic there too."""
    import torch

    assert torch.cuda.is_available()
    first = vision.generate_image({**BASE, "seed": 3}, {})
    again = vision.generate_image({**BASE, "seed": 3}, {})
    assert png_size(first.files[0].data) == (32, 48)
    assert sha(first.files[0].data) == sha(again.files[0].data)
