"""Media, discovery and knowledge-graph routes over the API alone (no runner: jobs stay queued).

Bad input is refused before anything is stored; a valid request commits a queued child job run and,
with wait_s=0, answers 202 with its id; a finished job (written here the way a runner would) is
answered with its output. Discovery reports what live runners publish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared_store.artifact_store import SqliteArtifactStore
from shared_store.codec import decode, encode
from shared_store.runners import register_runner, runner_stopped

from .conftest import Gateway

BUNDLE = "bench-echo"


@pytest.fixture(scope="module")
def target(lone_gateway: Gateway) -> str:
    """A queued run the media jobs attach to."""
    return lone_gateway.start(BUNDLE)


@pytest.fixture(scope="module")
def artifacts(lone_gateway: Gateway, target: str) -> dict[str, str]:
    """Input artifacts of the target run: one audio, one image, one text."""
    store = SqliteArtifactStore(lone_gateway.db, lone_gateway.db_path.parent / "artifacts")
    made = {
        "audio": store.store(b"RIFF....WAVE", content_type="audio/wav", run_id=target),
        "image": store.store(b"\x89PNG....", content_type="image/png", run_id=target),
        "text": store.store(b"hello", content_type="text/plain; charset=utf-8", run_id=target),
    }
    return {name: meta.artifact_id for name, meta in made.items()}


@pytest.fixture
def gw(lone_gateway: Gateway) -> Iterator[Gateway]:
    """The module's runner-less gateway, checked to be unchanged by each test."""
    before = lone_gateway.counts()
    yield lone_gateway
    assert lone_gateway.counts() == before, "a refused request wrote something"


def _check(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in str(detail), (word, detail)


def _media(gw: Gateway, run_id: str, path: str, body: Any, **params: Any) -> Any:
    return gw.client.post(f"/api/gateway/runs/{run_id}/{path}", json=body, params=params)


VALID = {
    "voice/tts": ("tts", {"text": "hello there", "voice": "amy", "format": "wav"}),
    "audio/transcribe": ("transcribe", {"audio_artifact": {"$artifact": "@audio"}, "language": "en"}),
    "images/generate": ("image_generate", {"prompt": "a red cube", "width": 512, "height": 256, "count": 2}),
    "images/edit": (
        "image_edit",
        {"prompt": "make it blue", "image_artifact": {"$artifact": "@image"}, "strength": 0.5},
    ),
    "videos/generate": ("video_generate", {"prompt": "a cube spinning", "duration_s": 2}),
    "videos/from_image": ("video_from_image", {"image_artifact": {"$artifact": "@image"}}),
    "music/generate": ("music_generate", {"prompt": "calm piano", "duration_s": 5}),
}


def _fill(value: Any, artifacts: dict[str, str]) -> Any:
    """Replace "@audio"-style placeholders with the module's artifact ids."""
    if isinstance(value, dict):
        return {k: _fill(v, artifacts) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("@"):
        return artifacts[value[1:]]
    return value


# --- refused: nothing stored ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "status", "word"),
    [
        ("voice/tts", {"text": ""}, 400, "text"),
        ("voice/tts", {"text": "   "}, 400, "text"),
        ("voice/tts", {}, 422, "text"),
        ("voice/tts", {"text": "hi", "format": "ogg"}, 422, "$.format"),
        ("voice/tts", {"text": "hi", "speed": 0}, 422, "$.speed"),
        ("voice/tts", {"text": "hi", "speed": 40}, 422, "$.speed"),
        ("voice/tts", {"text": "hi", "request_id": ""}, 422, "$.request_id"),
        ("audio/transcribe", {}, 422, "audio_artifact"),
        ("audio/transcribe", {"audio_artifact": "x"}, 422, "$.audio_artifact"),
        ("audio/transcribe", {"audio_artifact": {"$artifact": "nope"}}, 404, "artifact 'nope' not found"),
        ("audio/transcribe", {"audio_artifact": {"$artifact": "@image"}}, 400, "expected audio/*"),
        ("audio/transcribe", {"audio_artifact": {"$artifact": "@text"}}, 400, "text/plain"),
        ("images/generate", {"prompt": ""}, 400, "prompt"),
        ("images/generate", {"prompt": "x", "width": 513}, 422, "$.width"),
        ("images/generate", {"prompt": "x", "height": 4096}, 422, "$.height"),
        ("images/generate", {"prompt": "x", "width": 0}, 422, "$.width"),
        ("images/generate", {"prompt": "x", "steps": 201}, 422, "$.steps"),
        ("images/generate", {"prompt": "x", "count": 9}, 422, "$.count"),
        ("images/generate", {"prompt": "x", "seed": -1}, 422, "$.seed"),
        ("images/generate", {"prompt": "x", "guidance_scale": 1000}, 422, "$.guidance_scale"),
        ("images/edit", {"prompt": "x"}, 422, "image_artifact"),
        ("images/edit", {"prompt": "", "image_artifact": {"$artifact": "@image"}}, 400, "prompt"),
        ("images/edit", {"prompt": "x", "image_artifact": {"$artifact": "@audio"}}, 400, "expected image/*"),
        ("images/edit", {"prompt": "x", "image_artifact": {"$artifact": "nope"}}, 404, "not found"),
        (
            "images/edit",
            {"prompt": "x", "image_artifact": {"$artifact": "@image"}, "mask_artifact": {"$artifact": "@text"}},
            400,
            "mask_artifact",
        ),
        ("images/edit", {"prompt": "x", "image_artifact": {"$artifact": "@image"}, "strength": 2}, 422, "$.strength"),
        ("videos/generate", {"prompt": ""}, 400, "prompt"),
        ("videos/generate", {"prompt": "x", "duration_s": 3600}, 422, "$.duration_s"),
        ("videos/generate", {"prompt": "x", "fps": 1000}, 422, "$.fps"),
        ("videos/from_image", {}, 422, "image_artifact"),
        ("videos/from_image", {"image_artifact": {"$artifact": "@audio"}}, 400, "expected image/*"),
        ("music/generate", {"prompt": " "}, 400, "prompt"),
        ("music/generate", {"prompt": "x", "duration_s": 0}, 422, "$.duration_s"),
        ("music/generate", {"prompt": "x", "duration_s": 301}, 422, "$.duration_s"),
        ("music/generate", {"prompt": "x", "format": "flac"}, 422, "$.format"),
    ],
)  # fmt: skip
def test_bad_media_input_is_refused_and_stores_nothing(
    gw: Gateway, target: str, artifacts: dict[str, str], path: str, body: Any, status: int, word: str
) -> None:
    _check(_media(gw, target, path, _fill(body, artifacts), wait_s=0), status, word)


@pytest.mark.parametrize("path", list(VALID))
def test_unknown_run_is_404_and_bad_wait_is_refused(
    gw: Gateway, target: str, artifacts: dict[str, str], path: str
) -> None:
    body = _fill(VALID[path][1], artifacts)
    _check(_media(gw, "no-such-run", path, body, wait_s=0), 404, "Run 'no-such-run' not found")
    _check(_media(gw, target, path, body, wait_s=-1), 422, "wait_s")
    _check(_media(gw, target, path, body, wait_s=301), 422, "wait_s")
    _check(_media(gw, target, path, body, wait=1), 400, "unknown query parameter")
    response = gw.client.post(
        f"/api/gateway/runs/{target}/{path}",
        content=b'{"text": ',
        headers={"content-type": "application/json"},
    )
    _check(response, 422, "malformed JSON")


# --- accepted: a durable child job -----------------------------------------------------------------------
@pytest.mark.parametrize("path", list(VALID))
def test_valid_request_queues_a_child_job_and_answers_202(
    lone_gateway: Gateway, target: str, artifacts: dict[str, str], path: str
) -> None:
    gw = lone_gateway
    kind, body = VALID[path]
    body = _fill(body, artifacts)
    before = gw.counts()
    response = _media(gw, target, path, body, wait_s=0)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["ok"] is True and answer["pending"] is True
    assert answer["run_id"] == target and answer["request_id"] is None
    child = gw.run(answer["child_run_id"])
    assert child["parent_run_id"] == target and child["workflow_id"] == f"media:{kind}"
    assert child["status"] == "running" and child.get("queued") is True
    assert gw.counts()["runs"] == before["runs"] + 1
    # The job carries the validated request (unset fields left out) for the runner.
    start = gw.db.query_one("SELECT start_json FROM run_states WHERE run_id = ?", (answer["child_run_id"],))
    media = decode(start[0])["media"]  # type: ignore[index]
    assert media["kind"] == kind and media["request_id"] is None
    request = media["request"]
    assert {k: request[k] for k in body} == body and None not in request.values()
    assert set(request) - set(body) <= {"format"}
    listed = gw.client.get("/api/gateway/runs", params={"parent_run_id": target}).json()["items"]
    assert answer["child_run_id"] in {item["run_id"] for item in listed}


def test_same_request_id_answers_the_same_child(lone_gateway: Gateway, target: str) -> None:
    gw = lone_gateway
    body = {"text": "say it once", "request_id": "req-tts-1"}
    before = gw.counts()
    first = _media(gw, target, "voice/tts", body, wait_s=0)
    again = _media(gw, target, "voice/tts", body, wait_s=0)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json()["child_run_id"] == again.json()["child_run_id"]
    assert first.json()["request_id"] == "req-tts-1"
    assert gw.counts()["runs"] == before["runs"] + 1
    conflict = _media(gw, target, "voice/tts", {**body, "text": "something else"}, wait_s=0)
    _check(conflict, 409, "req-tts-1")
    assert gw.counts()["runs"] == before["runs"] + 1


def _finish(
    gw: Gateway, run_id: str, status: str, output: dict[str, Any] | None, error: str | None = None
) -> None:
    """Mark a job run finished with this output, as a runner would."""
    state = {"run_id": run_id, "status": status, "output": output, "error": error}
    with gw.db.write() as conn:
        conn.execute("UPDATE runs SET status = ?, due_at = NULL WHERE run_id = ?", (status, run_id))
        conn.execute("UPDATE run_states SET run_json = ? WHERE run_id = ?", (encode(state), run_id))


def test_finished_job_is_answered_with_its_output(lone_gateway: Gateway, target: str) -> None:
    gw = lone_gateway
    body = {"text": "finished soon", "request_id": "req-done"}
    child = _media(gw, target, "voice/tts", body, wait_s=0).json()["child_run_id"]
    ref = {
        "$artifact": "a1",
        "content_type": "audio/wav",
        "filename": "speech.wav",
        "size_bytes": 9,
        "sha256": "0" * 64,
    }
    _finish(gw, child, "completed", {"ok": True, "supported": True, "audio_artifact": ref})
    response = _media(gw, target, "voice/tts", body, wait_s=5)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True, "supported": True, "audio_artifact": ref,
        "run_id": target, "request_id": "req-done", "child_run_id": child,
    }  # fmt: skip


def test_unsupported_and_failed_jobs_answer_ok_false(lone_gateway: Gateway, target: str) -> None:
    gw = lone_gateway
    body = {"prompt": "a film", "request_id": "req-video"}
    child = _media(gw, target, "videos/generate", body, wait_s=0).json()["child_run_id"]
    output = {"ok": False, "supported": False, "code": "video_unavailable", "error": "no video backend"}
    _finish(gw, child, "completed", output)
    answer = _media(gw, target, "videos/generate", body, wait_s=1).json()
    assert answer["ok"] is False and answer["supported"] is False and answer["code"] == "video_unavailable"
    assert answer["child_run_id"] == child

    body = {"prompt": "a song", "request_id": "req-music"}
    child = _media(gw, target, "music/generate", body, wait_s=0).json()["child_run_id"]
    _finish(gw, child, "failed", None, error="CUDA out of memory")
    response = _media(gw, target, "music/generate", body, wait_s=1)
    assert response.status_code == 200
    answer = response.json()
    assert (
        answer["ok"] is False and answer["error"] == "CUDA out of memory" and answer["child_run_id"] == child
    )
    assert answer["code"] == "job_failed" and answer["status"] == "failed"


def test_waiting_request_wakes_when_the_job_finishes(lone_gateway: Gateway, target: str) -> None:
    gw = lone_gateway
    body = {"prompt": "a cat", "request_id": "req-wait"}
    child = _media(gw, target, "images/generate", body, wait_s=0).json()["child_run_id"]
    ref = {"$artifact": "img1", "content_type": "image/png"}
    timer = threading.Timer(
        0.3, _finish, (gw, child, "completed", {"ok": True, "image_artifact": ref, "image_artifacts": [ref]})
    )
    started = time.monotonic()
    timer.start()
    try:
        response = _media(gw, target, "images/generate", body, wait_s=10)
    finally:
        timer.join()
    assert response.status_code == 200, response.text
    assert response.json()["image_artifacts"] == [ref] and response.json()["supported"] is True
    assert time.monotonic() - started < 5


def test_wait_times_out_with_202(lone_gateway: Gateway, target: str) -> None:
    started = time.monotonic()
    response = _media(lone_gateway, target, "voice/tts", {"text": "nobody runs me"}, wait_s=0.3)
    assert response.status_code == 202 and response.json()["pending"] is True
    assert 0.25 < time.monotonic() - started < 5


# --- knowledge graph -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        ({"scope": "galaxy"}, 422, "$.scope"),
        ({"scope": "run"}, 400, "run_id"),
        ({"scope": "session"}, 400, "session_id"),
        ({"scope": "all", "limit": 0}, 422, "$.limit"),
        ({"scope": "all", "limit": 10_001}, 422, "$.limit"),
        ({"scope": "all", "order": "sideways"}, 422, "$.order"),
        ({"scope": "all", "min_score": 2}, 422, "$.min_score"),
        ({"scope": "run", "run_id": "no-such-run"}, 404, "Run 'no-such-run' not found"),
    ],
)  # fmt: skip
def test_bad_kg_query_is_refused(gw: Gateway, body: dict[str, Any], status: int, word: str) -> None:
    _check(gw.client.post("/api/gateway/kg/query", json=body, params={"wait_s": 0}), status, word)


def test_kg_query_is_a_job(lone_gateway: Gateway, target: str) -> None:
    gw = lone_gateway
    body = {"scope": "run", "run_id": target, "subject": "alice", "limit": 10, "request_id": "kg-1"}
    response = gw.client.post("/api/gateway/kg/query", json=body, params={"wait_s": 0})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["pending"] is True and answer["scope"] == "run"
    child = gw.run(answer["child_run_id"])
    assert child["parent_run_id"] == target and child["workflow_id"] == "kg:query"
    items = [{"subject": "alice", "predicate": "knows", "object": "bob", "observed_at": "2025-01-01T00:00:00Z",
              "confidence": 0.9}]  # fmt: skip
    _finish(gw, answer["child_run_id"], "completed", {"ok": True, "scope": "run", "count": 1, "items": items})
    done = gw.client.post("/api/gateway/kg/query", json=body, params={"wait_s": 1})
    assert done.status_code == 200, done.text
    assert done.json()["items"] == items and done.json()["count"] == 1 and done.json()["ok"] is True
    # No run: a parentless job (session / global scopes).
    unparented = gw.client.post("/api/gateway/kg/query", json={"scope": "session", "session_id": "s1"},
                                params={"wait_s": 0})  # fmt: skip
    assert unparented.status_code == 202
    assert gw.run(unparented.json()["child_run_id"])["parent_run_id"] is None


# --- discovery ---------------------------------------------------------------------------------------------
CATALOG_PATHS = ["voice/voices", "audio/speech/models", "vision/models", "audio/music/models"]


def test_discovery_without_a_runner_says_unavailable(lone_gateway: Gateway) -> None:
    caps = lone_gateway.client.get("/api/gateway/discovery/capabilities")
    assert caps.status_code == 200
    # No runner: only what the operator configured (no capability default here).
    assert caps.json()["capabilities"] == {"capability_defaults": [], "llm": None}
    assert caps.json()["runners"] == []
    assert caps.json()["available"] is False and "runner" in caps.json()["detail"]
    for path in CATALOG_PATHS:
        response = lone_gateway.client.get(f"/api/gateway/{path}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["items"] == [] and body["available"] is False and body["detail"]
    _check(lone_gateway.client.get("/api/gateway/voice/voices", params={"x": 1}), 400, "unknown query")


def test_discovery_merges_live_runners(lone_gateway: Gateway) -> None:
    db = lone_gateway.db
    register_runner(
        db,
        "media-runner-a",
        version="test",
        capabilities={
            "piper": {"installed": True, "version": "1.2"},
            "diffusers": {"installed": False, "version": None},
            "voice": {"tts_available": True, "stt_available": False, "voices": ["amy", "ryan"],
                      "speech_models": []},
            "music": {"available": False, "music_models": []},
        },
    )  # fmt: skip
    register_runner(
        db,
        "media-runner-b",
        version="test",
        capabilities={
            "diffusers": {"installed": True, "version": "0.30"},
            "voice": {"tts_available": False, "stt_available": True, "voices": ["ryan", "kim"],
                      "speech_models": [{"id": "whisper-base"}]},
            "vision": {"available": True, "vision_models": [{"id": "sd-turbo"}]},
        },
    )  # fmt: skip
    try:
        caps = lone_gateway.client.get("/api/gateway/discovery/capabilities").json()
        assert caps["available"] is True and sorted(caps["runners"]) == ["media-runner-a", "media-runner-b"]
        merged = caps["capabilities"]
        assert merged["piper"]["installed"] is True and merged["diffusers"]["installed"] is True
        assert merged["voice"]["tts_available"] is True and merged["voice"]["stt_available"] is True
        assert merged["voice"]["voices"] == ["amy", "ryan", "kim"]

        def catalog(path: str) -> dict[str, Any]:
            response = lone_gateway.client.get(f"/api/gateway/{path}")
            assert response.status_code == 200, response.text
            return response.json()

        assert catalog("voice/voices")["items"] == ["amy", "ryan", "kim"]
        assert catalog("voice/voices")["available"] is True
        assert catalog("audio/speech/models") == {
            "items": [{"id": "whisper-base"}], "available": True,
            "runners": ["media-runner-a", "media-runner-b"], "detail": None,
        }  # fmt: skip
        assert catalog("vision/models")["items"] == [{"id": "sd-turbo"}]
        assert catalog("vision/models")["available"] is True
        music = catalog("audio/music/models")
        assert music["items"] == [] and music["available"] is False and "music" in music["detail"]
    finally:
        runner_stopped(db, "media-runner-a")
        runner_stopped(db, "media-runner-b")
    assert lone_gateway.client.get("/api/gateway/discovery/capabilities").json()["runners"] == []


def test_media_routes_are_in_the_openapi_spec(lone_gateway: Gateway) -> None:
    spec = lone_gateway.client.get("/openapi.json").json()
    tts = spec["paths"]["/api/gateway/runs/{run_id}/voice/tts"]["post"]
    assert {p["name"] for p in tts["parameters"]} == {"run_id", "wait_s"}
    assert "202" in tts["description"] and "pending" in tts["description"]
    schemas = spec["components"]["schemas"]
    width = schemas["ImageGenerateRequest"]["properties"]["width"]["anyOf"][0]
    assert width["multipleOf"] == 8 and width["maximum"] == 2048
    assert "$artifact" in schemas["ArtifactInput"]["properties"]
    for path in (
        "/api/gateway/kg/query",
        "/api/gateway/discovery/capabilities",
        "/api/gateway/vision/models",
    ):
        assert spec["paths"][path]


def test_a_client_leaving_mid_wait_does_not_hurt_the_server(lone_gateway: Gateway, target: str) -> None:
    headers = dict(lone_gateway.client.headers)
    with (
        httpx.Client(base_url=lone_gateway.url, headers=headers, timeout=0.3) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post(f"/api/gateway/runs/{target}/voice/tts", json={"text": "bye"}, params={"wait_s": 3})
    assert lone_gateway.client.get("/api/gateway/discovery/capabilities").status_code == 200
