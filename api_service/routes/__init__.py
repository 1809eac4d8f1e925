"""The API's routes, one module per resource; each exports `routes`, a list of ApiRoute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from shared_store.db import Database

from ..settings import ApiSettings
from ..sse import SseHub


@dataclass(frozen=True)
class Gateway:
    """What handlers use: the store, the SSE hub, the settings."""

    db: Database
    hub: SseHub
    settings: ApiSettings
    artifacts_dir: Path


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway
