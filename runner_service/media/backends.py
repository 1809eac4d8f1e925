"""The one interface every media backend implements, and the registry the job executor dispatches on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MediaFile:
    data: bytes
    content_type: str
    filename: str
    role: str  # the response field it answers: "audio_artifact", "image_artifacts", "music_artifact", ...


@dataclass(frozen=True)
class MediaInput:
    """An input artifact the API checked exists (the executor loads its bytes)."""

    data: bytes
    content_type: str


@dataclass
class MediaOutput:
    files: list[MediaFile] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # extra response fields, e.g. {"text": ...}


class Unsupported(Exception):
    """The modality has no usable backend here: the job answers ok=false, supported=false, code."""

    def __init__(self, code: str, error: str) -> None:
        super().__init__(error)
        self.code = code
        self.error = error


class BadMediaRequest(ValueError):
    """The request cannot be served (caught at the API where possible; here it fails the job)."""


# kind -> backend(request, inputs) -> MediaOutput. inputs: {"audio_artifact": MediaInput, ...}
Backend = Callable[[dict[str, Any], dict[str, MediaInput]], MediaOutput]
