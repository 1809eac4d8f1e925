"""msgspec Structs of the media, discovery and knowledge-graph routes (bodies, queries, responses).

The request bodies are the shared rules of shared_store.contracts.media, which the runner applies to
the stored job request too: an absurd value (a width that is not a multiple of 8, 500 steps, 20
images) is a 422 naming the field and the bound before anything is stored, OpenAPI shows the same
bounds, and what the API accepts the runner accepts. Only a body's declared fields reach the job.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from shared_store.contracts.media import (
    ArtifactInput,
    ImageEditRequest,
    ImageGenerateRequest,
    KgQueryRequest,
    MusicGenerateRequest,
    TranscribeRequest,
    TtsRequest,
    VideoFromImageRequest,
    VideoGenerateRequest,
)

WaitS = Annotated[float, Meta(ge=0, le=300)]


class MediaWaitQuery(Struct, forbid_unknown_fields=True):
    wait_s: WaitS = 60.0  # how long the request waits for the job before answering 202 (pending)


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


__all__ = [
    "ArtifactInput",
    "ImageEditRequest",
    "ImageGenerateRequest",
    "KgQueryRequest",
    "MusicGenerateRequest",
    "TranscribeRequest",
    "TtsRequest",
    "VideoFromImageRequest",
    "VideoGenerateRequest",
]
