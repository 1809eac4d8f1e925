"""msgspec Structs of the media, discovery and knowledge-graph routes (bodies, queries, responses).

Bounds live here as msgspec `Meta`, so an absurd value (a width that is not a multiple of 8, 500 steps,
20 images) is a 422 naming the field before anything is stored, and OpenAPI shows the same bounds.
Bodies ignore unknown fields (thin clients may send more than this server uses); only the fields
below reach the job's request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Id = Annotated[str, Meta(min_length=1, max_length=256)]
Name = Annotated[str, Meta(max_length=256)]  # provider, model, voice names
Text = Annotated[str, Meta(max_length=100_000)]  # TTS text
Prompt = Annotated[str, Meta(max_length=10_000)]
Dimension = Annotated[int, Meta(ge=64, le=2048, multiple_of=8)]
Steps = Annotated[int, Meta(ge=1, le=200)]
Count = Annotated[int, Meta(ge=1, le=8)]
Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Guidance = Annotated[float, Meta(ge=0, le=50)]
Strength = Annotated[float, Meta(gt=0, le=1)]
Speed = Annotated[float, Meta(ge=0.25, le=4.0)]
MusicDuration = Annotated[float, Meta(gt=0, le=300)]
VideoDuration = Annotated[float, Meta(gt=0, le=60)]
Fps = Annotated[int, Meta(ge=1, le=60)]
Frames = Annotated[int, Meta(ge=1, le=1_000)]
Language = Annotated[str, Meta(max_length=32)]
WaitS = Annotated[float, Meta(ge=0, le=300)]


class ArtifactInput(Struct):
    """An input artifact: `{"$artifact": id}` (other keys of a ref returned earlier are ignored)."""

    artifact_id: Id = msgspec.field(name="$artifact")


class MediaWaitQuery(Struct, forbid_unknown_fields=True):
    wait_s: WaitS = 60.0  # how long the request waits for the job before answering 202 (pending)


# --- media requests -----------------------------------------------------------------------------------
class TtsRequest(Struct):
    text: Text
    provider: Name | None = None
    voice: Name | None = None
    model: Name | None = None
    format: Literal["wav", "mp3"] = "wav"
    speed: Speed | None = None
    request_id: Id | None = None


class TranscribeRequest(Struct):
    audio_artifact: ArtifactInput
    language: Language | None = None
    provider: Name | None = None
    model: Name | None = None
    prompt: Prompt | None = None
    request_id: Id | None = None


class _ImageOptions(Struct, kw_only=True):
    """What image generation and editing share."""

    image_provider: Name | None = None
    image_model: Name | None = None
    width: Dimension | None = None
    height: Dimension | None = None
    steps: Steps | None = None
    seed: Seed | None = None
    count: Count | None = None
    negative_prompt: Prompt | None = None
    guidance_scale: Guidance | None = None
    format: Literal["png", "jpeg", "webp"] = "png"
    request_id: Id | None = None


class ImageGenerateRequest(_ImageOptions, kw_only=True):
    prompt: Prompt


class ImageEditRequest(_ImageOptions, kw_only=True):
    prompt: Prompt
    image_artifact: ArtifactInput  # the source image
    mask_artifact: ArtifactInput | None = None
    strength: Strength | None = None


class _VideoOptions(Struct, kw_only=True):
    """What both video routes share."""

    video_provider: Name | None = None
    video_model: Name | None = None
    width: Dimension | None = None
    height: Dimension | None = None
    steps: Steps | None = None
    seed: Seed | None = None
    negative_prompt: Prompt | None = None
    guidance_scale: Guidance | None = None
    duration_s: VideoDuration | None = None
    fps: Fps | None = None
    num_frames: Frames | None = None
    format: Literal["mp4", "gif"] = "mp4"
    request_id: Id | None = None


class VideoGenerateRequest(_VideoOptions, kw_only=True):
    prompt: Prompt


class VideoFromImageRequest(_VideoOptions, kw_only=True):
    image_artifact: ArtifactInput  # the first frame
    prompt: Prompt | None = None  # optional: image-to-video models may take none


class MusicGenerateRequest(Struct):
    prompt: Prompt
    music_provider: Name | None = None
    music_model: Name | None = None
    duration_s: MusicDuration | None = None
    steps: Steps | None = None
    seed: Seed | None = None
    negative_prompt: Prompt | None = None
    guidance_scale: Guidance | None = None
    format: Literal["wav", "mp3"] = "wav"
    request_id: Id | None = None


# --- media responses ----------------------------------------------------------------------------------
class ArtifactOut(Struct):
    artifact_id: str = msgspec.field(name="$artifact")
    content_type: str | None = None
    filename: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None


class JobPending(Struct):
    """202: the job is durable but not finished within wait_s; follow child_run_id on the ledger / SSE."""

    ok: bool
    pending: bool
    child_run_id: str
    run_id: str | None = None
    request_id: str | None = None


class MediaResponse(Struct, omit_defaults=True):
    """200: the finished job's output (plus run_id, request_id, child_run_id); `ok: false` with `code`
    and `error` when the modality is unsupported or the job failed. 202: `pending: true` with
    child_run_id (follow it on the ledger / SSE). Only the fields of the route's kind appear."""

    ok: bool
    run_id: str
    child_run_id: str
    request_id: str | None = None
    supported: bool = True
    pending: bool = False
    code: str | None = None
    error: str | None = None
    text: str | None = None
    audio_artifact: ArtifactOut | None = None
    transcript_artifact: ArtifactOut | None = None
    image_artifact: ArtifactOut | None = None
    image_artifacts: list[ArtifactOut] = []
    video_artifact: ArtifactOut | None = None
    video_artifacts: list[ArtifactOut] = []
    music_artifact: ArtifactOut | None = None
    status: str | None = None  # the job run's status when it did not complete


# --- discovery ----------------------------------------------------------------------------------------
class CapabilitiesResponse(Struct):
    capabilities: dict[str, Any]  # merged over live runners: a modality is available if any runner has it
    runners: list[str]
    available: bool
    detail: str | None = None


class CatalogResponse(Struct):
    items: list[Any]
    available: bool
    runners: list[str]
    detail: str | None = None


# --- knowledge graph ----------------------------------------------------------------------------------
class KgQueryRequest(Struct):
    scope: Literal["run", "session", "global", "all"] = "all"
    run_id: Id | None = None  # needed for scope=run; the query job becomes a child of this run
    session_id: Id | None = None  # needed for scope=session
    subject: Prompt | None = None
    predicate: Prompt | None = None
    object: Prompt | None = None
    query_text: Prompt | None = None  # semantic search (the runner's embedder)
    min_score: Annotated[float, Meta(ge=-1.0, le=1.0)] | None = None
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 500
    order: Literal["asc", "desc"] = "desc"
    request_id: Id | None = None


class KgTriple(Struct):
    subject: str
    predicate: str
    object: str
    observed_at: str | None = None
    confidence: float | None = None


class KgQueryResponse(Struct, omit_defaults=True):
    ok: bool
    scope: str
    count: int = 0
    items: list[KgTriple] = []
    child_run_id: str | None = None
    run_id: str | None = None
    request_id: str | None = None
    pending: bool = False
    supported: bool = True
    code: str | None = None
    error: str | None = None
