"""Running the app under Hypercorn until asked to stop (the CLI and the tests share this)."""

from __future__ import annotations

import asyncio

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette


def hypercorn_config(host: str, port: int, *, graceful_timeout_s: float = 5.0) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # the audit log records writes; per-request logging costs throughput
    config.graceful_timeout = graceful_timeout_s
    config.backlog = 4096  # thousands of SSE clients may connect at once
    config.keep_alive_timeout = 75
    config.keep_alive_max_requests = 100_000  # clients polling on one connection need not reconnect
    config.include_server_header = False
    return config


async def serve_until(app: Starlette, config: Config, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; then end every SSE stream with a final comment and shut down."""
    hub = app.state.gateway.hub

    async def shutdown_trigger() -> None:
        await stop.wait()
        hub.close()  # open streams end now, so the graceful wait is short

    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
