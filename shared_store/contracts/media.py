"""The media and knowledge-graph job requests: one declaration for the API and the runners.

The API decodes a request body with these Structs (a value out of bounds is a 422 naming the field and
the bound, before anything is stored; OpenAPI shows the same bounds) and stores the validated fields as
the job's request. A runner converts the stored request, after its capability default filled it in,
with the same Struct before doing any work. Nothing else declares a bound: the backends read the
checked values.

Each bound is what a runner can really do (measured on this repository's runner where a number is
given). Bodies ignore unknown fields (thin clients may send more than this server uses).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Id = Annotated[str, Meta(min_length=1, max_length=256)]
Name = Annotated[str, Meta(max_length=256)]  # provider, model, voice names

# TTS text. The runner synthesises the whole text in one piper call, under the voice's lock, into one
# WAV held in memory. Measured with the packaged voice on a shared 2-core box: 4,000 characters took
# 75 s, made 217 s of speech (18 characters a second) and a 9.6 MB WAV, and grew the process by about
# 100 MB. 20,000 characters is then ~6 minutes of one runner thread, ~18 minutes of audio, ~48 MB;
# the API used to accept 100,000 (~30 minutes of work, a 240 MB artifact) which the runner refused:
# a 2xx request that became a failed job. The runner's 20,000 is the rule.
MAX_TTS_CHARS = 20_000
Text = Annotated[str, Meta(max_length=MAX_TTS_CHARS)]
MAX_PROMPT = 10_000  # both sides agreed already; it bounds the stored job row
Prompt = Annotated[str, Meta(max_length=MAX_PROMPT)]

# Image and video sides. Diffusers' VAEs downsample by 8, so a side is a multiple of 8 and 8 is the
# smallest with a latent; the runner's tests generate 32x32 images with the tiny pipeline they build.
# The API used to refuse below 64 while the runner took 8: 8 is the rule now. 2048: both sides agreed
# already; the runner also refuses input images over 4 x 2048^2 pixels before decoding them
# (vision.MAX_INPUT_PIXELS).
MIN_SIDE, MAX_SIDE = 8, 2048
Dimension = Annotated[int, Meta(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)]
MAX_STEPS = 200
Steps = Annotated[int, Meta(ge=1, le=MAX_STEPS)]
MAX_COUNT = 8  # images per request: each is a pipeline call held under the backend's one lock
Count = Annotated[int, Meta(ge=1, le=MAX_COUNT)]
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
Seed = Annotated[int, Meta(ge=0, le=MAX_SEED)]
MAX_GUIDANCE = 50.0
Guidance = Annotated[float, Meta(ge=0, le=MAX_GUIDANCE)]
Strength = Annotated[float, Meta(gt=0, le=1)]
Speed = Annotated[float, Meta(ge=0.25, le=4.0)]  # piper's length_scale = 1/speed: 4x to 1/4
# Music: the runner refused below 0.1 s while the API took any positive duration (a 2xx request that
# became a failed job): the runner's 0.1 s is the rule.
MIN_MUSIC_S, MAX_MUSIC_S = 0.1, 300.0
MusicDuration = Annotated[float, Meta(ge=MIN_MUSIC_S, le=MAX_MUSIC_S)]
MAX_VIDEO_S = 60.0
VideoDuration = Annotated[float, Meta(gt=0, le=MAX_VIDEO_S)]
MAX_FPS = 60
Fps = Annotated[int, Meta(ge=1, le=MAX_FPS)]
MAX_FRAMES = 1_000
Frames = Annotated[int, Meta(ge=1, le=MAX_FRAMES)]
Language = Annotated[str, Meta(max_length=32)]
MAX_KG_LIMIT = 10_000
TTS_FORMATS = ("wav", "mp3")
IMAGE_FORMATS = ("png", "jpeg", "webp")
VIDEO_FORMATS = ("mp4", "gif")


class ArtifactInput(Struct):
    """An input artifact: `{"$artifact": id}` (other keys of a ref returned earlier are ignored)."""

    artifact_id: Id = msgspec.field(name="$artifact")


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
    # wav only: the runner has no mp3 encoder for music (the API used to accept mp3, a job that failed)
    format: Literal["wav"] = "wav"
    request_id: Id | None = None


class KgQueryRequest(Struct):
    scope: Literal["run", "session", "global", "all"] = "all"
    run_id: Id | None = None  # needed for scope=run; the query job becomes a child of this run
    session_id: Id | None = None  # needed for scope=session
    subject: Prompt | None = None
    predicate: Prompt | None = None
    object: Prompt | None = None
    query_text: Prompt | None = None  # semantic search (the runner's embedder)
    min_score: Annotated[float, Meta(ge=-1.0, le=1.0)] | None = None  # cosine similarity
    limit: Annotated[int, Meta(ge=1, le=MAX_KG_LIMIT)] = 500
    order: Literal["asc", "desc"] = "desc"
    request_id: Id | None = None


# job kind (media_jobs.kind, the runner's backend key) -> the request it runs
MEDIA_REQUESTS: dict[str, type[Struct]] = {
    "tts": TtsRequest,
    "transcribe": TranscribeRequest,
    "image_generate": ImageGenerateRequest,
    "image_edit": ImageEditRequest,
    "video_generate": VideoGenerateRequest,
    "video_from_image": VideoFromImageRequest,
    "music_generate": MusicGenerateRequest,
    "kg_query": KgQueryRequest,
}
