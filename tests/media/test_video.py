"""Video through AbstractVision's Diffusers backend on a tiny random LTX-Video pipeline (built here, a few
seconds; nothing downloads): mp4 decoded with PyAV, frame count, size and seed determinism checked."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in ("torch", "diffusers", "transformers", "abstractvision", "PIL", "av"):
    pytest.importorskip(_name, reason=f"the media stack is not installed ({_name} missing)")

if shutil.which("ffmpeg") is None and not os.environ.get("CI"):  # CI installs it (.ci/apt-packages.txt)
    pytest.skip("the ffmpeg executable is not installed (Debian package ffmpeg)", allow_module_level=True)

from runner_service.media import video, vision  # noqa: E402
from runner_service.media.backends import BadMediaRequest, MediaInput, Unsupported  # noqa: E402
from runner_service.media.checks import checked  # noqa: E402

from .tiny_pipelines import cached  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

# LTX's VAE compresses time 4x: 9 frames are 3 latent frames (1 + 4k frames come back exactly); LTX wants
# sides that are multiples of 32.
BASE = {"prompt": "a red bicycle", "width": 32, "height": 64, "num_frames": 9, "steps": 2, "fps": 8}


@pytest.fixture(scope="module")
def video_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = cached("ltx", tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("ABSTRACTGATEWAY_VIDEO_MODEL", str(path))
        mp.delenv("ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL", raising=False)
        yield path


def frames(data: bytes) -> list:
    """The decoded frames of an mp4 / gif as RGB numpy arrays."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all((x == y).all() for x, y in zip(a, b, strict=True))


def test_text_to_video_mp4_frames_size_and_seed(video_model: Path) -> None:
    out = video.generate_video({**BASE, "seed": 7}, {})
    [file] = out.files
    assert (file.role, file.content_type, file.filename) == ("video_artifacts", "video/mp4", "video-1.mp4")
    decoded = frames(file.data)
    assert len(decoded) == 9 and decoded[0].shape == (64, 32, 3)
    assert out.fields == {"fps": 8, "frame_count": 9, "width": 32, "height": 64}
    assert same(frames(video.generate_video({**BASE, "seed": 7}, {}).files[0].data), decoded)
    assert not same(frames(video.generate_video({**BASE, "seed": 8}, {}).files[0].data), decoded)


def test_duration_sets_the_frame_count(video_model: Path) -> None:
    request = {k: v for k, v in BASE.items() if k != "num_frames"}
    out = video.generate_video({**request, "duration_s": 1.125, "seed": 1}, {})  # 9 frames at 8 fps
    assert len(frames(out.files[0].data)) == 9


def test_gif_format(video_model: Path) -> None:
    [file] = video.generate_video({**BASE, "seed": 2, "format": "gif"}, {}).files
    assert (file.content_type, file.filename) == ("image/gif", "video-1.gif")
    assert file.data[:6] == b"GIF89a"
    assert len(frames(file.data)) == 9


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_to_video_from_a_png(video_model: Path) -> None:
    inputs = {"image_artifact": MediaInput(_png(64, 32), "image/png")}
    request = {"num_frames": 9, "steps": 2, "seed": 3}
    out = video.video_from_image(request, inputs)
    decoded = frames(out.files[0].data)
    assert len(decoded) == 9 and decoded[0].shape == (32, 64, 3)  # the image's size
    assert same(frames(video.video_from_image(request, inputs).files[0].data), decoded)
    resized = video.video_from_image({**request, "width": 32, "height": 32, "prompt": "it moves"}, inputs)
    assert frames(resized.files[0].data)[0].shape == (32, 32, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": ""},
        {"width": 36},
        {"num_frames": 0},
        {"num_frames": 5000},
        {"fps": 0},
        {"duration_s": 0},
        {"steps": 0},
        {"seed": -1},
        {"format": "avi"},
        {"video_model": "/etc"},
        {"video_provider": "sora"},
    ],
)
def test_absurd_requests_are_rejected(video_model: Path, change: dict) -> None:
    with pytest.raises(BadMediaRequest):
        request = {**BASE, **change}
        checked("video_generate", request)  # the job path: the shared rule, then the backend
        video.generate_video(request, {})


def test_bad_image_inputs_are_rejected(video_model: Path) -> None:
    with pytest.raises(BadMediaRequest, match="image_artifact is required"):
        video.video_from_image({"steps": 2}, {})
    with pytest.raises(BadMediaRequest, match="must be an image"):
        video.video_from_image({}, {"image_artifact": MediaInput(b"RIFF", "audio/wav")})
    with pytest.raises(BadMediaRequest, match="not a readable image"):
        video.video_from_image({}, {"image_artifact": MediaInput(b"nope", "image/png")})


def test_catalog_reports_video_only_when_it_works(video_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = video.catalog()
    assert catalog["available"] and catalog["text_to_video"] and catalog["image_to_video"]
    assert catalog["video_models"] == [str(video_model)]
    assert str(video_model) in vision.catalog()["vision_models"]
    monkeypatch.setenv("PATH", "/nonexistent")  # no ffmpeg: nothing can be exported
    assert video.catalog()["available"] is False and "ffmpeg" in video.catalog()["error"]
    with pytest.raises(Unsupported, match="ffmpeg"):
        video.generate_video(dict(BASE), {})


def test_not_configured_is_unsupported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ABSTRACTGATEWAY_VIDEO_MODEL", raising=False)
    monkeypatch.delenv("ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL", raising=False)
    with pytest.raises(Unsupported) as exc:
        video.generate_video(dict(BASE), {})
    assert exc.value.code == "video_unavailable" and "ABSTRACTGATEWAY_VIDEO_MODEL" in exc.value.error
    assert video.catalog()["available"] is False
    monkeypatch.setenv("ABSTRACTGATEWAY_VIDEO_MODEL", str(tmp_path))  # a dir without a pipeline
    assert video.catalog()["available"] is False


def test_an_image_pipeline_is_not_reported_as_video(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("ABSTRACTGATEWAY_VIDEO_MODEL", str(cached("sd", tmp_path_factory)))
    monkeypatch.delenv("ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL", raising=False)
    catalog = video.catalog()
    assert catalog["available"] is False and "not a video pipeline" in catalog["error"]
    with pytest.raises(Unsupported, match="not a video pipeline"):
        video.generate_video(dict(BASE), {})


@pytest.mark.gpu
def test_text_and_image_to_video_on_cuda(video_model: Path) -> None:
    """The GPU path (device auto picks CUDA): same frame count and size; seed-deterministic there too."""
    import torch

    assert torch.cuda.is_available()
    first = frames(video.generate_video({**BASE, "seed": 3}, {}).files[0].data)
    assert len(first) == 9 and first[0].shape == (64, 32, 3)
    assert same(frames(video.generate_video({**BASE, "seed": 3}, {}).files[0].data), first)
    inputs = {"image_artifact": MediaInput(_png(32, 32), "image/png")}
    clip = frames(video.video_from_image({"num_frames": 9, "steps": 2, "seed": 1}, inputs).files[0].data)
    assert len(clip) == 9 and clip[0].shape == (32, 32, 3)
