"""A media job follows its route's capability default (`config set-default output.voice ...`) where
its request names no provider or model of its own.

The default's provider fills the request's provider field, its options fill request fields the client
left out, and its model takes the place of the env setting (ABSTRACTGATEWAY_TTS_MODEL, ...) for this
job: clients still only name catalog models, the operator's default names files and dirs.
"""

from __future__ import annotations

from typing import Any

from shared_store import Database
from shared_store.capability_defaults import JOB_ROUTES, CapabilityDefault, default_for

from .checks import checked

# kind -> (the request's provider field, the MediaSettings field the default's model replaces)
FIELDS: dict[str, tuple[str, str]] = {
    "tts": ("provider", "tts_model"),
    "transcribe": ("provider", "stt_model"),
    "image_generate": ("image_provider", "image_model"),
    "image_edit": ("image_provider", "image_model"),
    "music_generate": ("music_provider", "music_model"),
}


def apply_default(
    db: Database, kind: str, request: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], CapabilityDefault | None]:
    """(request with the default filled in, the settings its model replaces, the default used).

    The request the backend will run is then checked against the shared request rule (the Struct the
    API validated the request with): BadMediaRequest names the field and the bound, before any work."""
    merged, models, default = _with_default(db, kind, request)
    checked(kind, merged)
    return merged, models, default


def _with_default(
    db: Database, kind: str, request: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], CapabilityDefault | None]:
    routes = JOB_ROUTES.get(kind)
    default = default_for(db, *routes) if routes else None
    if default is None:
        return request, {}, None
    provider_field, setting = FIELDS[kind]
    given = {key: value for key, value in request.items() if value is not None}
    if provider_field in given and str(given[provider_field]).strip().lower() != default.provider:
        return request, {}, None  # the request names another provider: the default is not its business
    merged = {**default.options, **given, provider_field: given.get(provider_field, default.provider)}
    return merged, ({setting: default.model} if default.model else {}), default
