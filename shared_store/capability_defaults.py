"""Capability defaults: which provider / model serves each capability route, kept in the db.

`abstractgateway config set-default ROUTE --provider P [--model M] [--base-url U] [--option K=V]` writes
a row; every runner reads it when a run's llm_call or media job does not name its own provider, so
runners on other hosts route the same way. Route names are the original gateway's (AbstractCore's
`kind.modality[.task]` keys); only the routes this gateway executes are accepted. API-safe: no
abstractruntime, no abstractcore (the text providers are checked by the caller that can import it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import queries as q
from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import Invalid

__all__ = [
    "ALIASES",
    "JOB_ROUTES",
    "ROUTES",
    "CapabilityDefault",
    "Route",
    "UnknownRoute",
    "canonical_route",
    "check_provider",
    "clear_default",
    "default_for",
    "list_defaults",
    "set_default",
]


class UnknownRoute(Invalid):
    """A route or provider this gateway does not have; the message lists the valid ones."""


@dataclass(frozen=True)
class Route:
    used_by: str
    providers: tuple[str, ...] | None  # None: AbstractCore's text providers (checked by the caller)


ROUTES: dict[str, Route] = {
    "output.text": Route("llm_call in runs (text generation)", None),
    "output.voice": Route("POST .../voice/tts", ("piper",)),
    "input.voice": Route("POST .../audio/transcribe", ("faster-whisper",)),
    "output.image": Route("POST .../images/generate and .../images/edit", ("diffusers",)),
    "output.image.text_to_image": Route("POST .../images/generate", ("diffusers",)),
    "output.image.image_to_image": Route("POST .../images/edit", ("diffusers",)),
    "output.music": Route("POST .../music/generate", ("diffusers",)),
}
# Other spellings the original accepts for the same routes. AbstractCore stores text under input.text;
# `input.audio` / `output.audio` are how the original's console names speech in and out.
ALIASES: dict[str, str] = {
    "input.text": "output.text",
    "output.speech": "output.voice",
    "output.tts": "output.voice",
    "output.audio": "output.voice",
    "input.speech": "input.voice",
    "input.stt": "input.voice",
    "input.audio": "input.voice",
    "output.image.t2i": "output.image.text_to_image",
    "output.image.image_generation": "output.image.text_to_image",
    "output.image.i2i": "output.image.image_to_image",
    "output.image.image_edit": "output.image.image_to_image",
}
# Media job kind -> the routes that may serve it, most specific first.
JOB_ROUTES: dict[str, tuple[str, ...]] = {
    "tts": ("output.voice",),
    "transcribe": ("input.voice",),
    "image_generate": ("output.image.text_to_image", "output.image"),
    "image_edit": ("output.image.image_to_image", "output.image"),
    "music_generate": ("output.music",),
}


@dataclass(frozen=True)
class CapabilityDefault:
    route: str
    provider: str
    model: str | None = None
    base_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "options": dict(self.options),
            "updated_at": self.updated_at,
        }


def canonical_route(name: str) -> str:
    """The route key for a name as the original spells it; raises UnknownRoute listing the valid ones."""
    key = ".".join(part.strip() for part in str(name).strip().lower().replace("-", "_").split("."))
    key = ALIASES.get(key, key)
    if key not in ROUTES:
        raise UnknownRoute(
            f"unknown capability route {name!r}; routes: {', '.join(ROUTES)} "
            f"(also accepted: {', '.join(f'{a} = {r}' for a, r in ALIASES.items())})"
        )
    return key


def check_provider(route: str, provider: str, text_providers: Iterable[str] | None = None) -> str:
    """The provider name normalised; raises UnknownRoute listing the route's valid providers."""
    valid = ROUTES[route].providers
    if valid is None:
        valid = tuple(text_providers or ())
    name = provider.strip().lower()
    if valid and name not in valid:
        raise UnknownRoute(f"unknown provider {provider!r} for {route}; providers: {', '.join(valid)}")
    if not name:
        raise UnknownRoute(f"a provider is required for {route}; providers: {', '.join(valid)}")
    return name


def _row(row: tuple[Any, ...]) -> CapabilityDefault:
    options = decode(row[4]) if row[4] else {}
    return CapabilityDefault(
        row[0], row[1], row[2], row[3], options if isinstance(options, dict) else {}, row[5]
    )


def set_default(
    db: Database,
    route: str,
    *,
    provider: str,
    model: str | None = None,
    base_url: str | None = None,
    options: dict[str, Any] | None = None,
) -> CapabilityDefault:
    """Store (or replace) the default of a canonical route; committed when this returns."""
    key = canonical_route(route)
    db.execute_write(
        q.SET_CAPABILITY_DEFAULT,
        {
            "route": key,
            "provider": provider,
            "model": model or None,
            "base_url": base_url or None,
            "options": encode(dict(options or {})),
            "updated_at": utc_now_iso(),
        },
    )
    found = default_for(db, key)
    assert found is not None
    return found


def clear_default(db: Database, route: str) -> bool:
    """Remove a route's default; False when it had none."""
    return db.execute_write(q.CLEAR_CAPABILITY_DEFAULT, (canonical_route(route),)) > 0


def default_for(db: Database, *routes: str) -> CapabilityDefault | None:
    """The first of these canonical routes that has a default (most specific first), or None."""
    for route in routes:
        row = db.query_one(q.CAPABILITY_DEFAULT, (route,))
        if row is not None:
            return _row(row)
    return None


def list_defaults(db: Database) -> list[CapabilityDefault]:
    return [_row(row) for row in db.query(q.CAPABILITY_DEFAULTS)]
