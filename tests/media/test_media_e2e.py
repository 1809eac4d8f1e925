"""Media through the whole gateway: the real API over Hypercorn, a real runner process with the real
offline models, results as artifacts of the target run, the job a child run in its ledger tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

for _module in ("piper", "faster_whisper", "abstractmemory", "lancedb", "sentence_transformers", "diffusers"):
    pytest.importorskip(_module, reason=f"the media stack is not installed ({_module} missing)")

from runner_service.media import kg  # noqa: E402
from runner_service.media.settings import MediaSettings  # noqa: E402
from tests.api.conftest import Gateway, make_gateway, stop_process  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.media.tiny_pipelines import build_tiny_audioldm, build_tiny_sd  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ABSTRACTVOICE_ALLOW_DOWNLOADS": "0"}


@pytest.fixture(scope="module")
def media_gateway(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("media")
    with make_gateway(tmp, flows) as gateway:
        image_model = build_tiny_sd(tmp / "tiny-sd")
        music_model = build_tiny_audioldm(tmp / "tiny-audioldm")
        env = {**os.environ, **OFFLINE, "ABSTRACTGATEWAY_DATA_DIR": str(tmp)}
        env.update(ABSTRACTGATEWAY_IMAGE_MODEL=str(image_model), ABSTRACTGATEWAY_MUSIC_MODEL=str(music_model))
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
def target(media_gateway: Gateway) -> str:
    run_id = media_gateway.start("bench-echo", {"message": "media"})
    media_gateway.wait_for(run_id, lambda view: view["status"] == "completed")
    return run_id


def _post(gateway: Gateway, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = gateway.client.post(path, json=body, params={"wait_s": 180}, timeout=200)
    assert response.status_code == 200, response.text
    return response.json()


def test_tts_then_transcribe_round_trip(media_gateway: Gateway, target: str) -> None:
    spoken = _post(
        media_gateway,
        f"/api/gateway/runs/{target}/voice/tts",
        {"text": "the quick brown fox", "request_id": "t1"},
    )
    assert spoken["ok"] is True, spoken
    audio = spoken["audio_artifact"]
    content = media_gateway.client.get(f"/api/gateway/runs/{target}/artifacts/{audio['$artifact']}/content")
    assert content.status_code == 200 and content.headers["content-type"].startswith("audio/wav")
    assert content.content[:4] == b"RIFF" and content.content[8:12] == b"WAVE"
    with wave.open(BytesIO(content.content)) as wav:
        assert wav.getnframes() / wav.getframerate() > 0.5
    heard = _post(
        media_gateway,
        f"/api/gateway/runs/{target}/audio/transcribe",
        {"audio_artifact": {"$artifact": audio["$artifact"]}, "language": "en"},
    )
    assert heard["ok"] is True, heard
    # The tiny speech models mishear a word now and then ("the quit brown fox" once in CI): three of
    # the four words heard proves the round trip without hanging the test on one model's accuracy.
    words = re.findall(r"[a-z]+", heard["text"].lower())
    assert sum(word in words for word in ("the", "quick", "brown", "fox")) >= 3, heard["text"]
    # The jobs are child runs of the target; their results are the target's artifacts.
    children = media_gateway.client.get("/api/gateway/runs", params={"parent_run_id": target}).json()["items"]
    assert {spoken["child_run_id"], heard["child_run_id"]} <= {child["run_id"] for child in children}
    artifacts = media_gateway.client.get(f"/api/gateway/runs/{target}/artifacts").json()["items"]
    assert audio["$artifact"] in {item["artifact_id"] for item in artifacts}
    ledger = media_gateway.client.get(f"/api/gateway/runs/{spoken['child_run_id']}/ledger").json()["items"]
    assert [record["status"] for record in ledger] == ["started", "completed"]


def test_transcribing_a_non_audio_artifact_is_refused_before_any_job(
    media_gateway: Gateway, target: str
) -> None:
    spoken = _post(media_gateway, f"/api/gateway/runs/{target}/voice/tts", {"text": "hello"})
    transcript = _post(
        media_gateway,
        f"/api/gateway/runs/{target}/audio/transcribe",
        {"audio_artifact": {"$artifact": spoken["audio_artifact"]["$artifact"]}},
    )["transcript_artifact"]
    before = media_gateway.counts()
    response = media_gateway.client.post(
        f"/api/gateway/runs/{target}/audio/transcribe",
        json={"audio_artifact": {"$artifact": transcript["$artifact"]}},
    )
    assert response.status_code == 400 and "audio" in response.json()["detail"]
    assert media_gateway.counts() == before


def test_video_answers_supported_false(media_gateway: Gateway, target: str) -> None:
    answer = _post(media_gateway, f"/api/gateway/runs/{target}/videos/generate", {"prompt": "a cat"})
    assert (answer["ok"], answer["supported"], answer["code"]) == (False, False, "video_unavailable")


def test_kg_query_by_pattern_and_meaning(media_gateway: Gateway, target: str, tmp_path: Path) -> None:
    settings = MediaSettings.from_env({"ABSTRACTGATEWAY_DATA_DIR": str(media_gateway.db_path.parent)})
    store = kg.open_store(settings)
    from abstractmemory import TripleAssertion

    for subject, obj in (
        ("ex:bank", "a place that lends money"),
        ("ex:cat", "a small feline that chases mice"),
    ):
        store.add(
            [
                TripleAssertion(
                    subject=subject, predicate="dcterms:description", object=obj, scope="global",
                    owner_id=kg.global_owner_id(), observed_at="2026-11-21T00:00:00+00:00",
                )
            ]
        )  # fmt: skip
    by_subject = _post(media_gateway, "/api/gateway/kg/query", {"scope": "global", "subject": "ex:cat"})
    assert by_subject["ok"] is True and by_subject["count"] == 1
    assert by_subject["items"][0]["object"] == "a small feline that chases mice"
    by_meaning = _post(
        media_gateway, "/api/gateway/kg/query", {"scope": "global", "query_text": "kitten", "limit": 2}
    )
    assert by_meaning["items"][0]["subject"] == "ex:cat"


def test_discovery_reports_what_the_runner_can_do(media_gateway: Gateway) -> None:
    # As a client would: poll until a live runner has published what it can do (the runner probes its
    # backends at start; run alone, this test may ask before that).
    body: dict[str, Any] = {}
    for _ in range(3_000):
        body = media_gateway.client.get("/api/gateway/discovery/capabilities").json()
        if body["available"] and "voice" in body["capabilities"]:
            break
        time.sleep(0.05)
    capabilities = body["capabilities"]
    assert "voice" in capabilities, f"no runner published its capabilities: {body}"
    assert capabilities["voice"]["tts_available"] is True and capabilities["video"]["available"] is False
    voices = media_gateway.client.get("/api/gateway/voice/voices").json()
    assert voices["available"] is True and voices["items"]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_images_generate_same_seed_same_bytes_then_edit(media_gateway: Gateway, target: str) -> None:
    body = {"prompt": "a red square", "width": 64, "height": 64, "steps": 2, "seed": 7}
    first = _post(media_gateway, f"/api/gateway/runs/{target}/images/generate", body)
    again = _post(media_gateway, f"/api/gateway/runs/{target}/images/generate", body)
    assert first["ok"] is True, first
    assert first["image_artifact"]["sha256"] == again["image_artifact"]["sha256"]
    png = media_gateway.client.get(
        f"/api/gateway/runs/{target}/artifacts/{first['image_artifact']['$artifact']}/content"
    )
    assert png.headers["content-type"].startswith("image/png") and _png_size(png.content) == (64, 64)
    edited = _post(
        media_gateway,
        f"/api/gateway/runs/{target}/images/edit",
        {"prompt": "a blue square", "image_artifact": {"$artifact": first["image_artifact"]["$artifact"]},
         "steps": 2, "strength": 0.8, "seed": 1},
    )  # fmt: skip
    assert edited["ok"] is True and edited["image_artifact"]["content_type"] == "image/png"


def test_music_returns_a_wav(media_gateway: Gateway, target: str) -> None:
    music = _post(
        media_gateway, f"/api/gateway/runs/{target}/music/generate", {"prompt": "drums", "duration_s": 0.5}
    )
    assert music["ok"] is True, music
    data = media_gateway.client.get(
        f"/api/gateway/runs/{target}/artifacts/{music['music_artifact']['$artifact']}/content"
    ).content
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
