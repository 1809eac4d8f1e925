"""Media on a run: TTS, transcription, images, video, music. Each request is a durable job.

A valid request commits a queued child run of `run_id` (workflow `media:<kind>`) that a runner executes;
its results are artifacts of the parent run. The request then waits up to `?wait_s=` (default 60) for
the job: finished → 200 with the job's output, still running → 202 `{"pending": true, "child_run_id"}`
and the client follows the child on its ledger / SSE. Everything is checked before the job is stored:
a refused request (4xx) writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from shared_store.db import Database
from shared_store.media_jobs import JobState, UnknownArtifact, artifact_ref, enqueue_media_job, job_state
from shared_store.reads import ledger_len

from ..access import RUN
from ..errors import ApiError, not_found_run, status_of
from ..http import ApiRoute, blocking, json_response, reading
from ..media_schemas import (
    ArtifactInput,
    ImageEditRequest,
    ImageGenerateRequest,
    JobPending,
    MediaResponse,
    MediaWaitQuery,
    MusicGenerateRequest,
    TranscribeRequest,
    TtsRequest,
    VideoFromImageRequest,
    VideoGenerateRequest,
)
from ..request_context import current_request_id
from . import gateway

POLL_MIN_S = 0.02
POLL_MAX_S = 0.05
DISCONNECT_CHECK_S = 1.0


# --- shared with the kg route --------------------------------------------------------------------------
def request_dict(body: msgspec.Struct) -> dict[str, Any]:
    """The validated body as the job's request: known fields only, unset ones left out, no request_id
    (it is the job's idempotency key, stored beside the request)."""
    data = msgspec.to_builtins(body)
    return {k: v for k, v in data.items() if v is not None and k != "request_id"}


async def submit_job(
    request: Request,
    *,
    kind: str,
    job_request: dict[str, Any],
    parent_run_id: str | None,
    request_id: str | None,
    wait_s: float,
) -> tuple[str, JobState | None]:
    """Commit the job (idempotent by request_id) and wait up to wait_s for it to finish.

    Returns the child run id and its state (None or unfinished: still pending)."""
    db = gateway(request).db
    started = await blocking(  # an unknown parent: UnknownRun, a 404 by the errors table
        enqueue_media_job,
        db,
        kind=kind,
        request=job_request,
        parent_run_id=parent_run_id,
        request_id=request_id,
        http_request_id=current_request_id(),
        requires=gateway(request).settings.media_requires.get(kind),
    )
    request.state.audit = {"run_id": started.run_id, "parent_run_id": parent_run_id, "kind": kind}
    return started.run_id, await wait_for_job(request, db, started.run_id, wait_s)


async def wait_for_job(request: Request, db: Database, run_id: str, wait_s: float) -> JobState | None:
    """Poll the job's row (one indexed read) every 20-50 ms until it is terminal, wait_s passes, or the
    client goes away."""
    state = await reading(job_state, db, run_id)
    deadline = time.monotonic() + min(wait_s, gateway(request).settings.max_wait_s)
    delay = POLL_MIN_S
    next_disconnect_check = time.monotonic() + DISCONNECT_CHECK_S
    while (state is None or not state.finished) and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.25, POLL_MAX_S)
        state = await reading(job_state, db, run_id)
        if time.monotonic() >= next_disconnect_check:
            next_disconnect_check = time.monotonic() + DISCONNECT_CHECK_S
            if await request.is_disconnected():
                break
    return state


def job_result(state: JobState | None, ids: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The answer and its status: 200 with the finished job's output merged with `ids`, or 202 pending."""
    if state is None or not state.finished:
        return {"ok": True, "pending": True, **ids}, 202
    output = dict(state.output or {})
    if state.status == "completed":
        answer: dict[str, Any] = {**output, **ids}
        answer["ok"] = bool(output.get("ok", True))
        answer["supported"] = output.get("supported") is not False
        if not answer["ok"]:
            answer.setdefault("error", state.error or "the job reported a failure")
        return answer, 200
    # failed / cancelled: the job is durable and inspectable through child_run_id
    answer = {**output, **ids, "ok": False, "status": state.status}
    answer["supported"] = output.get("supported") is not False
    answer["code"] = output.get("code") or f"job_{state.status}"
    answer["error"] = output.get("error") or state.error or f"the job was {state.status}"
    return answer, 200


# --- media ---------------------------------------------------------------------------------------------
def _require_text(value: str | None, name: str) -> None:
    if value is None or not value.strip():
        raise ApiError(400, f"{name} must not be empty")


def _check_artifact(db: Database, ref: ArtifactInput | None, field: str, family: str) -> None:
    """The input artifact exists (404 otherwise, as the original answers) and its content type is
    `family`/* (400 otherwise)."""
    if ref is None:
        return
    try:
        found = artifact_ref(db, ref.artifact_id)
    except UnknownArtifact as exc:  # the table's status, a detail naming the field
        raise ApiError(status_of(exc), f"{field}: artifact '{ref.artifact_id}' not found") from None
    content_type = (found.content_type or "").split(";", 1)[0].strip().lower()
    if not content_type.startswith(f"{family}/"):
        raise ApiError(
            400, f"{field}: artifact '{ref.artifact_id}' is {content_type or 'untyped'}, expected {family}/*"
        )


async def _media(
    request: Request,
    kind: str,
    body: msgspec.Struct,
    query: MediaWaitQuery,
    artifacts: tuple[tuple[str, str], ...] = (),
) -> Response:
    run_id = request.path_params["run_id"]
    db = gateway(request).db
    if await reading(ledger_len, db, run_id) is None:
        raise not_found_run(run_id)
    for field, family in artifacts:
        await reading(_check_artifact, db, getattr(body, field), field, family)
    request_id = getattr(body, "request_id", None)
    child, state = await submit_job(
        request,
        kind=kind,
        job_request=request_dict(body),
        parent_run_id=run_id,
        request_id=request_id,
        wait_s=query.wait_s,
    )
    answer, status = job_result(state, {"run_id": run_id, "request_id": request_id, "child_run_id": child})
    return json_response(answer, status)


_ANSWERS = """

Answers 200 once the job finished within `wait_s` (default 60 s, 0..300): the job's output with
`run_id`, `request_id`, `child_run_id`; `ok: false` with `code`/`error` when the modality has no backend
(`supported: false`, code `<modality>_unavailable`) or the job failed (its child run stays inspectable).
Answers **202** `{"ok": true, "pending": true, "child_run_id", "run_id", "request_id"}` when the job has
not finished in time: follow the child run (GET /runs/{child_run_id}, its ledger or SSE stream).
The same `request_id` again answers the same child run (409 if reused for a different request).
Unknown run: 404. Artifact refs are `{"$artifact": id}`: an unknown id or a wrong content type is 400."""


async def voice_tts(request: Request, body: TtsRequest, query: MediaWaitQuery) -> Response:
    """Text to speech → `audio_artifact` (an artifact of the run). Empty text: 400."""
    _require_text(body.text, "text")
    return await _media(request, "tts", body, query)


async def audio_transcribe(request: Request, body: TranscribeRequest, query: MediaWaitQuery) -> Response:
    """Speech to text: `audio_artifact` (audio/*) → `text` and `transcript_artifact`."""
    return await _media(request, "transcribe", body, query, (("audio_artifact", "audio"),))


async def images_generate(request: Request, body: ImageGenerateRequest, query: MediaWaitQuery) -> Response:
    """Text to image → `image_artifact` (the first) and `image_artifacts` (all `count`). Empty prompt:
    400; width/height must be multiples of 8 in 8..2048, steps ≤ 200, count ≤ 8 (422 otherwise)."""
    _require_text(body.prompt, "prompt")
    return await _media(request, "image_generate", body, query)


async def images_edit(request: Request, body: ImageEditRequest, query: MediaWaitQuery) -> Response:
    """Image to image: the source `image_artifact` (image/*), optional `mask_artifact` (image/*) and
    `strength` (0..1] → `image_artifact` / `image_artifacts`. Empty prompt: 400."""
    _require_text(body.prompt, "prompt")
    artifacts = (("image_artifact", "image"), ("mask_artifact", "image"))
    return await _media(request, "image_edit", body, query, artifacts)


async def videos_generate(request: Request, body: VideoGenerateRequest, query: MediaWaitQuery) -> Response:
    """Text to video → `video_artifact` / `video_artifacts`. Empty prompt: 400; duration_s ≤ 60."""
    _require_text(body.prompt, "prompt")
    return await _media(request, "video_generate", body, query)


async def videos_from_image(request: Request, body: VideoFromImageRequest, query: MediaWaitQuery) -> Response:
    """Image to video: `image_artifact` (image/*, the first frame), optional prompt →
    `video_artifact` / `video_artifacts`."""
    return await _media(request, "video_from_image", body, query, (("image_artifact", "image"),))


async def music_generate(request: Request, body: MusicGenerateRequest, query: MediaWaitQuery) -> Response:
    """Text to music → `music_artifact`. Empty prompt: 400; duration_s in (0, 300]."""
    _require_text(body.prompt, "prompt")
    return await _media(request, "music_generate", body, query)


for _handler in (
    voice_tts,
    audio_transcribe,
    images_generate,
    images_edit,
    videos_generate,
    videos_from_image,
    music_generate,
):
    _handler.__doc__ = (_handler.__doc__ or "") + _ANSWERS


def _route(path: str, handler: Any, summary: str, body: type, tag: str) -> ApiRoute:
    return ApiRoute(
        f"/api/gateway/runs/{{run_id}}/{path}",
        handler,
        methods=["POST"],
        summary=summary,
        tags=["media", tag],
        body=body,
        query=MediaWaitQuery,
        response=MediaResponse,
        accepted=JobPending,
        errors=(400, 404, 409, 413, 422),
        needs=RUN,
    )


routes = [
    _route("voice/tts", voice_tts, "Text to speech", TtsRequest, "voice"),
    _route("audio/transcribe", audio_transcribe, "Transcribe audio", TranscribeRequest, "voice"),
    _route("images/generate", images_generate, "Generate images", ImageGenerateRequest, "vision"),
    _route("images/edit", images_edit, "Edit an image", ImageEditRequest, "vision"),
    _route("videos/generate", videos_generate, "Generate a video", VideoGenerateRequest, "video"),
    _route("videos/from_image", videos_from_image, "Animate an image", VideoFromImageRequest, "video"),
    _route("music/generate", music_generate, "Generate music", MusicGenerateRequest, "music"),
]
