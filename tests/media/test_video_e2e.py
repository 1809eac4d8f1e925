"""Video through the whole gateway: the real API over Hypercorn, a real runner process with a tiny random
LTX-Video pipeline (and a tiny Stable Diffusion for the first frame), the mp4 an artifact of the target
run, decoded and checked; a runner SIGKILLed mid-job has its video job retried by another runner."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for _module in ("torch", "diffusers", "transformers", "abstractvision", "av"):
    pytest.importorskip(_module, reason=f"the media stack is not installed ({_module} missing)")

if shutil.which("ffmpeg") is None and not os.environ.get("CI"):  # CI installs it (.ci/apt-packages.txt)
    pytest.skip("the ffmpeg executable is not installed (Debian package ffmpeg)", allow_module_level=True)

from shared_store.media_jobs import enqueue_media_job, job_state  # noqa: E402
from tests.api.conftest import Gateway, make_gateway, stop_process  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.media.tiny_pipelines import cached  # noqa: E402
from tests.runner.conftest import Gateway as RunnerGateway  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
BODY = {"prompt": "a red bicycle", "width": 64, "height": 64, "num_frames": 9, "steps": 2, "fps": 8}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "ABSTRACTGATEWAY_VIDEO_MODEL": str(cached("ltx", tmp_path_factory)),
        "ABSTRACTGATEWAY_IMAGE_MODEL": str(cached("sd", tmp_path_factory)),
    }


@pytest.fixture(scope="module")
def video_gateway(
    tmp_path_factory: pytest.TempPathFactory, flows: Path, models: dict[str, str]
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("video")
    with make_gateway(tmp, flows) as gateway:
        env = {**os.environ, **OFFLINE, **models, "ABSTRACTGATEWAY_DATA_DIR": str(tmp)}
        env.pop("ABSTRACTGATEWAY_IMAGE_TO_VIDEO_MODEL", None)
        args = [
            sys.executable,
            "-m",
            "abstractgateway",
            "runner",
            "--db",
            str(gateway.db_path),
            "--poll-s",
            "0.02",
        ]
        with (tmp / "runner.log").open("ab") as log:
            runner = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            yield gateway
        finally:
            stop_process(runner)


@pytest.fixture(scope="module")
def target(video_gateway: Gateway) -> str:
    run_id = video_gateway.start("bench-echo", {"message": "video"})
    video_gateway.wait_for(run_id, lambda view: view["status"] == "completed")
    return run_id


def _post(gateway: Gateway, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = gateway.client.post(path, json=body, params={"wait_s": 240}, timeout=260)
    assert response.status_code == 200, response.text
    return response.json()


def _frames(data: bytes) -> list:
    import av

    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _content(gateway: Gateway, run_id: str, ref: dict[str, Any]) -> bytes:
    response = gateway.client.get(f"/api/gateway/runs/{run_id}/artifacts/{ref['$artifact']}/content")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(ref["content_type"])
    return response.content


def test_text_to_video_through_the_api(video_gateway: Gateway, target: str) -> None:
    url = f"/api/gateway/runs/{target}/videos/generate"
    first = _post(video_gateway, url, {**BODY, "seed": 5})
    assert first["ok"] is True and first["supported"] is True, first
    ref = first["video_artifact"]
    assert first["video_artifacts"] == [ref] and ref["content_type"] == "video/mp4"
    assert (first["frame_count"], first["width"], first["height"], first["fps"]) == (9, 64, 64, 8)
    frames = _frames(_content(video_gateway, target, ref))
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
    again = _post(video_gateway, url, {**BODY, "seed": 5})
    other = _post(video_gateway, url, {**BODY, "seed": 6})
    assert again["video_artifact"]["sha256"] == ref["sha256"]  # same seed, same frames, same encoding
    assert other["video_artifact"]["sha256"] != ref["sha256"]


def test_image_to_video_through_the_api(video_gateway: Gateway, target: str) -> None:
    image = _post(
        video_gateway,
        f"/api/gateway/runs/{target}/images/generate",
        {"prompt": "a red square", "width": 64, "height": 64, "steps": 2, "seed": 1},
    )
    assert image["ok"] is True, image
    clip = _post(
        video_gateway,
        f"/api/gateway/runs/{target}/videos/from_image",
        {"image_artifact": {"$artifact": image["image_artifact"]["$artifact"]}, "num_frames": 9, "steps": 2,
         "seed": 2, "format": "gif"},
    )  # fmt: skip
    assert clip["ok"] is True, clip
    data = _content(video_gateway, target, clip["video_artifact"])
    assert data[:6] == b"GIF89a"
    frames = _frames(data)
    assert len(frames) == 9 and frames[0].shape == (64, 64, 3)


def test_discovery_reports_video(video_gateway: Gateway, models: dict[str, str]) -> None:
    client = video_gateway.client
    caps = client.get("/api/gateway/discovery/capabilities").json()["capabilities"]
    assert caps["video"]["available"] is True
    assert caps["video"]["text_to_video"] is True and caps["video"]["image_to_video"] is True
    listed = client.get("/api/gateway/vision/models").json()
    assert listed["available"] is True and models["ABSTRACTGATEWAY_VIDEO_MODEL"] in listed["items"]


@pytest.fixture
def runner_gateway(tmp_path: Path, flows: Path) -> Iterator[RunnerGateway]:
    gateway = RunnerGateway(tmp_path, flows)
    try:
        yield gateway
    finally:
        gateway.close()


def test_a_killed_runner_s_video_job_is_retried(
    runner_gateway: RunnerGateway, models: dict[str, str]
) -> None:
    gateway = runner_gateway
    env = {**OFFLINE, **models, "ABSTRACTGATEWAY_DATA_DIR": str(gateway.tmp_path)}
    parent = gateway.start("bench-echo", {"message": "x"})
    first = gateway.runner("first", lease_s=1.0, **env)
    gateway.wait_status(parent, "completed")
    job = enqueue_media_job(
        gateway.db, kind="video_generate", request={**BODY, "seed": 1}, parent_run_id=parent
    ).run_id
    # Killed once the job has started (its attempt counted; torch and the pipeline still loading).
    gateway.wait(lambda: any(r["status"] == "started" for _, r in gateway.ledger(job)), "the job to start")
    first.kill()
    assert job_state(gateway.db, job).status == "running", "killed mid-job"

    gateway.runner("second", lease_s=1.0, **env)
    gateway.wait_status(job, "completed", "failed", timeout=240)
    state = job_state(gateway.db, job)
    assert state is not None and state.status == "completed", state
    assert state.output["ok"] is True and state.output["video_artifact"]["content_type"] == "video/mp4"
    attempts = [(r["status"], r["attempt"]) for _, r in gateway.ledger(job)]
    assert attempts[0] == ("started", 1) and attempts[-1] == ("completed", 2), attempts
