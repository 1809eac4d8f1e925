"""The API's routes, one module per resource; each exports `routes`, a list of ApiRoute."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from shared_store.db import Database

from ..quotas import StreamQuotas
from ..settings import ApiSettings
from ..sse import SseHub


@dataclass(frozen=True)
class Gateway:
    """What handlers use: the store, the SSE hub, the settings."""

    db: Database
    hub: SseHub
    settings: ApiSettings
    artifacts_dir: Path
    streams: StreamQuotas = field(default_factory=lambda: StreamQuotas(1_000, 2_000))
    token_secret: bytes | None = None
    # GET /api/health's last report, reused briefly on the event loop (routes/health.py).
    health_last: list[Any] = field(default_factory=list)


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway
